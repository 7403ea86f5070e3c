"""Layer names of keras.applications models for an archspec network.

The Keras backend names a layer after its IR weight path with "." replaced by
"_" (`stages.1.0.depthwise.conv` -> `stages_1_0_depthwise_conv`).
`layer_names` pairs those names with keras.applications' own, so weights move
between keras.applications and a generated model layer by layer::

    for ours, theirs in layer_names(network, "resnet").items():
        model.get_layer(ours).set_weights(their_weights(app, theirs))

A name stands for all the arrays of that layer. Where one keras.applications
layer holds the weights of two of ours (NASNet's SeparableConv2D: the
depthwise kernel, then the pointwise one), the name is an `Array`: array
`index` of that layer's weights, all there is of our layer's. `their_weights`
reads either.

The mapping is built from what each weight tensor is, never from its path:
the top-level layer's part (`stem.conv`, `classifier`), or a block's kind and
the part inside it (`("bottleneck", "shortcut.bn")`), plus the block's stage
and position. A scheme is one family of keras.applications models; a spec
names its scheme under `references: {keras.applications: ...}`.

- "efficientnet" (`keras/src/applications/efficientnet.py`, B0-B7):
  `stem_conv`, `stem_bn`, `block{s}{b}_{part}` (s: 1-based stage, b: the
  block's letter within its stage, "a" first), `top_conv`, `top_bn`,
  `predictions`. Its Normalization layer is left out: it is auto-named
  ("normalization", "normalization_1", ...) and its statistics are constants
  in the generated module.
- "efficientnet_v2" (`keras/src/applications/efficientnet_v2.py`, B0-B3,
  S/M/L): as "efficientnet", with `dwconv2` for the depthwise convolution and
  the fused blocks' `expand_{conv,bn}` (kxk) and `project_{conv,bn}`.
- "resnet" (`keras/src/applications/resnet.py`, ResNet50/101/152, v1):
  `conv1_conv`, `conv1_bn`, `conv{S+2}_block{B+1}_{1,2,3}_{conv,bn}` (S, B:
  0-based stage and block), the projection shortcut `..._0_{conv,bn}`, and
  `predictions`.
- "resnet_v2" (`keras/src/applications/resnet_v2.py`, ResNet50V2/101V2/152V2,
  pre-activation): the stem convolution alone `conv1_conv`, then per block
  (named as "resnet"'s) `preact_bn`, `1_conv`, `1_bn`, `2_conv`, `2_bn`, the
  bare `3_conv` and projection `0_conv` (first block of a stack), and
  `post_bn`, `predictions`. The strided 1x1 max pools of the shortcuts have no
  weights (and automatic names).
- "densenet" (`keras/src/applications/densenet.py`, DenseNet121/169/201):
  `conv1_conv`, `conv1_bn`, the dense layers `conv{b+1}_block{i}_{0_bn,
  1_conv,1_bn,2_conv}` (b: the dense block, i: the layer, from 1), the
  transitions `pool{t+1}_{bn,conv}`, the final `bn` and `predictions`.
- "mobilenet_v2" (`keras/src/applications/mobilenet_v2.py`, any alpha):
  `Conv1`, `bn_Conv1`, the first block `expanded_conv_{depthwise,project}`
  (+ `_BN`), then `block_{i}_{expand,depthwise,project}` (+ `_BN`; i counts
  the blocks of the whole network from 1), `Conv_1`, `Conv_1_bn`,
  `predictions`.
- "mobilenet_v1" (`keras/src/applications/mobilenet.py`, any alpha and
  depth multiplier): `conv1`, `conv1_bn`, `conv_dw_{i}`, `conv_pw_{i}` (+
  `_bn`; i counts the blocks from 1), and the 1x1 classifier `conv_preds`.
- "nasnet" (`keras/src/applications/nasnet.py`, NASNetMobile and
  NASNetLarge): `stem_conv1`, `stem_bn1`, then per cell, named by its id
  (`stem_1`, `stem_2`, the normal cells' numbers 0..N-1, `reduce_N`,
  N+1..2N, `reduce_2N`, 2N+1..3N): `{normal,reduction}_conv_1_{id}` /
  `_bn_1_{id}` (our `hidden`), `adjust_conv_projection_{id}` /
  `adjust_bn_{id}` (`prev_projected`), `adjust_conv_1_{id}`,
  `adjust_conv_2_{id}` / `adjust_bn_{id}` (`prev_reduced`), and each
  separable branch's `separable_conv_{1,2}_{branch}_{id}` (an `Array`:
  [depthwise kernel, pointwise kernel] = our `depthwise{1,2}` and
  `pointwise{1,2}.conv`) and `separable_conv_{1,2}_bn_{branch}_{id}`. The
  branches: normal comb0/comb1 left and right -> `normal_{left,right}{1,2}`,
  comb4_left -> `normal_left5`; reduction comb0_left -> `reduction_left1`,
  comb0_right, comb1_right, comb2_right -> `reduction_right{1,2,3}`,
  comb4_left -> `reduction_left4`. Classifier `predictions`. The model is
  built at the network's resolution: with no static input size Keras builds
  no factorized reductions.
- "mobilenet_v3" (`keras/src/applications/mobilenet_v3.py`, Large and Small,
  any alpha, minimalistic or not): `conv`, `conv_bn`, the first block
  `expanded_conv_{depthwise,project}` (+ `_bn`), then
  `expanded_conv_{i}_{expand,depthwise,project}` (+ `_bn`) and
  `..._squeeze_excite_conv` / `_conv_1`, `conv_1`, `conv_1_bn`, and the 1x1
  convolutions after pooling `conv_2` and `logits`.

`read_weights` reads a keras.applications weight file into {our layer name:
[arrays]}: a Keras 3 one (`app.save_weights("x.weights.h5")`) or a legacy
HDF5 one, as `keras.applications.X(weights="imagenet")` downloads
(`mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5`,
`efficientnetb0.h5`), told apart by content. Keras stores a model's weights by
position, not by layer name (a legacy file: its layers with weights, in
order), so it builds the keras.applications model the network matches (found
by its stage depths and feature width) to read the file. Only `read_weights`
imports keras, when called.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import ir
from ..errors import SpecError
from ..weights import keras_name


def efficientnet_block(stage: int, index: int, position: int = 0) -> str:
    """keras.applications EfficientNet's prefix of block `index` (0-based) of
    `stage` (0-based): `block1a`, `block4j`."""
    if index >= 26:
        raise SpecError(
            f"keras.applications names blocks a-z; stage {stage} has {index + 1}"
        )
    return f"block{stage + 1}{chr(ord('a') + index)}"


def resnet_block(stage: int, index: int, position: int = 0) -> str:
    """keras.applications ResNet's prefix: its stacks conv2 ... conv5 follow
    the stem's conv1, and blocks count from 1: `conv2_block1`."""
    return f"conv{stage + 2}_block{index + 1}"


