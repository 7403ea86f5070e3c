"""The torch,keras pair of one variant, holding the same weights, and their
comparisons: logits and the maps at every stage boundary.

`archspec check`'s default pair. Other pairs are compared through the
backends' runtime adapters (archspec.parity.sides.Sides), with the same
bounds; this one also runs what only these two frameworks offer here:
a CUDA device (--device), bfloat16 (--dtype), a deliberately broken
transfer (--corrupt, on Keras's layers) and the head convolution's map as
one more boundary, and Keras on its JAX and torch backends (where float64
cannot run). It uses the adapters' pieces for the rest (the Keras feature
model, train mode without randomness)."""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archspec_keras.runtime import deterministic as keras_deterministic
from archspec_keras.runtime import features as keras_features
from archspec_torch.runtime import deterministic as torch_deterministic

from .. import ir, runtime
from ..weights import keras_name, torch_to_keras
from . import tolerance
from .calibrate import randomize
from .frameworks import (
    exact_constants,
    float64_supported,
    keras_call,
    keras_float64,
    keras_input_gradient,
    to_numpy,
)
from .tolerance import Result, error


@dataclass
class Pair:
    """The two generated models of one variant, holding the same weights."""

    network: ir.Network
    torch_model: Any
    keras_model: Any
    keras_features: Any  # a Keras model returning the stage-boundary maps and logits
    # (shown name, torch attribute or None for a stage, Keras layer-name prefix)
    boundaries: list[tuple[str, str | None, str]]
    float64: Any = None  # a float64 copy of torch_model (float32 pairs)
    folder: Path | None = None  # where both modules were compiled
    _keras64: Any = field(default=None, repr=False)  # built on first use

    @classmethod
    def build(
        cls,
        network: ir.Network,
        folder: Path | None,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        seed: int = 0,
        corrupt: Callable[[dict[str, list[Any]]], None] | None = None,
        size: int | None = None,
    ) -> Pair:
        """`size`: the input size the comparisons will use (default: the
        variant's resolution), which the random statistics are calibrated at."""
        import torch  # before keras, always

        torch.manual_seed(seed)
        model = runtime.torch_model(network, folder).eval()
        randomize(model, size or network.input.resolution, seed)
        state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        layers = torch_to_keras(network, state)
        if corrupt is not None:
            corrupt(layers)

        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import keras

        if dtype == "bfloat16":
            keras.config.set_dtype_policy("bfloat16")
        try:
            keras_model = runtime.keras_model(network, folder)
        finally:
            keras.config.set_dtype_policy("float32")
        for name, arrays in layers.items():
            keras_model.get_layer(name).set_weights(arrays)

        # Compared feature maps: after the stem, each stage and a head conv.
        boundaries = [
            ("stem", network.stem[-1].name, keras_name(network.stem[-1].name)),
            *((s.name, None, keras_name(s.blocks[-1].name)) for s in network.stages),
            *(
                ("head", layer.name, keras_name(layer.name))
                for layer in network.head
                if isinstance(layer, ir.Conv)
            ),
        ]
        features = keras_features(keras_model, [p for *_, p in boundaries])

        if dtype == "bfloat16":
            model = model.to(torch.bfloat16)
        model = model.to(device)
        # The yardstick of float32 comparisons (see tolerance), made before any
        # comparison can touch the model's batch-norm statistics.
        float64 = _float64_copy(model, network, folder) if dtype == "float32" else None
        return cls(network, model, keras_model, features, boundaries, float64, folder)

    def check(self, size: int, *, batch: int, modes: bool) -> list[Result]:
        """What `archspec check` compares: eval mode at `size` and the next
        odd size (tolerance.sizes), then, if `modes`, training mode and (for
        float32 pairs) input gradients on the float64 copies."""
        sizes = tolerance.sizes(size)
        found = [self.compare(s, batch=batch) for s in sizes]
        if modes:
            exact_size = tolerance.exact_size(sizes[0])
            found.append(self.compare(exact_size, batch=batch, train=True))
            if self.float64 is not None:
                found.append(self.compare_input_gradients(exact_size, batch=batch))
        return found

    def compare(
        self, size: int, *, batch: int = 2, seed: int = 0, train: bool = False
    ) -> Result:
        """Feature maps and logits of both models on one batch. Training mode
        (batch statistics) runs on the float64 copies of a float32 pair: over
        the few pixels of a deep stage at a small size, batch statistics turn
        float32 rounding into errors of order one (MobileNetV3-Large-0.75 at
        64 px: torch's own float32 train-mode logits 30% off its float64)."""
        import numpy as np
        import torch

        net = self.network
        x = images(net, np.random.default_rng(seed), batch, size)
        exact = train and self.float64 is not None
        if exact:
            # A copy: a training pass updates the batch-norm running statistics.
            torch_model = copy.deepcopy(self.float64)
            keras_model, keras_features = self._keras_float64()
            x = x.astype(np.float64)
        else:
            torch_model = self.torch_model
            keras_model, keras_features = self.keras_model, self.keras_features
        param = next(torch_model.parameters())
        torch_x = torch.from_numpy(x).to(device=param.device, dtype=param.dtype)

        if train:
            # Put Keras's running statistics back afterwards (the frameworks
            # update them differently: unbiased vs biased batch variance) so
            # later comparisons see the same weights; torch's likewise.
            saved_torch = {k: v.clone() for k, v in torch_model.state_dict().items()}
            saved_keras = keras_model.get_weights()
        captured: list[Any] = []
        stages = iter(torch_model.stages)
        modules = [
            next(stages) if attribute is None else getattr(torch_model, attribute)
            for _, attribute, _ in self.boundaries
        ]
        hooks = [
            # A stage of cells hands on (x, prev); the head may then change
            # x in place (NASNet's ReLU): keep a copy.
            m.register_forward_hook(
                lambda _m, _i, out: captured.append(
                    (out[0] if isinstance(out, tuple) else out).clone()
                )
            )
            for m in modules
        ]
        try:
            torch_model.train(train)
            if train:  # batch statistics, but no randomness: drop path and dropout off
                torch_deterministic(torch_model)
                keras_deterministic(keras_model)
            with torch.no_grad():
                logits = torch_model(torch_x)
        finally:
            for hook in hooks:
                hook.remove()
            torch_model.eval()
        dtype = "float64" if exact else _dtype(param)
        if dtype == "float32":

            @torch.no_grad()
            def forward(model: Any, x: Any) -> Any:
                return model(x)

            bound = tolerance.bound(dtype, self._own_rounding(forward, torch_x, logits))
        else:
            bound = tolerance.bound(dtype)
        with keras_float64() if exact else contextlib.nullcontext():
            keras_out = keras_call(
                keras_features, x.transpose(0, 2, 3, 1), training=train
            )
        if train:
            torch_model.load_state_dict(saved_torch)
            keras_model.set_weights(saved_keras)
        result = Result(net, size, "train" if train else "eval", tolerance=bound)
        for (where, *_), ours, theirs in zip(
            self.boundaries, captured, keras_out, strict=False
        ):
            ours = ours.double().cpu().numpy().transpose(0, 2, 3, 1)
            result.rows.append(error(where, to_numpy(theirs), ours))
        result.rows.append(
            error("logits", to_numpy(keras_out[-1]), logits.double().cpu().numpy())
        )
        if dtype == "float32":
            tolerance.second_opinion(
                result, lambda: self._keras_own_rounding(x, keras_out[-1])
            )
        return result

    def compare_input_gradients(
        self, size: int, *, batch: int = 2, seed: int = 0
    ) -> Result:
        """d(sum(logits * w)) / d(input) through float64 copies of both models
        (eval mode; see tolerance for why float64). Float32 pairs only."""
        import numpy as np
        import torch

        if self.float64 is None:
            raise ValueError("input gradients are compared for float32 pairs only")
        net = self.network
        rng = np.random.default_rng(seed)
        x = images(net, rng, batch, size).astype(np.float64)
        w = rng.standard_normal((batch, net.classifier.out_features))

        param = next(self.float64.parameters())
        torch_x = torch.from_numpy(x).to(param.device).requires_grad_(True)
        (self.float64(torch_x) * torch.from_numpy(w).to(torch_x)).sum().backward()
        ours = torch_x.grad.cpu().numpy().transpose(0, 2, 3, 1)
        keras_model = self._keras_float64()[0]
        with keras_float64():
            theirs = keras_input_gradient(keras_model, x.transpose(0, 2, 3, 1), w)
        result = Result(
            net, size, "input gradient", tolerance=tolerance.bound("float64")
        )
        result.rows.append(error("d logits / d input", theirs, ours))
        return result

    def _keras_float64(self) -> tuple[Any, Any]:
        """A float64 copy of the Keras model and its feature model."""
        import numpy as np

        if self._keras64 is None:
            with keras_float64():
                model = runtime.keras_model(self.network, self.folder)
            model.set_weights(
                [w.astype(np.float64) for w in self.keras_model.get_weights()]
            )
            exact_constants(model)
            prefixes = [p for *_, p in self.boundaries]
            self._keras64 = (model, keras_features(model, prefixes))
        return self._keras64

    def _keras_own_rounding(self, x: Any, float32: Any) -> float:
        """Keras's own float32 error on the NCHW batch `x`: its float64 copy
        against its float32 logits `float32`. 0 where float64 cannot run."""
        import numpy as np

        if not float64_supported():
            return 0.0
        model = self._keras_float64()[0]
        with keras_float64():
            exact = keras_call(
                model, x.transpose(0, 2, 3, 1).astype(np.float64), training=False
            )
        return error("float64", to_numpy(float32), to_numpy(exact)).max_rel

    def _own_rounding(self, run: Callable, x: Any, float32: Any) -> float:
        """torch's own float32 error: `run(model, x)` on the float64 copy of
        the model against `float32`."""
        exact = run(self.float64, x.double())
        return error("float64", float32.cpu().numpy(), exact.cpu().numpy()).max_rel


def _float64_copy(model: Any, network: ir.Network, folder: Path | None) -> Any:
    """`model` in float64, built so: its constants (the input normalisation's
    mean and std) are then the doubles of the literals, as in Keras's float64
    copy, not float32-rounded ones (7e-8 apart, which rounds like float32)."""
    import torch

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        exact = runtime.torch_model(network, folder)
    finally:
        torch.set_default_dtype(default)
    exact.load_state_dict(model.state_dict())
    return exact.to(next(model.parameters()).device).eval()


def images(net: ir.Network, rng: Any, batch: int, size: int) -> Any:
    """A float32 NCHW batch in the model's input range: images in 0-255 when the
    model normalises inside, else normalised ones."""
    import numpy as np

    shape = (batch, net.input.channels, size, size)
    if net.input.preprocess:
        return rng.uniform(0, 255, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def _dtype(param: Any) -> str:
    return "bfloat16" if "bfloat16" in str(param.dtype) else "float32"
