"""The Python API: a spec compiled in memory, as source or as a model object.

    model = archspec.create_model("specs/resnet.yaml", "resnet18", num_classes=10)

works like `timm.create_model`: nothing is written, and the model is what
the backend's runtime adapter makes of its generated module (`model()`): an
instance of the generated class (PyTorch, Flax) or the generated builder's
keras.Model (Keras). The frameworks are imported only when a model is made.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import backends, ir
from .errors import Diagnostics, SpecError
from .pipeline import load_spec, network

__all__ = ["compile", "create_model", "default_folder"]

Spec = str | os.PathLike | ir.Network


def default_folder(backend: str, spec: str | os.PathLike) -> Path:
    """Where `archspec compile` writes a spec's modules unless told: one folder
    per backend and spec (two specs may name a variant alike: resnet50)."""
    return Path("generated") / backend / Path(spec).stem


def _network(spec: Spec, variant: str | None) -> ir.Network:
    if isinstance(spec, ir.Network):
        if variant not in (None, spec.source.variant):
            raise SpecError(
                f"variant {variant!r}: the network given is {spec.source.variant!r}"
            )
        return spec
    if variant is not None and ("," in variant or variant == "all"):
        raise SpecError(f"variant {variant!r}: give a single variant")
    return network(load_spec(spec, Diagnostics()), variant=variant)


def compile(
    spec: Spec, variant: str | None = None, backend: str = "torch"
) -> dict[str, str]:
    """The source `archspec compile SPEC --variant VARIANT --backend BACKEND`
    writes, as {path: source}, with the paths it writes to by default.

    `spec`: a spec file, an expanded network file or an `ir.Network`;
    `variant`: a name from the spec's scaling rule (default: the first).
    Bad input raises `archspec.errors.SpecError` with the CLI's message.
    """
    net = _network(spec, variant)
    folder = default_folder(
        backend, net.source.spec if isinstance(spec, ir.Network) else spec
    )
    return {
        str(folder / name): source
        for name, source in backends.get(backend).emit(net).items()
    }


def create_model(
    spec: Spec, variant: str | None = None, backend: str = "torch", **kwargs: Any
) -> Any:
    """The generated model of one variant, compiled and imported in memory.

    `kwargs` go to the generated constructor (torch: `num_classes`,
    `drop_rate`, `drop_path_rate`; flax: those and `rngs`) or builder
    (keras: `include_top`, `weights`, `input_shape`, `pooling`, `classes`,
    ...). Any registered backend with a runtime adapter works; one without
    is a SpecError (archspec.compile gives its source).
    """
    return backends.adapter(backend).model(_network(spec, variant), **kwargs)