def mobilenet_v2_block(stage: int, index: int, position: int) -> str:
    """keras.applications MobileNetV2's prefix of the network's block
    `position` (0-based): `expanded_conv`, then `block_1`, `block_2`, ..."""
    return "expanded_conv" if position == 0 else f"block_{position}"


def mobilenet_v1_block(stage: int, index: int, position: int) -> str:
    """keras.applications MobileNet numbers its blocks from 1 (`conv_dw_1`)."""
    return str(position + 1)


def mobilenet_v1_model(network: ir.Network) -> tuple[str, dict]:
    multipliers = {getattr(b, "multiplier", 1) for b in network.blocks}
    if len(multipliers) != 1:
        raise SpecError(
            f"{network.title}: keras.applications' MobileNet has one depth "
            f"multiplier for every block; found {sorted(multipliers)}"
        )
    return "MobileNet", {
        "alpha": network.source.width,
        "depth_multiplier": multipliers.pop(),
        "dropout": network.dropout,
    }


def mobilenet_v3_block(stage: int, index: int, position: int) -> str:
    """keras.applications MobileNetV3's prefix of the network's block
    `position` (0-based): `expanded_conv`, then `expanded_conv_1`, ..."""
    return "expanded_conv" if position == 0 else f"expanded_conv_{position}"


