"""`archspec weights convert`: a torch state dict <-> Keras .weights.h5, by name."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from . import ir, runtime
from .errors import SpecError
from .weights import keras_to_torch, torch_to_keras


def convert_weights(network: ir.Network, source: str, src: Path, dst: Path) -> int:
    """Convert `src` (from backend `source`) into `dst`; returns the tensor count.

    The output is written to a temporary file beside `dst` and renamed, so a
    failure never leaves a half-written file.
    """
    import torch  # before Keras, always

    if source == "torch" and not dst.name.endswith(".weights.h5"):
        raise SpecError(f"{dst}: Keras weight files must end in .weights.h5")
    with tempfile.TemporaryDirectory(prefix="archspec-weights-") as scratch:
        model = runtime.keras_model(network, Path(scratch))
        fd, temp = tempfile.mkstemp(
            dir=dst.parent or ".",
            prefix=f".{dst.name}.",
            suffix=".weights.h5" if source == "torch" else ".pt",
        )
        os.close(fd)
        try:
            if source == "torch":
                state = torch.load(src, map_location="cpu", weights_only=True)
                if not isinstance(state, dict):
                    raise SpecError(
                        f"{src}: expected a state dict (a mapping of tensors)"
                    )
                layers = torch_to_keras(
                    network, {k: v.numpy() for k, v in state.items()}
                )
                for name, arrays in layers.items():
                    model.get_layer(name).set_weights(arrays)
                model.save_weights(temp)
                count = sum(len(a) for a in layers.values())
            else:
                try:
                    model.load_weights(src)
                # Keras raises several kinds of error for a mismatched file.
                except Exception as exc:
                    raise SpecError(
                        f"{src}: not weights of {network.title}: {exc}"
                    ) from None
                state = keras_to_torch(network, runtime.keras_layer_weights(model))
                torch.save({k: torch.from_numpy(v) for k, v in state.items()}, temp)
                count = len(state)
            os.replace(temp, dst)
        finally:
            Path(temp).unlink(missing_ok=True)
    return count
