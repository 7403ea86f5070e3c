"""Weight files: between the generated backends (`archspec weights convert`) and
from the reference implementations (`archspec weights import`).

Each backend's file format:

    torch   a state dict: torch.save's format, or safetensors (by the name)
    keras   model.save_weights's .weights.h5
    flax    a .safetensors file whose keys are the paths of
            nnx.state(model) (`stages.0.0.conv1.conv.kernel`), each array in
            Flax's layout (kernels HWIO, dense (in, out))

Every file is read into the canonical layout (PyTorch's state dict as NumPy
arrays, archspec.weights) and written from it, so a conversion is a reader
and a writer, never a converter per pair of backends. A missing, unexpected
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

from . import ir, runtime
from .errors import SpecError
from .weights import flax_to_torch, keras_to_torch, torch_to_flax, torch_to_keras

# The backends whose weight files this module reads and writes.
BACKENDS = ("torch", "keras", "flax")


def _torch_first() -> None:
    """torch before TensorFlow (Keras), where both are installed (see
    archspec.parity)."""
    with contextlib.suppress(ImportError):
        import torch  # noqa: F401


def _supported(backend: str) -> None:
    if backend not in BACKENDS:
        raise SpecError(
            f"backend {backend!r}: archspec reads and writes weight files of "
            f"{', '.join(BACKENDS)} only"
        )


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


def _write(network: ir.Network, state: dict[str, Any], backend: str, dst: Path) -> int:
    """Write a generated-model state dict (NumPy arrays) for `backend`: torch
    weights as a .safetensors file, or else torch.save's format; Keras's
    .weights.h5; Flax's .safetensors. Returns the tensor count."""
    import numpy as np

    _supported(backend)
    if backend == "keras" and not dst.name.endswith(".weights.h5"):
        raise SpecError(f"{dst}: Keras weight files must end in .weights.h5")
    if backend == "flax" and dst.suffix != ".safetensors":
        raise SpecError(
            f"{dst}: Flax weight files are safetensors files; name it *.safetensors"
        )
    if backend == "flax":
        arrays = torch_to_flax(network, state)  # checks every tensor
        with _atomic(dst, ".safetensors") as temp:
            _safetensors().save_file(
                arrays,
                temp,
                metadata={"framework": "flax", "model": network.class_name},
            )
        return len(arrays)
    # Also the check of every tensor's presence and shape, for either backend.
    layers = torch_to_keras(network, state)
    if backend == "torch" and dst.suffix == ".safetensors":
        arrays = {k: np.ascontiguousarray(v) for k, v in state.items()}
        with _atomic(dst, ".safetensors") as temp:
            _safetensors().save_file(arrays, temp)
        return len(state)
    if backend == "torch":
        try:
            import torch
        except ImportError:
            raise SpecError(
                f"{dst}: torch.save's format needs torch: pip install "
                "'archspec[torch]' (or name the output *.safetensors)"
            ) from None
        with _atomic(dst, ".pt") as temp:
            torch.save({k: torch.from_numpy(v) for k, v in state.items()}, temp)
        return len(state)
    _torch_first()
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


def _flax_state(network: ir.Network, src: Path) -> dict[str, Any]:
    """A generated Flax model's .safetensors file as a generated-model state
    dict."""
    try:
        arrays = _safetensors().load_file(src)
    except SpecError:
        raise
    except Exception as exc:  # a foreign or truncated file
        raise SpecError(f"{src}: not a safetensors file: {exc}") from None
    try:
        return flax_to_torch(network, arrays)
    except SpecError as exc:
        why = "; ".join(
            d.message.removeprefix("weights: ") for d in exc.diagnostics.items
        )
        raise SpecError(f"{src}: not Flax weights of {network.title}: {why}") from None


def read_weights(network: ir.Network, backend: str, src: Path) -> dict[str, Any]:
    """A weight file of the generated `backend` model, in the canonical layout
    (a torch state dict of NumPy arrays)."""
    _supported(backend)
    if backend == "torch":
        return _load_state_dict(src)
    if backend == "keras":
        return _generated_keras_state(network, src)
    return _flax_state(network, src)


def convert_weights(
    network: ir.Network, source: str, src: Path, target: str, dst: Path
) -> int:
    """Convert `src` (from backend `source`) into `dst` for backend `target`,
    through the canonical layout; returns the tensor count."""
    _supported(source)
    _supported(target)
    _torch_first()
    return _write(network, read_weights(network, source, src), target, dst)


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
    _supported(backend)
    _torch_first()
    if reference in ("torchvision", "timm"):
        from .references.torchvision import from_torchvision

        state = from_torchvision(network, _load_state_dict(src), scheme)
    else:
        from .references import keras_applications

        layers = keras_applications.read_weights(network, scheme, src)
        state = keras_to_torch(network, layers)
    return _write(network, state, backend, dst)