def mobilenet_v3_model(network: ir.Network) -> tuple[str, dict]:
    """MobileNetV3Large (15 blocks) or MobileNetV3Small (11), with alpha, and
    minimalistic when no block has SE or a kernel other than 3."""
    sizes = {15: "MobileNetV3Large", 11: "MobileNetV3Small"}
    blocks = network.blocks
    if len(blocks) not in sizes:
        raise SpecError(
            f"{network.title}: keras.applications' MobileNetV3 has 15 blocks "
            f"(Large) or 11 (Small); found {len(blocks)}"
        )
    minimalistic = all(
        b.kind == "mbconv" and not b.squeeze_channels and b.kernel == 3 for b in blocks
    )
    return sizes[len(blocks)], {
        "alpha": network.source.width,
        "minimalistic": minimalistic,
    }


def nasnet_block(stage: int, index: int, position: int) -> str:
    """keras.applications NASNet's cell id: `stem_1`, `stem_2`, the normal
    cells 0..N-1, `reduce_N`, N+1..2N, `reduce_2N` (the number of the cell
    before it again), 2N+1..3N: the cells after the stem cells counted from
    0, one fewer after the second reduction."""
    if stage < 2:
        return f"stem_{stage + 1}"
    number = position - 2 - (stage >= 5)
    return f"reduce_{number}" if stage % 2 else str(number)


def nasnet_model(network: ir.Network) -> tuple[str, dict]:
    """NASNetMobile (4 normal cells a stage, 1056 features) or NASNetLarge (6,
    4032), built at the network's resolution (13.3 of REFERENCE-FAMILIES:
    with no static size Keras drops the factorized reductions)."""
    kinds = [stage.blocks[0].kind for stage in network.stages]
    expected = [
        "reduction_cell",
        "reduction_cell",
        *["normal_cell", "reduction_cell"] * 2,
    ]
    if kinds[:-1] != expected or kinds[-1:] != ["normal_cell"]:
        raise SpecError(
            f"{network.title}: keras.applications' NASNet has stages of reduction, "
            f"reduction, normal, reduction, normal, reduction and normal cells; "
            f"found {', '.join(kinds)}"
        )
    name, _ = by_depths(
        "nasnet",
        {
            ((1, 1, 4, 1, 4, 1, 4), 1056): "NASNetMobile",
            ((1, 1, 6, 1, 6, 1, 6), 4032): "NASNetLarge",
        },
    )(network)
    size = network.input.resolution
    return name, {"input_shape": (size, size, network.input.channels)}


def densenet_block(stage: int, index: int, position: int = 0) -> str:
    """keras.applications DenseNet's prefix: dense blocks (even stages) and
    transitions (odd stages) alternate, numbered after the stem's conv1 /
    pool1: `conv2_block1`, ..., `pool2`, `conv3_block1`, ..."""
    number = stage // 2 + 2
    return f"conv{number}_block{index + 1}" if stage % 2 == 0 else f"pool{number}"


@dataclass(frozen=True)
class Array:
    """Array `index` of the weights of keras.applications layer `layer`: all
    the weights of one of our layers, where their layer holds two of ours."""

    layer: str
    index: int


# A keras.applications layer: all its arrays (a name), or one of them.
Theirs = str | Array


@dataclass(frozen=True)
class Scheme:
    """How one family of keras.applications models names its layers."""

    top: Mapping[str, str]  # part of a top-level layer's weights -> name
    # (stage, index in the stage, index in the network) -> block prefix
    block: Callable[[int, int, int], str]
    # block kind -> {part: suffix, or the layer with `{block}` in it}
    parts: Mapping[str, Mapping[str, Theirs]]
    # network -> the keras.applications constructor it matches, and its
    # arguments (MobileNetV2's alpha)
    model: Callable[[ir.Network], tuple[str, dict]]


def by_depths(scheme: str, models: Mapping[tuple[tuple[int, ...], int], str]):
    """A Scheme.model for families told apart by (blocks per stage, the
    classifier's input features), with no arguments of their own."""

    def model(network: ir.Network) -> tuple[str, dict]:
        key = (
            tuple(len(stage.blocks) for stage in network.stages),
            network.classifier.in_features,
        )
        if key not in models:
            raise SpecError(
                f"{network.title}: no keras.applications {scheme} model has its "
                f"stages ({', '.join(map(str, key[0]))} blocks) and {key[1]} features "
                f"(known: {', '.join(models.values())})"
            )
        return models[key], {}

    return model


