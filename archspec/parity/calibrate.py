"""Weights for a comparison: random ones that keep the signal alive, and a
deliberately broken transfer that the checker must catch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


def transpose_kernel(layer: str) -> Callable[[dict[str, list[Any]]], None]:
    """A deliberately broken transfer: swap the spatial axes of one kernel."""

    def corrupt(layers: dict[str, list[Any]]) -> None:
        if layer not in layers:
            raise SpecError(f"--corrupt: no layer {layer!r} with weights")
        kernel = layers[layer][0]
        layers[layer][0] = kernel.transpose(1, 0, *range(2, kernel.ndim)).copy()

    return corrupt
