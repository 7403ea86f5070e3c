"""Compile a network and import the generated module, in memory, for the tools
that run it (`archspec check`, `archspec weights convert`, `archspec.create_model`).
The compiler never uses this."""

from __future__ import annotations

import contextlib
import linecache
import os
import sys
import types
from pathlib import Path
from typing import Any

from . import backends, ir


def load_source(source: str, name: str, filename: str) -> types.ModuleType:
    """Execute generated source as module `name`; `filename` need not exist.

    The module is registered in sys.modules (pickling and copying its classes
    work) and its text in linecache (tracebacks and inspect.getsource show it).
    """
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(name)
    module.__file__ = filename
    sys.modules[name] = module
    exec(compile(source, filename, "exec"), module.__dict__)
    return module


def import_generated(
    network: ir.Network, backend: str, folder: Path | None = None
) -> Any:
    """Emit `network` with `backend` and import it; `folder`, if given, also
    receives the source (to read or debug it)."""
    if backend == "keras":
        # torch before TensorFlow where both exist (see archspec.parity).
        with contextlib.suppress(ImportError):
            import torch  # noqa: F401
    ((name, source),) = backends.get(backend).emit(network).items()
    module = f"_archspec_{backend}_{network.module}_{len(sys.modules)}"
    if folder is None:
        return load_source(source, module, f"<archspec {backend}/{name}>")
    path = folder / f"{backend}_{name}"
    path.write_text(source)
    return load_source(source, module, str(path))


def torch_model(network: ir.Network, folder: Path | None = None) -> Any:
    return getattr(import_generated(network, "torch", folder), network.class_name)()


def keras_model(network: ir.Network, folder: Path | None = None) -> Any:
    """The generated Keras model, built for any input size."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    builder = getattr(import_generated(network, "keras", folder), network.module)
    return builder(input_shape=(None, None, network.input.channels))


def keras_layer_weights(model: Any) -> dict[str, list[Any]]:
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}