def _nasnet_cell(kind: str, branches: Mapping[str, str]) -> dict[str, Theirs]:
    """A NASNet cell's parts: its 1x1 ReLU-conv-BN `hidden` and the adjusted
    cell two back (`prev_projected` or `prev_reduced`), then its separable
    branches, ours -> Keras's tag (`comb0_left` -> `normal_left1`)."""
    parts: dict[str, Theirs] = {
        "hidden.conv.conv": f"{kind}_conv_1_{{block}}",
        "hidden.conv.bn": f"{kind}_bn_1_{{block}}",
        "prev_projected.conv.conv": "adjust_conv_projection_{block}",
        "prev_projected.conv.bn": "adjust_bn_{block}",
        "prev_reduced.path1": "adjust_conv_1_{block}",
        "prev_reduced.path2": "adjust_conv_2_{block}",
        "prev_reduced.bn.bn": "adjust_bn_{block}",
    }
    for ours, tag in branches.items():
        for i in (1, 2):
            separable = f"separable_conv_{i}_{tag}_{{block}}"
            parts[f"{ours}.depthwise{i}"] = Array(separable, 0)
            parts[f"{ours}.pointwise{i}.conv"] = Array(separable, 1)
            parts[f"{ours}.pointwise{i}.bn"] = f"separable_conv_{i}_bn_{tag}_{{block}}"
    return parts


def _conv_bn(pairs: Mapping[str, str]) -> dict[str, str]:
    """{ours: theirs} for conv + bn layers: `conv1` -> `1` gives
    `conv1.conv` -> `1_conv` and `conv1.bn` -> `1_bn`."""
    return {
        f"{ours}.{tensor}": f"{theirs}_{tensor}"
        for ours, theirs in pairs.items()
        for tensor in ("conv", "bn")
    }


