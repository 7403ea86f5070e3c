"""Weight files: between the generated backends (`archspec weights convert`) and
from the reference implementations (`archspec weights import`).

Each backend's runtime adapter (its `runtime`: `read` and `write`) knows
its file format:

    torch   a state dict: torch.save's format, or safetensors (by the name)
    keras   model.save_weights's .weights.h5
    flax    a .safetensors file whose keys are the paths of
            nnx.state(model) (`stages.0.0.conv1.conv.kernel`), each array in
            Flax's layout (kernels HWIO, dense (in, out))

Every file is read into the canonical layout (PyTorch's state dict as NumPy
arrays, archspec.weights) and written from it, so a conversion is a reader
and a writer, never a converter per pair of backends: any registered
backend with a runtime adapter takes part. A missing, unexpected
or mis-shaped tensor is an error naming it (exit 2).

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

from . import backends, ir
from .errors import SpecError
from .weights import keras_to_torch


def _torch_first() -> None:
    """torch before TensorFlow (Keras), where both are installed (see
    archspec.parity)."""
    with contextlib.suppress(ImportError):
        import torch  # noqa: F401


@contextlib.contextmanager
def atomic(dst: Path, suffix: str) -> Iterator[str]:
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


def safetensors():
    """safetensors.numpy, or a SpecError naming what to install."""
    try:
        import safetensors.numpy
    except ImportError:
        raise SpecError(
            "safetensors files need the safetensors package: "
            "pip install 'archspec[torch]' (or pip install safetensors)"
        ) from None
    return safetensors.numpy


def load_safetensors(src: Path) -> dict[str, Any]:
    """A .safetensors file as {name: NumPy array}."""
    try:
        return safetensors().load_file(src)
    except SpecError:
        raise
    except Exception as exc:  # a foreign or truncated file
        raise SpecError(f"{src}: not a safetensors file: {exc}") from None


def load_state_dict(src: Path) -> dict[str, Any]:
    """A state dict file, torch.save's or safetensors' (what timm and the model
    hubs ship), as {name: NumPy array}."""
    if src.suffix == ".safetensors":
        return load_safetensors(src)
    try:
        import torch
    except ImportError:
        raise SpecError(
            f"{src}: reading torch.save's files needs torch: pip install "
            "'archspec[torch]' (or give a .safetensors file)"
        ) from None
    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a foreign file
        raise SpecError(f"{src}: not a PyTorch state dict: {exc}") from None
    if not isinstance(state, dict) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise SpecError(f"{src}: expected a state dict (a mapping of tensors)")
    return {k: v.numpy() for k, v in state.items()}


def read_weights(network: ir.Network, backend: str, src: Path) -> dict[str, Any]:
    """A weight file of the generated `backend` model, in the canonical layout
    (a torch state dict of NumPy arrays)."""
    _torch_first()
    return backends.adapter(backend).read(network, src)


def convert_weights(
    network: ir.Network, source: str, src: Path, target: str, dst: Path
) -> int:
    """Convert `src` (from backend `source`) into `dst` for backend `target`,
    through the canonical layout; returns the tensor count."""
    reader, writer = backends.adapter(source), backends.adapter(target)
    _torch_first()
    return writer.write(network, reader.read(network, src), dst)


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
    writer = backends.adapter(backend)
    _torch_first()
    if reference in ("torchvision", "timm"):
        from .references.torchvision import from_torchvision

        state = from_torchvision(network, load_state_dict(src), scheme)
    else:
        from .references import keras_applications

        layers = keras_applications.read_weights(network, scheme, src)
        state = keras_to_torch(network, layers)
    return writer.write(network, state, dst)
