"""torchvision's (and timm's) state-dict names <-> the generated PyTorch module's.

The generated module names its parameters after the IR (`stem.conv.weight`,
`stages.2.0.depthwise.bn.running_var`, `classifier.weight`). Schemes:

efficientnet (torchvision's EfficientNet):
    stem.conv / stem.bn                  features.0.0 / features.0.1
    stages.S.B.expand.conv / .bn         features.{S+1}.B.block.0.0 / .0.1
    stages.S.B.depthwise.conv / .bn      features.{S+1}.B.block.{e}.0 / .{e}.1
    stages.S.B.se.reduce / .se.expand    features.{S+1}.B.block.{e+1}.fc1 / .fc2
    stages.S.B.project.conv / .bn        features.{S+1}.B.block.{e+2}.0 / .{e+2}.1
    head.conv / head.bn                  features.{stages+1}.0 / .1
    classifier                           classifier.1
  where e is 1 when the block has an expand convolution and 0 when it has not.
  EfficientNetV2's fused blocks (fused_mbconv):
    stages.S.B.expand.conv / .bn         features.{S+1}.B.block.0.0 / .0.1
    stages.S.B.project.conv / .bn        features.{S+1}.B.block.{e}.0 / .{e}.1

mobilenet_v2 (torchvision's MobileNetV2, one flat `features`; i = 1 + the
block's position in the network):
    stem.conv / stem.bn                  features.0.0 / features.0.1
    expand.conv / .bn (t > 1)            features.i.conv.0.0 / .0.1
    depthwise.conv / .bn                 features.i.conv.{e}.0 / .{e}.1
    project.conv / .bn                   features.i.conv.{e+1} / .{e+2}
    head.conv / head.bn                  features.{blocks+1}.0 / .1
    classifier                           classifier.1

mobilenet_v3 (torchvision's MobileNetV3 Large and Small, one flat `features`;
i = 1 + the block's position; e = 1 with an expand convolution, q = 1 with SE):
    stem.conv / stem.bn                  features.0.0 / features.0.1
    expand.conv / .bn                    features.i.block.0.0 / .0.1
    depthwise.conv / .bn                 features.i.block.{e}.0 / .{e}.1
    se.reduce / se.expand                features.i.block.{e+1}.fc1 / .fc2
    project.conv / .bn                   features.i.block.{e+q+1}.0 / .1
    head.conv / head.bn                  features.{blocks+1}.0 / .1
    hidden / classifier                  classifier.0 / classifier.3

mnasnet (torchvision's MNASNet, one flat `layers`; stage 0 is its SepConv):
    stem.conv / stem.bn                  layers.0 / layers.1
    stages.0.0.depthwise / .project      layers.3 / .4, layers.6 / .7
    stages.S.B.expand / depthwise / project (S > 0)
                                         layers.{7+S}.B.layers.0 / .1, .3 / .4, .6 / .7
    head.conv / head.bn                  layers.{stages+7} / +1
    classifier                           classifier.1

efficientnet_timm (timm's _efficientnet_builder models: tf_efficientnet_lite*):
    stem.conv / stem.bn                  conv_stem / bn1
    stages.S.B.expand / depthwise / project (.conv, .bn)
                                         blocks.S.B.conv_pw / bn1, conv_dw / bn2, conv_pwl / bn3
    stages.S.B.depthwise / project (no expand: DepthwiseSeparableConv)
                                         blocks.S.B.conv_dw / bn1, conv_pw / bn2
    stages.S.B.se.reduce / .expand       blocks.S.B.se.conv_reduce / .conv_expand
    head.conv / head.bn                  conv_head / bn2
    classifier                           classifier

resnet (torchvision's ResNet and Wide ResNet; timm's resnet*, seresnet*):
    stem.conv / stem.bn                  conv1 / bn1
    stages.S.B.convK.conv / .bn          layer{S+1}.B.convK / .bnK
    stages.S.B.shortcut.conv / .bn       layer{S+1}.B.downsample.0 / .1
    stages.S.B.se.reduce / .expand       layer{S+1}.B.se.fc1 / .fc2   (timm)
    classifier                           fc

densenet (torchvision's DenseNet, timm's densenet*; b counts the dense blocks,
t the transitions, i the layers of a block, all from 1):
    stem.conv / stem.bn                  features.conv0 / features.norm0
    stages.S.B.norm1.bn / conv1 / norm2.bn / conv2 (dense)
                                         features.denseblock{b}.denselayer{i}.norm1 / ...
    stages.S.0.norm.bn / conv (transition)
                                         features.transition{t}.norm / .conv
    head_norm.bn                         features.norm5
    classifier                           classifier

resnetv2 (timm's resnetv2_18 ... resnetv2_152, pre-activation, plain batch
norm; timm/models/resnetv2.py):
    stem (a convolution alone)           stem.conv
    stages.S.B.preact.bn                 stages.S.blocks.B.norm1
    stages.S.B.conv1.conv / .bn          stages.S.blocks.B.conv1 / .norm2
    stages.S.B.conv2.conv / .bn          stages.S.blocks.B.conv2 / .norm3   (bottleneck)
    stages.S.B.conv2                     stages.S.blocks.B.conv2            (basic: bare)
    stages.S.B.conv3                     stages.S.blocks.B.conv3            (bottleneck)
    stages.S.B.shortcut                  stages.S.blocks.B.downsample.conv
    head_norm.bn                         norm
    classifier (a 1x1 convolution)       head.fc

This is what makes the references' (and so pretrained) weights usable:

    model.load_state_dict(from_torchvision(network, reference.state_dict(), "resnet"))
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeVar

from .. import ir
from ..errors import SpecError
from . import Owner, part, rename, torch_names

T = TypeVar("T")

_CONV_BN = {"conv": "0", "bn": "1"}


def _top(stem: tuple[str, str], head: tuple[str, str]) -> dict[str, str]:
    """Names of the stem and head convolution + norm, and of the classifier,
    which all three torchvision mobile-style models keep in `classifier.1`."""
    return {
        "stem.conv": stem[0],
        "stem.bn": stem[1],
        "head.conv": head[0],
        "head.bn": head[1],
        "classifier": "classifier.1",
    }


def _features_top(last: int) -> dict[str, str]:
    """The stem in `features.0`, the head convolution in `features.{last}`."""
    return _top(
        ("features.0.0", "features.0.1"),
        (f"features.{last}.0", f"features.{last}.1"),
    )


def _block_parts(block: ir.Block) -> dict[str, str]:
    """torchvision's MBConv and InvertedResidual (V3) number their layers in
    `block`: expand (if any), depthwise, SE (if any), project."""
    e = 1 if block.has_expand else 0
    q = 1 if block.squeeze_channels else 0
    parts = {
        f"{name}.{inner}": f"block.{position}.{theirs}"
        for name, position in (("expand", 0), ("depthwise", e), ("project", e + q + 1))
        for inner, theirs in _CONV_BN.items()
    }
    return parts | {
        "se.reduce": f"block.{e + 1}.fc1",
        "se.expand": f"block.{e + 1}.fc2",
    }


def efficientnet(network: ir.Network, layer: ir.Weights, owner: Owner | None) -> str:
    if owner is None:
        top = _features_top(len(network.stages) + 1)
        return part(top, layer, "torchvision's EfficientNet")
    block = owner.block
    if block.kind not in ("mbconv", "fused_mbconv"):
        raise SpecError(f"torchvision's EfficientNet has no {block.kind!r} blocks")
    if block.kind == "fused_mbconv":  # EfficientNetV2's FusedMBConv
        e = 1 if block.has_expand else 0
        parts = {
            f"{name}.{inner}": f"block.{position}.{theirs}"
            for name, position in (("expand", 0), ("project", e))
            for inner, theirs in _CONV_BN.items()
        }
    else:
        parts = _block_parts(block)
    where = "torchvision's EfficientNet block"
    inner = part(parts, layer, where)
    return f"features.{owner.stage + 1}.{owner.index}.{inner}"


TIMM_EFFICIENTNET_TOP = {
    "stem.conv": "conv_stem",
    "stem.bn": "bn1",
    "head.conv": "conv_head",
    "head.bn": "bn2",
    "classifier": "classifier",
}
# timm's InvertedResidual (a block with an expand convolution) and
# DepthwiseSeparableConv (one without).
TIMM_INVERTED_RESIDUAL = {
    "expand.conv": "conv_pw",
    "expand.bn": "bn1",
    "depthwise.conv": "conv_dw",
    "depthwise.bn": "bn2",
    "se.reduce": "se.conv_reduce",
    "se.expand": "se.conv_expand",
    "project.conv": "conv_pwl",
    "project.bn": "bn3",
}
TIMM_SEPARABLE = {
    "depthwise.conv": "conv_dw",
    "depthwise.bn": "bn1",
    "se.reduce": "se.conv_reduce",
    "se.expand": "se.conv_expand",
    "project.conv": "conv_pw",
    "project.bn": "bn2",
}


def efficientnet_timm(
    network: ir.Network, layer: ir.Weights, owner: Owner | None
) -> str:
    where = "timm's EfficientNet"
    if owner is None:
        return part(TIMM_EFFICIENTNET_TOP, layer, where)
    if owner.block.kind != "mbconv":
        raise SpecError(f"{where} builder's blocks here are mbconv only")
    parts = TIMM_INVERTED_RESIDUAL if owner.block.has_expand else TIMM_SEPARABLE
    return f"blocks.{owner.stage}.{owner.index}.{part(parts, layer, where)}"


def _mbconv(owner: Owner, where: str) -> None:
    if owner.block.kind != "mbconv" or owner.block.squeeze_channels:
        raise SpecError(f"{where} has only inverted residuals without SE blocks")


def mobilenet_v2(network: ir.Network, layer: ir.Weights, owner: Owner | None) -> str:
    where = "torchvision's MobileNetV2"
    if owner is None:
        return part(_features_top(len(network.blocks) + 1), layer, where)
    _mbconv(owner, where)
    e = 1 if owner.block.has_expand else 0
    parts = {
        "expand.conv": "conv.0.0",
        "expand.bn": "conv.0.1",
        "depthwise.conv": f"conv.{e}.0",
        "depthwise.bn": f"conv.{e}.1",
        "project.conv": f"conv.{e + 1}",
        "project.bn": f"conv.{e + 2}",
    }
    return f"features.{owner.position + 1}.{part(parts, layer, where)}"


def mobilenet_v3(network: ir.Network, layer: ir.Weights, owner: Owner | None) -> str:
    where = "torchvision's MobileNetV3"
    if owner is None:
        top = _features_top(len(network.blocks) + 1)
        top |= {"hidden": "classifier.0", "classifier": "classifier.3"}
        return part(top, layer, where)
    if owner.block.kind != "mbconv":
        raise SpecError(f"{where} has only inverted residual blocks")
    return (
        f"features.{owner.position + 1}.{part(_block_parts(owner.block), layer, where)}"
    )


MNASNET_PARTS = {
    "expand.conv": "0",
    "expand.bn": "1",
    "depthwise.conv": "3",
    "depthwise.bn": "4",
    "project.conv": "6",
    "project.bn": "7",
}


def mnasnet(network: ir.Network, layer: ir.Weights, owner: Owner | None) -> str:
    where = "torchvision's MNASNet"
    if owner is None:
        head = len(network.stages) + 7
        top = _top(("layers.0", "layers.1"), (f"layers.{head}", f"layers.{head + 1}"))
        return part(top, layer, where)
    _mbconv(owner, where)
    if owner.stage == 0:  # the SepConv sits in the flat `layers` itself
        if owner.index or owner.block.has_expand or len(network.stages[0].blocks) > 1:
            raise SpecError(f"{where} starts with one separable block (expansion 1)")
        return f"layers.{part(MNASNET_PARTS, layer, where)}"
    inner = part(MNASNET_PARTS, layer, where)
    return f"layers.{7 + owner.stage}.{owner.index}.layers.{inner}"


RESNET_TOP = {"stem.conv": "conv1", "stem.bn": "bn1", "classifier": "fc"}
RESNET_PARTS = {
    **{f"conv{k}.conv": f"conv{k}" for k in (1, 2, 3)},
    **{f"conv{k}.bn": f"bn{k}" for k in (1, 2, 3)},
    "shortcut.conv": "downsample.0",
    "shortcut.bn": "downsample.1",
    "se.reduce": "se.fc1",
    "se.expand": "se.fc2",
}


def resnet(network: ir.Network, layer: ir.Weights, owner: Owner | None) -> str:
    if owner is None:
        return part(RESNET_TOP, layer, "torchvision's ResNet")
    if owner.block.kind not in ("basic", "bottleneck"):
        raise SpecError(f"torchvision's ResNet has no {owner.block.kind!r} blocks")
    where = "torchvision's ResNet block"
    return f"layer{owner.stage + 1}.{owner.index}.{part(RESNET_PARTS, layer, where)}"


DENSENET_TOP = {
    "stem.conv": "features.conv0",
    "stem.bn": "features.norm0",
    "head_norm.bn": "features.norm5",
    "classifier": "classifier",
}
DENSENET_PARTS = {
    "dense": {
        "norm1.bn": "norm1",
        "conv1": "conv1",
        "norm2.bn": "norm2",
        "conv2": "conv2",
    },
    "transition": {"norm.bn": "norm", "conv": "conv"},
}


def densenet(network: ir.Network, layer: ir.Weights, owner: Owner | None) -> str:
    where = "torchvision's DenseNet"
    if owner is None:
        return part(DENSENET_TOP, layer, where)
    kind = owner.block.kind
    if kind not in DENSENET_PARTS:
        raise SpecError(f"{where} has no {kind!r} blocks")
    # Dense blocks and transitions count separately, from 1.
    number = sum(
        stage.blocks[0].kind == kind for stage in network.stages[: owner.stage + 1]
    )
    inner = part(DENSENET_PARTS[kind], layer, where)
    if kind == "transition":
        return f"features.transition{number}.{inner}"
    return f"features.denseblock{number}.denselayer{owner.index + 1}.{inner}"


RESNETV2_TOP = {"stem": "stem.conv", "head_norm.bn": "norm", "classifier": "head.fc"}
# timm's BatchNormAct2d modules norm1, norm2 (, norm3) are the pre-activation
# and the batch norms after conv1 (and conv2).
RESNETV2_PARTS = {
    "preact_basic": {
        "preact.bn": "norm1",
        "conv1.conv": "conv1",
        "conv1.bn": "norm2",
        "conv2": "conv2",
        "shortcut": "downsample.conv",
    },
    "preact_bottleneck": {
        "preact.bn": "norm1",
        "conv1.conv": "conv1",
        "conv1.bn": "norm2",
        "conv2.conv": "conv2",
        "conv2.bn": "norm3",
        "conv3": "conv3",
        "shortcut": "downsample.conv",
    },
}


def resnetv2(network: ir.Network, layer: ir.Weights, owner: Owner | None) -> str:
    where = "timm's ResNetV2"
    if owner is None:
        return part(RESNETV2_TOP, layer, where)
    kind = owner.block.kind
    if kind not in RESNETV2_PARTS:
        raise SpecError(
            f"{where} has no {kind!r} blocks (it has: {', '.join(RESNETV2_PARTS)})"
        )
    inner = part(RESNETV2_PARTS[kind], layer, f"{where}'s {kind}")
    return f"stages.{owner.stage}.blocks.{owner.index}.{inner}"


# NASNet-A and PNASNet-5 (timm/models/nasnet.py, pnasnet.py): a cell's
# nodes, then the parts of the ops they call.
CELL_NODES = {
    "nasnet": {
        "hidden": "conv_1x1",
        "prev_projected": "conv_prev_1x1",
        "prev_reduced": "",
    },
    "pnasnet": {
        "hidden": "conv_1x1",
        "left_projected": "conv_prev_1x1",
        "left": "conv_prev_1x1",
    },
}
CELL_OPS = {
    # sep_conv: timm's BranchSeparables
    "depthwise1": "separable_1.depthwise_conv2d",
    "pointwise1.conv": "separable_1.pointwise_conv2d",
    "pointwise1.bn": "bn_sep_1",
    "depthwise2": "separable_2.depthwise_conv2d",
    "pointwise2.conv": "separable_2.pointwise_conv2d",
    "pointwise2.bn": "bn_sep_2",
    # relu_conv_bn: ActConvBn
    "conv.conv": "conv",
    "conv.bn": "bn",
    # factorized_reduction: FactorizedReduction (CellStem1, FirstCell)
    "path1": "path_1.conv",
    "path2": "path_2.conv",
    "bn.bn": "final_path_bn",
}
CELL_TOP = {
    "nasnet": {
        "stem.conv": "conv0.conv",
        "stem.bn": "conv0.bn",
        "classifier": "last_linear",
    },
    "pnasnet": {
        "stem.conv": "conv_0.conv",
        "stem.bn": "conv_0.bn",
        "classifier": "last_linear",
    },
}


def _cells(family: str):
    """timm's NASNet-A or PNASNet-5 names: cell_stem_0, cell_stem_1, then
    cell_N (NASNet: reduction_cell_K for the reductions), and inside a cell
    comb_iter_I_{left,right} for our combI_{left,right}."""
    where = f"timm's {family}"

    def scheme(network: ir.Network, layer: ir.Weights, owner: Owner | None) -> str:
        if owner is None:
            return part(CELL_TOP[family], layer, where)
        position = owner.position
        if position < 2:
            cell = f"cell_stem_{position}"
        elif family == "pnasnet":
            cell = f"cell_{position - 2}"
        else:
            later = network.blocks[2 : position + 1]
            reductions = sum(b.stride == 2 for b in later)
            cell = (
                f"reduction_cell_{reductions - 1}"
                if owner.block.stride == 2
                else f"cell_{len(later) - 1 - reductions}"
            )
        node, _, inner = layer.part.partition(".")
        combination = re.fullmatch(r"comb(\d)_(left|right)", node)
        if combination:
            outer = f"comb_iter_{combination[1]}_{combination[2]}"
        elif node in CELL_NODES[family]:
            outer = CELL_NODES[family][node]
        else:
            raise SpecError(f"{where} has no counterpart for {layer.path!r}")
        inner = CELL_OPS.get(inner, inner) if inner else ""
        return ".".join(p for p in (cell, outer, inner) if p)

    return scheme


SCHEMES = {
    "densenet": densenet,
    "efficientnet": efficientnet,
    "efficientnet_timm": efficientnet_timm,
    "mnasnet": mnasnet,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3": mobilenet_v3,
    "resnet": resnet,
    "resnetv2": resnetv2,
    "nasnet": _cells("nasnet"),
    "pnasnet": _cells("pnasnet"),
}


def scheme(name: str):
    if name not in SCHEMES:
        raise SpecError(
            f"no torchvision/timm naming scheme {name!r} (known: {', '.join(SCHEMES)})"
        )
    return SCHEMES[name]


def state_dict_names(
    network: ir.Network, scheme_name: str = "efficientnet"
) -> dict[str, str]:
    """{reference key: generated-module key} for every tensor of the model."""
    return torch_names(network, scheme(scheme_name))


def from_torchvision(
    network: ir.Network, state: Mapping[str, T], scheme_name: str = "efficientnet"
) -> dict[str, T]:
    """Rename a torchvision (or timm) state dict for the generated module.

    Every tensor must be accounted for: a missing or unexpected key is an
    error naming it, never a silent partial load.
    """
    names = state_dict_names(network, scheme_name)
    return rename(names, state, f"the state dict for {network.title}")