SCHEMES = {
    "densenet": Scheme(
        top={
            "stem.conv": "conv1_conv",
            "stem.bn": "conv1_bn",
            "head_norm.bn": "bn",
            "classifier": "predictions",
        },
        block=densenet_block,
        model=by_depths(
            "densenet",
            {
                ((6, 1, 12, 1, 24, 1, 16), 1024): "DenseNet121",
                ((6, 1, 12, 1, 32, 1, 32), 1664): "DenseNet169",
                ((6, 1, 12, 1, 48, 1, 32), 1920): "DenseNet201",
            },
        ),
        parts={
            "dense": {
                "norm1.bn": "0_bn",
                "conv1": "1_conv",
                "norm2.bn": "1_bn",
                "conv2": "2_conv",
            },
            "transition": {"norm.bn": "bn", "conv": "conv"},
        },
    ),
    "efficientnet": Scheme(
        top={
            "stem.conv": "stem_conv",
            "stem.bn": "stem_bn",
            "head.conv": "top_conv",
            "head.bn": "top_bn",
            "classifier": "predictions",
        },
        block=efficientnet_block,
        model=by_depths(
            "efficientnet",
            {
                ((1, 2, 2, 3, 3, 4, 1), 1280): "EfficientNetB0",
                ((2, 3, 3, 4, 4, 5, 2), 1280): "EfficientNetB1",
                ((2, 3, 3, 4, 4, 5, 2), 1408): "EfficientNetB2",
                ((2, 3, 3, 5, 5, 6, 2), 1536): "EfficientNetB3",
                ((2, 4, 4, 6, 6, 8, 2), 1792): "EfficientNetB4",
                ((3, 5, 5, 7, 7, 9, 3), 2048): "EfficientNetB5",
                ((3, 6, 6, 8, 8, 11, 3), 2304): "EfficientNetB6",
                ((4, 7, 7, 10, 10, 13, 4), 2560): "EfficientNetB7",
            },
        ),
        parts={
            "mbconv": {
                "expand.conv": "expand_conv",
                "expand.bn": "expand_bn",
                "depthwise.conv": "dwconv",
                "depthwise.bn": "bn",
                "se.reduce": "se_reduce",
                "se.expand": "se_expand",
                "project.conv": "project_conv",
                "project.bn": "project_bn",
            }
        },
    ),
    "efficientnet_v2": Scheme(
        top={
            "stem.conv": "stem_conv",
            "stem.bn": "stem_bn",
            "head.conv": "top_conv",
            "head.bn": "top_bn",
            "classifier": "predictions",
        },
        block=efficientnet_block,
        model=by_depths(
            "efficientnet_v2",
            {
                ((1, 2, 2, 3, 5, 8), 1280): "EfficientNetV2B0",
                ((2, 3, 3, 4, 6, 9), 1280): "EfficientNetV2B1",
                ((2, 3, 3, 4, 6, 10), 1408): "EfficientNetV2B2",
                ((2, 3, 3, 5, 7, 12), 1536): "EfficientNetV2B3",
                ((2, 4, 4, 6, 9, 15), 1280): "EfficientNetV2S",
                ((3, 5, 5, 7, 14, 18, 5), 1280): "EfficientNetV2M",
                ((4, 7, 7, 10, 19, 25, 7), 1280): "EfficientNetV2L",
            },
        ),
        parts={
            "fused_mbconv": {
                f"{part}.{tensor}": f"{part}_{tensor}"
                for part in ("expand", "project")
                for tensor in ("conv", "bn")
            },
            "mbconv": {
                "expand.conv": "expand_conv",
                "expand.bn": "expand_bn",
                "depthwise.conv": "dwconv2",
                "depthwise.bn": "bn",
                "se.reduce": "se_reduce",
                "se.expand": "se_expand",
                "project.conv": "project_conv",
                "project.bn": "project_bn",
            },
        },
    ),
    "resnet": Scheme(
        top={
            "stem.conv": "conv1_conv",
            "stem.bn": "conv1_bn",
            "classifier": "predictions",
        },
        block=resnet_block,
        model=by_depths(
            "resnet",
            {
                ((3, 4, 6, 3), 2048): "ResNet50",
                ((3, 4, 23, 3), 2048): "ResNet101",
                ((3, 8, 36, 3), 2048): "ResNet152",
            },
        ),
        parts={
            "bottleneck": _conv_bn(
                {"conv1": "1", "conv2": "2", "conv3": "3", "shortcut": "0"}
            )
        },
    ),
    "resnet_v2": Scheme(
        top={
            "stem": "conv1_conv",
            "head_norm.bn": "post_bn",
            "classifier": "predictions",
        },
        block=resnet_block,
        model=by_depths(
            "resnet_v2",
            {
                ((3, 4, 6, 3), 2048): "ResNet50V2",
                ((3, 4, 23, 3), 2048): "ResNet101V2",
                ((3, 8, 36, 3), 2048): "ResNet152V2",
            },
        ),
        parts={
            "preact_bottleneck": {
                "preact.bn": "preact_bn",
                **_conv_bn({"conv1": "1", "conv2": "2"}),
                "conv3": "3_conv",
                "shortcut": "0_conv",
            }
        },
    ),
    "mobilenet_v2": Scheme(
        top={
            "stem.conv": "Conv1",
            "stem.bn": "bn_Conv1",
            "head.conv": "Conv_1",
            "head.bn": "Conv_1_bn",
            "classifier": "predictions",
        },
        block=mobilenet_v2_block,
        model=lambda network: ("MobileNetV2", {"alpha": network.source.width}),
        parts={
            "mbconv": {
                f"{part}.{tensor}": f"{part}{suffix}"
                for part in ("expand", "depthwise", "project")
                for tensor, suffix in (("conv", ""), ("bn", "_BN"))
            }
        },
    ),
    "mobilenet_v1": Scheme(
        top={"stem.conv": "conv1", "stem.bn": "conv1_bn", "classifier": "conv_preds"},
        block=mobilenet_v1_block,
        model=mobilenet_v1_model,
        parts={
            # {block} is the block's number: conv_dw_1, conv_pw_1_bn.
            "separable": {
                "depthwise.conv": "conv_dw_{block}",
                "depthwise.bn": "conv_dw_{block}_bn",
                "pointwise.conv": "conv_pw_{block}",
                "pointwise.bn": "conv_pw_{block}_bn",
            }
        },
    ),
    "nasnet": Scheme(
        top={
            "stem.conv": "stem_conv1",
            "stem.bn": "stem_bn1",
            "classifier": "predictions",
        },
        block=nasnet_block,
        model=nasnet_model,
        parts={
            "normal_cell": _nasnet_cell(
                "normal",
                {
                    "comb0_left": "normal_left1",
                    "comb0_right": "normal_right1",
                    "comb1_left": "normal_left2",
                    "comb1_right": "normal_right2",
                    "comb4_left": "normal_left5",
                },
            ),
            "reduction_cell": _nasnet_cell(
                "reduction",
                {
                    "comb0_left": "reduction_left1",
                    "comb0_right": "reduction_right1",
                    "comb1_right": "reduction_right2",
                    "comb2_right": "reduction_right3",
                    "comb4_left": "reduction_left4",
                },
            ),
        },
    ),
    "mobilenet_v3": Scheme(
        top={
            "stem.conv": "conv",
            "stem.bn": "conv_bn",
            "head.conv": "conv_1",
            "head.bn": "conv_1_bn",
            "hidden": "conv_2",
            "classifier": "logits",
        },
        block=mobilenet_v3_block,
        model=mobilenet_v3_model,
        parts={
            "mbconv": {
                "expand.conv": "expand",
                "expand.bn": "expand_bn",
                "depthwise.conv": "depthwise",
                "depthwise.bn": "depthwise_bn",
                "se.reduce": "squeeze_excite_conv",
                "se.expand": "squeeze_excite_conv_1",
                "project.conv": "project",
                "project.bn": "project_bn",
            }
        },
    ),
}


