"""The Keras backend's runtime adapter: what archspec's tools need to use a
generated Keras model (build a model, move weights in the canonical layout,
run it in eval and train mode and in float64, read and write its weight
files, time it). Imports Keras (torch first, where installed: see
archspec.parity) only when called; the compiler never does.

The canonical layout is PyTorch's state dict as NumPy arrays;
archspec.weights maps it to Keras's layer names and kernel layouts
(torch_to_keras, keras_to_torch). Float64 needs Keras's TensorFlow backend
(archspec.parity.frameworks.float64_supported).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from archspec import convert, ir, runtime
from archspec.errors import SpecError
from archspec.weights import keras_name, keras_to_torch, torch_to_keras


class KerasRuntime(runtime.Adapter):
    name = "keras"
    layout = "NHWC"
    extra = "archspec[keras]"

    def generated(self, network: ir.Network, folder=None) -> Any:
        """The generated builder of keras.Models (`model()`'s kwargs are its:
        `include_top`, `input_shape`, `classes`, ...)."""
        return getattr(
            runtime.import_generated(network, self.name, folder), network.module
        )

    def build(
        self,
        network: ir.Network,
        state: dict[str, Any],
        folder=None,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        **kwargs: Any,
    ) -> Any:
        """A model for any input size holding `state` (canonical layout),
        under the `dtype` policy (float32: Keras's floatx, so float64 inside
        `float64()`, its constants then the doubles of the literals); `run`
        reports its maps at the stem's last layer, each stage's last block
        and each head convolution. The device is Keras's backend's
        (archspec.parity.configure pins it)."""
        import keras

        if dtype != "float32":
            keras.config.set_dtype_policy(dtype)
        try:
            model = self._any_size(network, folder, **kwargs)
        finally:
            if dtype != "float32":
                keras.config.set_dtype_policy("float32")
        self.load(model, network, state)
        if keras.config.floatx() == "float64":
            from archspec.parity.frameworks import exact_constants

            exact_constants(model)
        maps = [
            ("stem", network.stem[-1].name),
            *((stage.name, stage.blocks[-1].name) for stage in network.stages),
            *((x.name, x.name) for x in network.head if isinstance(x, ir.Conv)),
        ]
        model._archspec_wheres = [where for where, _ in maps]
        model._archspec_features = features(
            model, [keras_name(layer) for _, layer in maps]
        )
        return model

    def _any_size(self, network: ir.Network, folder=None, **kwargs: Any) -> Any:
        """A model for any input size, on Keras's TensorFlow backend unless
        KERAS_BACKEND says otherwise."""
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        kwargs.setdefault("input_shape", (None, None, network.input.channels))
        return self.model(network, folder, **kwargs)

    def load(self, model: Any, network: ir.Network, state: dict[str, Any]) -> None:
        """Every weight layer's arrays, in the model's floatx."""
        import keras
        import numpy as np

        dtype = np.float64 if keras.config.floatx() == "float64" else np.float32
        for name, arrays in torch_to_keras(network, state).items():
            model.get_layer(name).set_weights([a.astype(dtype) for a in arrays])

    def state(self, model: Any, network: ir.Network) -> dict[str, Any]:
        return keras_to_torch(network, runtime.keras_layer_weights(model))

    def float64(self) -> contextlib.AbstractContextManager[None]:
        """float64 as Keras's dtype policy and floatx."""
        from archspec.parity.frameworks import keras_float64

        return keras_float64()

    def run(
        self, model: Any, x: Any, *, train: bool = False, maps: bool = True
    ) -> dict[str, Any]:
        """{where: map} at the stem, each stage and each head convolution,
        then {"logits": ...} (only the logits without `maps`), for the NCHW
        NumPy batch x, as NHWC float64 NumPy arrays, of a model from `build`.
        train: batch statistics, dropout and drop path off; the model's
        weights and statistics are put back afterwards."""
        from archspec.parity.frameworks import keras_call, to_numpy

        saved = model.get_weights() if train else None
        if train:
            deterministic(model)
        try:
            out = keras_call(
                model._archspec_features, x.transpose(0, 2, 3, 1), training=train
            )
        finally:
            if saved is not None:
                model.set_weights(saved)
        found = dict(zip([*model._archspec_wheres, "logits"], out, strict=True))
        if not maps:
            return {"logits": to_numpy(found["logits"])}
        return {where: to_numpy(value) for where, value in found.items()}

    def input_gradient(self, model: Any, x: Any, w: Any) -> Any:
        """d(sum(logits * w)) / dx at the NCHW batch x (eval mode), NHWC."""
        from archspec.parity.frameworks import keras_input_gradient

        return keras_input_gradient(model, x.transpose(0, 2, 3, 1), w)

    def float64_supported(self) -> bool:
        """On Keras's TensorFlow backend only (frameworks.float64_supported)."""
        from archspec.parity.frameworks import float64_supported

        return float64_supported()

    # Weight files: model.save_weights's .weights.h5.

    def read(self, network: ir.Network, src: Path) -> dict[str, Any]:
        """A generated Keras model's .weights.h5 in the canonical layout."""
        with tempfile.TemporaryDirectory(prefix="archspec-weights-") as scratch:
            model = self._any_size(network, Path(scratch))
            try:
                model.load_weights(src)
            # Keras raises several kinds of error for a mismatched file.
            except Exception as exc:
                raise SpecError(
                    f"{src}: not weights of {network.title}: {exc}"
                ) from None
            return self.state(model, network)

    def write(self, network: ir.Network, state: dict[str, Any], dst: Path) -> int:
        """`state` as the generated model's .weights.h5; returns the tensor
        count."""
        if not dst.name.endswith(".weights.h5"):
            raise SpecError(f"{dst}: Keras weight files must end in .weights.h5")
        layers = torch_to_keras(network, state)  # checks every tensor
        with tempfile.TemporaryDirectory(prefix="archspec-weights-") as scratch:
            model = self._any_size(network, Path(scratch))
            for name, arrays in layers.items():
                model.get_layer(name).set_weights(arrays)
            with convert.atomic(dst, ".weights.h5") as temp:
                model.save_weights(temp)
        return sum(len(a) for a in layers.values())

    # `archspec profile`: the process is this backend's alone.

    def configure(self, device: str, threads: int | None = None) -> None:
        """Check the device exists and pin Keras's backend to it (threads:
        the TF_NUM_* variables `archspec profile` sets)."""
        from archspec import parity

        parity.configure(device)

    def forward(
        self, network: ir.Network, folder: Path, *, device: str, dtype: str, batch: int
    ) -> Callable[[], None]:
        """The eval-mode forward (predict_on_batch) of a freshly initialised
        model in the `dtype` policy on one random batch, as a callable."""
        import keras
        import numpy as np

        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(dtype)
        try:
            model = self._any_size(network, folder)
        finally:
            keras.config.set_dtype_policy(previous)
        size = network.input.resolution
        x = np.random.default_rng(0).random(
            (batch, size, size, network.input.channels), dtype=np.float32
        )
        x = keras.ops.convert_to_tensor(x, dtype=dtype)

        def forward() -> None:
            keras.ops.convert_to_numpy(model.predict_on_batch(x))

        return forward

    def free_memory(self, device: str) -> int | None:
        """Bytes free on the GPU, as torch's CUDA runtime sees them (None on
        the CPU or without torch)."""
        if device != "cuda":
            return None
        try:
            import torch
        except ImportError:
            return None
        return torch.cuda.mem_get_info()[0]

    def memory_start(self, device: str) -> None:
        """The GPU peak is not measured (an allocator outside torch's)."""

    def memory_peak(self, device: str) -> None:
        return None

    def release(self, device: str) -> None:
        import keras

        keras.backend.clear_session()

    def versions(self, device: str) -> dict[str, Any]:
        """torch's (imported before Keras by `configure`), then Keras's."""
        import keras

        from archspec import backends

        info = backends.adapter("torch").versions(device)
        info["keras"] = keras.__version__
        info["keras_backend"] = keras.backend.backend()
        return info


def features(model: Any, prefixes: list[str]) -> Any:
    """A Keras model returning the maps at `prefixes` (the last 4-D layer
    named `prefix` or `prefix_...`) and the logits."""
    import keras

    outputs = [
        [
            layer
            for layer in model.layers
            if (layer.name == prefix or layer.name.startswith(f"{prefix}_"))
            and len(layer.output.shape) == 4
        ][-1].output
        for prefix in prefixes
    ]
    return keras.Model(model.input, [*outputs, model.outputs[0]])


def deterministic(model: Any) -> None:
    """Dropout and drop path off in a Keras model (train mode without
    randomness)."""
    for layer in model.layers:
        if hasattr(layer, "rate"):  # dropout, drop path included
            layer.rate = 0.0
