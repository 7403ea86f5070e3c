"""torchvision's EfficientNet state-dict names <-> the generated PyTorch module's.

The generated module names its parameters after the IR (`stem.conv.weight`,
`stages.2.0.depthwise.bn.running_var`, `classifier.weight`); torchvision nests
them in `features`:

    stem.conv / stem.bn                  features.0.0 / features.0.1
    stages.S.B.expand.conv / .bn         features.{S+1}.B.block.0.0 / .0.1
    stages.S.B.depthwise.conv / .bn      features.{S+1}.B.block.{e}.0 / .{e}.1
    stages.S.B.se.reduce / .se.expand    features.{S+1}.B.block.{e+1}.fc1 / .fc2
    stages.S.B.project.conv / .bn        features.{S+1}.B.block.{e+2}.0 / .{e+2}.1
    head.conv / head.bn                  features.{stages+1}.0 / .1
    classifier                           classifier.1

where e is 1 when the block has an expand convolution and 0 when it has not.
This is what makes torchvision's (and so pretrained) weights usable:

    state = torchvision_model.state_dict()
    model.load_state_dict(from_torchvision(network, state))

Nothing here imports torch: only names are translated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from .. import ir
from ..errors import SpecError

T = TypeVar("T")

_SUFFIXES = {
    "conv2d": ("weight",),
    "batch_norm": (
        "weight",
        "bias",
        "running_mean",
        "running_var",
        "num_batches_tracked",
    ),
    "dense": ("weight", "bias"),
}


def _prefix(network: ir.Network, path: str, blocks: Mapping[str, ir.Block]) -> str:
    parts = path.split(".")
    if parts[0] in ("stem", "head"):
        index = 0 if parts[0] == "stem" else len(network.stages) + 1
        return f"features.{index}.{0 if parts[1] == 'conv' else 1}"
    if parts[0] == "classifier":
        return "classifier.1"
    stage, block, layer = int(parts[1]), int(parts[2]), parts[3:]
    node = blocks[".".join(parts[:3])]
    if node.kind != "mbconv":
        raise SpecError(f"torchvision's EfficientNet has no {node.kind!r} blocks")
    e = 1 if node.has_expand else 0
    position = {"expand": 0, "depthwise": e, "se": e + 1, "project": e + 2}[layer[0]]
    inner = {"conv": "0", "bn": "1", "reduce": "fc1", "expand": "fc2"}[layer[1]]
    return f"features.{stage + 1}.{block}.block.{position}.{inner}"


def state_dict_names(network: ir.Network) -> dict[str, str]:
    """{torchvision key: generated-module key} for every tensor of the model."""
    blocks = {b.name: b for b in network.blocks}
    names = {}
    for layer in network.weights():
        suffixes = _SUFFIXES[layer.kind]
        if isinstance(layer, ir.Conv2dWeights) and layer.bias:
            suffixes = ("weight", "bias")
        theirs = _prefix(network, layer.path, blocks)
        for suffix in suffixes:
            names[f"{theirs}.{suffix}"] = f"{layer.path}.{suffix}"
    return names


def from_torchvision(network: ir.Network, state: Mapping[str, T]) -> dict[str, T]:
    """Rename a torchvision EfficientNet state dict for the generated module.

    Every tensor must be accounted for: a missing or unexpected key is an
    error naming it, never a silent partial load.
    """
    names = state_dict_names(network)
    missing = sorted(set(names) - set(state))
    extra = sorted(set(state) - set(names))
    if missing or extra:
        raise SpecError(
            f"torchvision state dict does not fit {network.title}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}"
        )
    return {names[key]: value for key, value in state.items()}
