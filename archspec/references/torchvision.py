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

resnet (torchvision's ResNet and Wide ResNet; timm's resnet*, seresnet*):
    stem.conv / stem.bn                  conv1 / bn1
    stages.S.B.convK.conv / .bn          layer{S+1}.B.convK / .bnK
    stages.S.B.shortcut.conv / .bn       layer{S+1}.B.downsample.0 / .1
    stages.S.B.se.reduce / .expand       layer{S+1}.B.se.fc1 / .fc2   (timm)
    classifier                           fc

This is what makes the references' (and so pretrained) weights usable:

    model.load_state_dict(from_torchvision(network, reference.state_dict(), "resnet"))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from .. import ir
from ..errors import SpecError
from . import Owner, part, rename, torch_names

T = TypeVar("T")

_CONV_BN = {"conv": "0", "bn": "1"}


def efficientnet(network: ir.Network, layer: ir.Weights, owner: Owner | None) -> str:
    if owner is None:
        last = len(network.stages) + 1
        top = {
            "stem.conv": "features.0.0",
            "stem.bn": "features.0.1",
            "head.conv": f"features.{last}.0",
            "head.bn": f"features.{last}.1",
            "classifier": "classifier.1",
        }
        return part(top, layer, "torchvision's EfficientNet")
    block = owner.block
    if block.kind != "mbconv":
        raise SpecError(f"torchvision's EfficientNet has no {block.kind!r} blocks")
    e = 1 if block.has_expand else 0
    parts = {
        f"{name}.{inner}": f"block.{position}.{theirs}"
        for name, position in (("expand", 0), ("depthwise", e), ("project", e + 2))
        for inner, theirs in _CONV_BN.items()
    }
    parts |= {"se.reduce": f"block.{e + 1}.fc1", "se.expand": f"block.{e + 1}.fc2"}
    where = "torchvision's EfficientNet block"
    return f"features.{owner.stage + 1}.{owner.index}.{part(parts, layer, where)}"


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


SCHEMES = {"efficientnet": efficientnet, "resnet": resnet}


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