def layer_names(network: ir.Network, scheme: str) -> dict[str, Theirs]:
    """{our Keras layer name: keras.applications layer name, or an `Array` of
    one}, in forward order.

    Covers every weight-bearing layer of `network.weights()`. SpecError for an
    unknown scheme, or a layer or block kind the scheme's models do not have.
    """
    naming = _scheme(scheme)
    prefixes: dict[str, tuple[str, Mapping[str, str]]] = {}
    position = 0
    for s, stage in enumerate(network.stages):
        for b, block in enumerate(stage.blocks):
            if block.kind not in naming.parts:
                raise SpecError(
                    f"{block.name}: keras.applications' {scheme} models have no "
                    f"{block.kind!r} block (they have: {', '.join(naming.parts)})"
                )
            prefix = naming.block(s, b, position)
            prefixes[block.name] = (prefix, naming.parts[block.kind])
            position += 1
    names: dict[str, Theirs] = {}
    for weights in network.weights():
        if weights.owner:
            prefix, parts = prefixes[weights.owner]
            theirs = parts.get(weights.part)
            if theirs is None:
                kind = next(b.kind for b in network.blocks if b.name == weights.owner)
                raise SpecError(
                    f"{weights.path}: keras.applications' {scheme} models have no "
                    f"counterpart of the {kind!r} part {weights.part!r}"
                )
            names[keras_name(weights.path)] = _in_block(theirs, prefix)
        else:
            theirs = naming.top.get(weights.part)
            if theirs is None:
                raise SpecError(
                    f"{weights.path}: keras.applications' {scheme} models have no "
                    f"counterpart of the layer {weights.part!r}"
                )
            names[keras_name(weights.path)] = theirs
    return names


def _in_block(theirs: Theirs, prefix: str) -> Theirs:
    """A block's part named in full: `{block}` replaced by the block's prefix,
    or the part after it (`conv2_block1` + `1_conv`)."""
    if isinstance(theirs, Array):
        return Array(_in_block(theirs.layer, prefix), theirs.index)
    return theirs.format(block=prefix) if "{" in theirs else f"{prefix}_{theirs}"


def their_weights(app: Any, theirs: Theirs) -> list[Any]:
    """The arrays of keras.applications model `app` that `theirs` (a value of
    `layer_names`) names, in Keras's order."""
    if isinstance(theirs, Array):
        return [app.get_layer(theirs.layer).get_weights()[theirs.index]]
    return app.get_layer(theirs).get_weights()


def _scheme(scheme: str) -> Scheme:
    if scheme not in SCHEMES:
        raise SpecError(
            f"keras.applications: no naming scheme {scheme!r} "
            f"(known: {', '.join(SCHEMES)})"
        )
    return SCHEMES[scheme]


def model_name(network: ir.Network, scheme: str) -> str:
    """The keras.applications constructor of the model `network` matches."""
    return model(network, scheme)[0]


def model(network: ir.Network, scheme: str) -> tuple[str, dict]:
    """The keras.applications constructor of the model `network` matches, and
    its arguments (MobileNetV2's alpha)."""
    return _scheme(scheme).model(network)


