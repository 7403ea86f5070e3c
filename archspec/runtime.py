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


class Adapter:
    """The base of the backends' runtime adapters (a backend's `runtime`;
    docs/backends.md lists what one provides): a model from the generated
    module of the backend named `name`."""

    name: str

    def generated(self, network: ir.Network, folder: Path | None = None) -> Any:
        """What the generated module builds models with: its model class."""
        return getattr(import_generated(network, self.name, folder), network.class_name)

    def model(
        self, network: ir.Network, folder: Path | None = None, **kwargs: Any
    ) -> Any:
        """A freshly initialised model (kwargs: the generated constructor's)."""
        return self.generated(network, folder)(**kwargs)


def torch_model(network: ir.Network, folder: Path | None = None) -> Any:
    return getattr(import_generated(network, "torch", folder), network.class_name)()


def keras_model(network: ir.Network, folder: Path | None = None) -> Any:
    """The generated Keras model, built for any input size."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    builder = getattr(import_generated(network, "keras", folder), network.module)
    return builder(input_shape=(None, None, network.input.channels))


def flax_arrays(model: Any) -> dict[str, Any]:
    """{state path: NumPy array} of a Flax model's weights and batch-norm
    statistics (its parameters and batch stats; not its RNG state)."""
    import numpy as np
    from flax import nnx

    state = nnx.state(model, (nnx.Param, nnx.BatchStat))
    return {
        ".".join(str(k) for k in path): np.asarray(variable.get_value())
        for path, variable in nnx.to_flat_state(state)
    }


def set_flax_arrays(model: Any, arrays: dict[str, Any]) -> None:
    """Give a Flax model the arrays of `flax_arrays`' keys; every weight and
    statistic must be given, with its own shape (dtype: the array's), and
    nothing else: a load is one-to-one, so a model that loaded has exactly the
    tensors (and parameter count) of the weights."""
    import jax.numpy as jnp
    from flax import nnx

    from .errors import SpecError

    state = nnx.state(model, (nnx.Param, nnx.BatchStat))
    missing, known = [], set()
    for path, variable in nnx.to_flat_state(state):
        key = ".".join(str(k) for k in path)
        known.add(key)
        if key not in arrays:
            missing.append(key)
            continue
        value = jnp.asarray(arrays[key])
        if value.shape != variable.get_value().shape:
            raise SpecError(
                f"weights: {key!r} has shape {tuple(value.shape)}; the model's "
                f"is {tuple(variable.get_value().shape)}"
            )
        variable.set_value(value)
    if missing:
        raise SpecError(f"weights: missing Flax variables {missing[:5]}")
    unexpected = sorted(set(arrays) - known)
    if unexpected:
        raise SpecError(f"weights: the model has no Flax variables {unexpected[:5]}")
    nnx.update(model, state)


def keras_layer_weights(model: Any) -> dict[str, list[Any]]:
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}
