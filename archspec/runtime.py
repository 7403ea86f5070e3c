"""Compile a network and import the generated module, for the tools that run it
(`archspec check`, `archspec weights convert`). The compiler never uses this."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from . import backends, ir


def import_generated(network: ir.Network, backend: str, folder: Path) -> Any:
    """Emit `network` with `backend` into `folder` and import it as a module."""
    if backend == "keras":
        import torch  # noqa: F401  (torch before TensorFlow: see archspec.parity)

        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    ((name, source),) = backends.get(backend).emit(network).items()
    path = folder / f"{backend}_{name}"
    path.write_text(source)
    module_name = f"_archspec_{backend}_{network.module}_{len(sys.modules)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def torch_model(network: ir.Network, folder: Path) -> Any:
    return getattr(import_generated(network, "torch", folder), network.class_name)()


def keras_model(network: ir.Network, folder: Path) -> Any:
    """The generated Keras model, built for any input size."""
    builder = getattr(import_generated(network, "keras", folder), network.module)
    return builder(input_shape=(None, None, network.input.channels))


def keras_layer_weights(model: Any) -> dict[str, list[Any]]:
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}