def read_weights(network: ir.Network, scheme: str, src: Path) -> dict[str, list[Any]]:
    """A keras.applications weight file as {our Keras layer name: [arrays]},
    the arrays in Keras's order (archspec.weights.keras_to_torch's input).

    Either format, told apart by content, not by name: Keras 3's
    (`app.save_weights("x.weights.h5")`: groups `layers` and `vars`) or the
    legacy HDF5 files `keras.applications.X(weights="imagenet")` downloads
    (root attribute `layer_names`, or that of a `model_weights` group in a
    whole model saved as .h5), matched by layer order as Keras's legacy
    loader matches them (`_load_legacy`)."""
    import numpy as np

    names = layer_names(network, scheme)
    constructor, arguments = model(network, scheme)
    legacy = _is_legacy(src)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    app = getattr(keras.applications, constructor)(
        weights=None,
        classes=network.classifier.out_features,
        classifier_activation=None,
        **arguments,
    )
    called = constructor + (
        f"({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"
        if arguments
        else ""
    )
    if legacy:
        generated = {t: o for o, t in names.items() if isinstance(t, str)}
        _load_legacy(app, src, called, generated)
    else:
        _load_keras3(app, src, constructor)
    return {
        ours: [np.asarray(w) for w in their_weights(app, theirs)]
        for ours, theirs in names.items()
    }


def _is_legacy(src: Path) -> bool:
    """Whether `src` is a legacy Keras HDF5 weight file (else a Keras 3
    .weights.h5); SpecError for a missing file, or one that is neither."""
    import h5py

    if not src.is_file():
        raise SpecError(f"{src}: no such file")
    if not h5py.is_hdf5(src):
        raise SpecError(
            f"{src}: not an HDF5 file (keras.applications' weight files are "
            "legacy .h5 files or Keras 3 .weights.h5 files)"
        )
    try:
        with h5py.File(src, "r") as f:
            if _legacy_root(f) is not None:
                return True
            keras3 = ("layers", "vars", "_layer_checkpoint_dependencies")
            if any(group in f for group in keras3):
                return False
    except (_Malformed, OSError) as exc:  # a truncated file, say
        raise SpecError(f"{src}: an unreadable HDF5 file: {exc}") from None
    raise SpecError(
        f"{src}: an HDF5 file, but no Keras weights: neither a legacy Keras file "
        "(no `layer_names` attribute) nor a Keras 3 .weights.h5 (no `layers` group)"
    )


def _legacy_root(f: Any) -> Any:
    """The group of a legacy file that holds its layers (the file itself, or a
    whole-model save's `model_weights`), or None."""
    import h5py

    if _has_list(f, "layer_names"):
        return f
    if "model_weights" in f:
        group = _child(f, "model_weights", h5py.Group)
        if _has_list(group, "layer_names"):
            return group
    return None


def _has_list(group: Any, name: str) -> bool:
    # Keras splits an attribute over `name0`, `name1`, ... when it is large.
    return name in group.attrs or f"{name}0" in group.attrs


def _attr_list(group: Any, name: str) -> list[str]:
    """A list of names stored as HDF5 attribute `name` (or split over `name0`,
    `name1`, ...), as Keras's load_attributes_from_hdf5_group reads it."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


class _Malformed(Exception):
    """A legacy file's attribute names a member it lacks (or not a plain one)."""


def _child(group: Any, path: str, kind: type) -> Any:
    """Member `path` of an HDF5 group, of type `kind` (h5py.Group or
    h5py.Dataset), reached through hard links only (a soft or external link
    could point outside the file)."""
    import h5py

    current = group
    parts = path.split("/")
    for i, part in enumerate(parts):
        link = current.get(part, getlink=True) if part else None
        if not isinstance(link, h5py.HardLink):
            raise _Malformed(f"no group or dataset {path!r}")
        current = current[part]
        want = kind if i == len(parts) - 1 else h5py.Group
        if not isinstance(current, want):
            raise _Malformed(f"{path!r} is not a {want.__name__.lower()}")
    return current


def _legacy_layers(root: Any) -> list[tuple[str, list[Any]]]:
    """[(layer name, [h5py datasets of its weights])] of a legacy file's layers
    that have weights, in the file's order (its `layer_names`), as Keras's
    load_weights_from_hdf5_group lists them."""
    import h5py

    layers = []
    for name in _attr_list(root, "layer_names"):
        group = _child(root, name, h5py.Group)
        weights = [
            _child(group, w, h5py.Dataset) for w in _attr_list(group, "weight_names")
        ]
        if weights:
            layers.append((name, weights))
    return layers


