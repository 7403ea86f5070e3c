"""Tensor names of the reference implementations, for importing their weights.

A spec names, per reference, the naming scheme its implementation uses
(`references: {torchvision: resnet}`). A scheme maps each weight-bearing layer
of the IR, identified by its owner (a block, or the top level) and its part
inside it, to the reference's name for it; nothing parses paths. The PyTorch
references (torchvision, timm) map to state-dict prefixes, keras.applications
to layer names (archspec.references.keras_applications).

Nothing here imports torch or Keras: only names are translated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from .. import ir
from ..errors import SpecError

T = TypeVar("T")

# (network, weights, the block owning them or None) -> the reference's prefix
Scheme = Callable[[ir.Network, ir.Weights, "Owner | None"], str]

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class Owner:
    """A block and its place (0-based): stage, index in the stage, and
    position among all blocks of the network."""

    block: ir.Block
    stage: int
    index: int
    position: int


def owners(network: ir.Network) -> dict[str, Owner]:
    places = [
        (block, s, b)
        for s, stage in enumerate(network.stages)
        for b, block in enumerate(stage.blocks)
    ]
    return {
        block.name: Owner(block, s, b, position)
        for position, (block, s, b) in enumerate(places)
    }


def tensor_suffixes(layer: ir.Weights) -> tuple[str, ...]:
    """The state-dict suffixes of one weight-bearing layer, PyTorch's way."""
    if isinstance(layer, ir.BatchNormWeights):
        return _BN
    return ("weight", "bias") if layer.bias else ("weight",)


def torch_names(network: ir.Network, scheme: Scheme) -> dict[str, str]:
    """{reference state-dict key: generated-module key} for every tensor."""
    blocks = owners(network)
    names = {}
    for layer in network.weights():
        theirs = scheme(network, layer, blocks.get(layer.owner))
        for suffix in tensor_suffixes(layer):
            names[f"{theirs}.{suffix}"] = f"{layer.path}.{suffix}"
    return names


def rename(names: Mapping[str, str], state: Mapping[str, T], what: str) -> dict[str, T]:
    """A reference state dict under the generated module's names. Every tensor
    must be accounted for: a missing or unexpected key is an error naming it."""
    missing = sorted(set(names) - set(state))
    extra = sorted(set(state) - set(names))
    if missing or extra:
        raise SpecError(
            f"{what} does not fit: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}"
        )
    return {names[key]: value for key, value in state.items()}


def part(table: Mapping[str, str], layer: ir.Weights, where: str) -> str:
    """The reference's name for a part, or an error naming what has none."""
    if layer.part not in table:
        raise SpecError(f"{where} has no counterpart for {layer.path!r}")
    return table[layer.part]
