"""Figures computed from the IR alone: parameters and multiply-adds."""

from __future__ import annotations

from . import ir


def params(network: ir.Network) -> int:
    """Trainable parameters (BN running statistics are buffers, not counted)."""
    return sum(layer.params for layer in network.weights())


def flops(network: ir.Network) -> int:
    """Multiply-adds of one forward pass at the network's resolution."""
    return network.flops()


def layers_per_stage(network: ir.Network) -> list[int]:
    return [len(stage.blocks) for stage in network.stages]
