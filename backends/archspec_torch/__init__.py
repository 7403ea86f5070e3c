"""archspec's PyTorch backend: one readable, self-contained module per variant.

The generated module imports torch only. Its parameter names follow the IR's
dotted layer names exactly (`stages.2.0.depthwise.conv.weight`), which is what
lets weights move by name between backends and from torchvision
(archspec.references.torchvision). This package itself never imports torch.
"""

from __future__ import annotations

from pathlib import Path

from archspec import ir
from archspec.errors import SpecError
from archspec.render import Provenance, environment, uniform

TEMPLATES = Path(__file__).parent / "templates"

# IR activation -> the torch module that computes it.
ACTIVATIONS = {
    "silu": "nn.SiLU(inplace=True)",
    "relu": "nn.ReLU(inplace=True)",
    "relu6": "nn.ReLU6(inplace=True)",
    "hardswish": "nn.Hardswish(inplace=True)",
    "gelu": "nn.GELU()",
}


class TorchBackend:
    name = "torch"
    description = "PyTorch nn.Module per variant (imports torch only)"

    def __init__(self) -> None:
        self._env = None

    def emit(self, network: ir.Network) -> dict[str, str]:
        if self._env is None:
            self._env = environment(TEMPLATES)
            self._env.globals["ACTIVATIONS"] = ACTIVATIONS
        activation = uniform(network, "activation", self.name)
        if activation not in ACTIVATIONS:
            raise SpecError(f"activation {activation!r} has no PyTorch equivalent here")
        source = self._env.get_template("module.py.j2").render(
            net=network,
            about=Provenance.of(network),
            kinds=sorted({block.kind for block in network.blocks}),
            norm=uniform(network, "norm", self.name),
            padding=uniform(network, "padding", self.name),
            activation=activation,
        )
        return {f"{network.module}.py": source}


BACKEND = TorchBackend()

__all__ = ["BACKEND", "TorchBackend"]
