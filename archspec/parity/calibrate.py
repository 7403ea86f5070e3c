"""Weights for a comparison: random ones that keep the signal alive, and a
deliberately broken transfer that the checker must catch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import ir
from ..errors import SpecError


def randomize(model: Any, size: int, seed: int = 0) -> None:
    """Random weights and batch-norm statistics that keep the signal alive.

    Random running statistics alone let activations die out or explode over
    dozens of blocks, until every input gives the same logits and a comparison
    proves nothing. So the statistics come from one training-mode pass over
    random data at `size` (the resolution the model will run at; statistics
    from another size mis-scale them), then get perturbed, as do the affine
    parameters.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    with torch.no_grad():
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: exactly this batch's statistics
            m.weight.uniform_(0.5, 1.5, generator=generator)
            m.bias.normal_(0, 0.1, generator=generator)
        param = next(model.parameters())
        # Calibrate on what the model expects: 0-255 images if it normalises them.
        if hasattr(model, "preprocess"):
            x = torch.rand(2, 3, size, size, generator=generator) * 255
        else:
            x = torch.randn(2, 3, size, size, generator=generator)
        model.train()
        model(x.to(param.device, param.dtype))
        model.eval()
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
            std = m.running_var.sqrt()
            m.running_mean.add_(0.1 * std * torch.randn(std.shape, generator=generator))
            m.running_var.mul_(
                torch.empty(std.shape).uniform_(0.8, 1.25, generator=generator)
            )


def transpose_kernel(
    network: ir.Network, layer: str
) -> Callable[[dict[str, Any]], None]:
    """A deliberately broken transfer: swap the spatial axes of one kernel
    (`layer`: its IR path, `stages.3.0.depthwise.conv`, or its Keras name,
    `stages_3_0_depthwise_conv`) in a state dict of the canonical layout."""
    from ..weights import keras_name

    paths = [w.path for w in network.weights() if layer in (w.path, keras_name(w.path))]
    if not paths:
        raise SpecError(f"--corrupt: no layer {layer!r} with weights")

    def corrupt(state: dict[str, Any]) -> None:
        key = f"{paths[0]}.weight"
        state[key] = state[key].swapaxes(-2, -1).copy()

    return corrupt