def _legacy_weights(layer: Any) -> list[Any]:
    """A layer's variables in the order legacy files store them."""
    return list(layer.trainable_weights) + list(layer.non_trainable_weights)


def _shapes(shapes: list[tuple[int, ...]]) -> str:
    return ", ".join(str(tuple(s)) for s in shapes) or "none"


def _load_legacy(
    app: Any, src: Path, called: str, ours: Mapping[str, str] | None = None
) -> None:
    """A legacy HDF5 file's weights into keras.applications model `app`
    (`called`: its constructor call, for messages; `ours`: {its layer name:
    the generated model's}), as Keras's legacy loader matches them: the
    file's layers with weights, in the file's order, against the model's
    layers with weights, in the model's order. Nothing is assigned unless
    every layer fits; SpecError naming the first layer that does not."""
    import h5py
    import numpy as np

    ours = ours or {}
    theirs = [(layer, _legacy_weights(layer)) for layer in app.layers]
    theirs = [(layer, weights) for layer, weights in theirs if weights]

    def expected(k: int) -> str:
        layer, variables = theirs[k]
        generated = (
            f", the generated model's {ours[layer.name]!r}"
            if layer.name in ours
            else ""
        )
        shapes = _shapes([tuple(v.shape) for v in variables])
        return f"{layer.name!r} (#{k + 1}{generated}; weights {shapes})"

    def found(k: int) -> str:
        name, datasets = layers[k]
        shapes = _shapes([tuple(d.shape) for d in datasets])
        return f"{name!r} (#{k + 1}; weights {shapes})"

    mismatch = f"{src}: not weights of keras.applications.{called}"
    try:
        with h5py.File(src, "r") as f:
            layers = _legacy_layers(_legacy_root(f))
            for k, ((_, datasets), (_, variables)) in enumerate(
                zip(layers, theirs, strict=False)
            ):
                if [tuple(d.shape) for d in datasets] != [
                    tuple(v.shape) for v in variables
                ]:
                    raise SpecError(
                        f"{mismatch}: the file's layer {found(k)} does not fit "
                        f"the model's layer {expected(k)} (layers with weights "
                        "are matched in order, as Keras loads legacy files)"
                    )
            if len(layers) != len(theirs):
                k = min(len(layers), len(theirs))
                extra = (
                    f"the file's layer {found(k)} has no counterpart in the model"
                    if len(layers) > k
                    else f"the model's layer {expected(k)} has none in the file"
                )
                raise SpecError(
                    f"{mismatch}: the file has {len(layers)} layers with weights, "
                    f"the model {len(theirs)}; {extra}"
                )
            for (_, datasets), (layer, variables) in zip(layers, theirs, strict=True):
                for variable, dataset in zip(variables, datasets, strict=True):
                    variable.assign(np.asarray(dataset[()]))
                if hasattr(layer, "finalize_state"):
                    layer.finalize_state()  # Normalization's statistics, as Keras
    except (_Malformed, ValueError, TypeError, OSError) as exc:
        raise SpecError(f"{src}: a malformed legacy Keras weight file: {exc}") from None


def _load_keras3(app: Any, src: Path, constructor: str) -> None:
    """A Keras 3 weight file into keras.applications model `app`: Keras
    matches it to the model's layers itself (and reads it only under a name
    ending in .weights.h5)."""
    with tempfile.TemporaryDirectory(prefix="archspec-weights-") as scratch:
        if not src.name.endswith(".weights.h5"):
            named = Path(scratch) / "app.weights.h5"
            shutil.copyfile(src, named)
        else:
            named = src
        try:
            with warnings.catch_warnings():
                # Keras 3.15 warns about every weightless container of a
                # functional model it saved itself ("Skipping nested container").
                warnings.filterwarnings("ignore", "Skipping nested container")
                app.load_weights(named)
        # Keras raises several kinds of error for a mismatched file.
        except Exception as exc:
            # Keras's messages list every layer it could not load: the first
            # line says it.
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SpecError(
                f"{src}: not weights of keras.applications.{constructor}: {first[:300]}"
            ) from None
