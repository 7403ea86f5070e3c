"""Weight files: between the generated backends (`archspec weights convert`) and
from the reference implementations (`archspec weights import`).

Every output is written to a temporary file beside its target and renamed,
so a failure never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import ir, runtime
from .errors import SpecError
from .weights import keras_to_torch, torch_to_keras


@contextlib.contextmanager
def _atomic(dst: Path, suffix: str) -> Iterator[str]:
    """A temporary path beside `dst`, renamed onto it if the block succeeds."""
    fd, temp = tempfile.mkstemp(
        dir=dst.parent or ".", prefix=f".{dst.name}.", suffix=suffix
    )
    os.close(fd)
    try:
        yield temp
        os.replace(temp, dst)
    finally:
        Path(temp).unlink(missing_ok=True)


def _safetensors():
    try:
        import safetensors.numpy
    except ImportError:
        raise SpecError(
            "safetensors files need the safetensors package: "
            "pip install 'archspec[torch]' (or pip install safetensors)"
        ) from None
    return safetensors.numpy


def _load_state_dict(src: Path) -> dict[str, Any]:
    """A state dict file, torch.save's or safetensors' (what timm and the model
    hubs ship), as {name: NumPy array}."""
    if src.suffix == ".safetensors":
        try:
            return _safetensors().load_file(src)
        except SpecError:
            raise
        except Exception as exc:  # a foreign or truncated file
            raise SpecError(f"{src}: not a safetensors file: {exc}") from None
    import torch

    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a foreign file
        raise SpecError(f"{src}: not a PyTorch state dict: {exc}") from None
    if not isinstance(state, dict) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise SpecError(f"{src}: expected a state dict (a mapping of tensors)")
    return {k: v.numpy() for k, v in state.items()}


def _write(network: ir.Network, state: dict[str, Any], backend: str, dst: Path) -> int:
    """Write a generated-model state dict (NumPy arrays) for `backend`: torch
    weights as a .safetensors file, or else torch.save's format."""
    import numpy as np
    import torch

    if backend == "keras" and not dst.name.endswith(".weights.h5"):
        raise SpecError(f"{dst}: Keras weight files must end in .weights.h5")
    # Also the check of every tensor's presence and shape, for either backend.
    layers = torch_to_keras(network, state)
    if backend == "torch" and dst.suffix == ".safetensors":
        arrays = {k: np.ascontiguousarray(v) for k, v in state.items()}
        with _atomic(dst, ".safetensors") as temp:
            _safetensors().save_file(arrays, temp)
        return len(state)
    if backend == "torch":
        with _atomic(dst, ".pt") as temp:
            torch.save({k: torch.from_numpy(v) for k, v in state.items()}, temp)
        return len(state)
    with tempfile.TemporaryDirectory(prefix="archspec-weights-") as scratch:
        model = runtime.keras_model(network, Path(scratch))
        for name, arrays in layers.items():
            model.get_layer(name).set_weights(arrays)
        with _atomic(dst, ".weights.h5") as temp:
            model.save_weights(temp)
    return sum(len(a) for a in layers.values())


def _generated_keras_state(network: ir.Network, src: Path) -> dict[str, Any]:
    """A generated Keras model's .weights.h5 as a generated-model state dict."""
    with tempfile.TemporaryDirectory(prefix="archspec-weights-") as scratch:
        model = runtime.keras_model(network, Path(scratch))
        try:
            model.load_weights(src)
        # Keras raises several kinds of error for a mismatched file.
        except Exception as exc:
            raise SpecError(f"{src}: not weights of {network.title}: {exc}") from None
        return keras_to_torch(network, runtime.keras_layer_weights(model))


def convert_weights(network: ir.Network, source: str, src: Path, dst: Path) -> int:
    """Convert `src` (from backend `source`) into `dst`; returns the tensor count."""
    import torch  # noqa: F401  (before Keras, always)

    if source == "torch":
        return _write(network, _load_state_dict(src), "keras", dst)
    return _write(network, _generated_keras_state(network, src), "torch", dst)


def import_weights(
    network: ir.Network,
    reference: str,
    scheme: str,
    src: Path,
    backend: str,
    dst: Path,
) -> int:
    """A reference implementation's weight file `src`, under the naming `scheme`,
    written as `backend` weights of the generated model; returns the tensor count."""
    import torch  # noqa: F401  (before Keras, always)

    if reference in ("torchvision", "timm"):
        from .references.torchvision import from_torchvision

        state = from_torchvision(network, _load_state_dict(src), scheme)
    else:
        from .references import keras_applications

        layers = keras_applications.read_weights(network, scheme, src)
        state = keras_to_torch(network, layers)
    return _write(network, state, backend, dst)
