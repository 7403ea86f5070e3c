"""The torch,keras pair of one variant: `archspec check`'s default pair,
compared as any other through the two backends' runtime adapters
(archspec.parity.sides.Sides), named for what the tests and tools read of
it (`torch_model`, `keras_model`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import ir
from .sides import Sides, images

__all__ = ["Pair", "images"]


class Pair(Sides):
    """The generated PyTorch and Keras models of one variant, holding the
    same weights."""

    @classmethod
    def build(
        cls,
        network: ir.Network,
        folder: Path | None,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        seed: int = 0,
        corrupt: Callable[[dict[str, Any]], None] | None = None,
        size: int | None = None,
    ) -> Pair:
        """`corrupt` changes the Keras model's weights (canonical layout)."""
        return super().build(
            network,
            ("torch", "keras"),
            folder,
            device=device,
            dtype=dtype,
            seed=seed,
            corrupt=corrupt,
            size=size,
        )

    @property
    def torch_model(self) -> Any:
        return self.models[0]

    @property
    def keras_model(self) -> Any:
        return self.models[1]
