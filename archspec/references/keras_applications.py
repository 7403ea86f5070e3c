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

`read_weights` reads a keras.applications weight file
(`app.save_weights("x.weights.h5")`) into {our layer name: [arrays]}. Keras
stores a model's weights by position, not by layer name, so it builds the
keras.applications model the network matches (found by its stage depths and
feature width) to read the file. Only `read_weights` imports keras, when
called.
"""

from __future__ import annotations

import os
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
    the arrays in Keras's order (archspec.weights.keras_to_torch's input)."""
    import numpy as np

    names = layer_names(network, scheme)
    constructor, arguments = model(network, scheme)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    app = getattr(keras.applications, constructor)(
        weights=None,
        classes=network.classifier.out_features,
        classifier_activation=None,
        **arguments,
    )
    try:
        with warnings.catch_warnings():
            # Keras 3.15 warns about every weightless container of a functional
            # model it saved itself ("Skipping nested container ...").
            warnings.filterwarnings("ignore", "Skipping nested container")
            app.load_weights(src)
    # Keras raises several kinds of error for a mismatched file.
    except Exception as exc:
        # Keras's messages list every layer it could not load: the first line says it.
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SpecError(
            f"{src}: not weights of keras.applications.{constructor}: {first[:300]}"
        ) from None
    return {
        ours: [np.asarray(w) for w in their_weights(app, theirs)]
        for ours, theirs in names.items()
    }
