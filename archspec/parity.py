"""Cross-backend parity: the generated PyTorch and Keras models are one function.

For one variant: compile both backends into a scratch folder, import them,
give the PyTorch model random weights and batch-norm statistics, move them to
the Keras model by name (archspec.weights), run both on the same batch (NCHW
vs NHWC) and compare the logits and the feature maps at every stage boundary,
so that a mismatch points at the stage where it starts.

torch is always imported before TensorFlow: torch's CUDA build segfaults
loading triton in a process that already holds TensorFlow.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ir, runtime
from .errors import SpecError
from .weights import keras_name, torch_to_keras

# One place for the tolerances: relative max error of the logits,
# max |torch - keras| / max |torch|.
#
# float32: each framework's own float32 rounding, measured against a float64
# run of the same weights (B7, 600x600, calibrated random weights):
#   torch float32 vs float64       7.8e-6  (B2: 5.1e-6)
#   Keras/TF float32 vs float64    1.8e-5  (B2: 8.4e-6)
#   Keras vs torch                 2.6e-5  (B2: 1.3e-5)
# So 1e-5 holds for B0, B1 and B4 but cannot hold between two float32
# implementations of the deeper variants; 5e-5 is about twice the worst seen.
# (Against its own reference, each backend stays within 1e-5: tests/
# test_torch_backend.py and tests/test_keras_backend.py.)
#
# Deeper networks round more. Measured, torch float32 against float64 on the
# same weights and batch: ResNet-101 logits at 64px 4.9e-5, ResNet-152
# (Keras's v1) at 96px 3.5e-4. So every float32 comparison is held to the
# larger of the bound here and ROUNDING_FACTOR times torch's own float32 error
# against float64, measured on the same batch. Two float32 results can differ
# by the sum of their own errors, and TensorFlow's was up to 2.3x torch's (B7,
# above): 1 + 2.3 < 4. Measured worst so far: SE-ResNet-101 at 65px, Keras vs
# torch 2.3x torch's own error. But not always: EfficientNetV2-M at 129px
# (ill-conditioned there: its last stage's maps reach 1e3), TensorFlow's own
# error 1.1e-4 with one thread (7e-5 with two), torch's 2.5e-5, the two
# float64 copies 1e-13 apart. So a comparison over that bound asks for
# Keras's own error too (a float64 run of its model) and is held to
# ROUNDING_FACTOR times the larger. A broken transfer is off by ~100%, far
# beyond either.
#
# bfloat16 keeps 8 bits of mantissa (2^-8 = 3.9e-3 per rounding) and the two
# frameworks round in different places (Keras's bfloat16 policy also rounds the
# preprocessing and batch norm). Measured on B0 against float32: torch bfloat16
# 4.6%, Keras bfloat16 13%, Keras vs torch 9.7%. The bound of 0.2 still fails a
# broken transfer, which is off by ~40% at the logits.
#
# float64: training mode and input gradients are compared on float64 copies of
# both models (same weights), where the frameworks agree to 1e-14. In float32
# neither has a bound that a broken model would fail: batch statistics over
# the few pixels of a deep stage turn rounding into errors of order one
# (MobileNetV3-Large-0.75 at 64px: torch's own float32 train-mode logits 30%
# off float64), and ReLU, max pooling and hardswish make input gradients
# discontinuous, so rounding flips branches (the same network: one hardswish
# flip put Keras's float32 gradient 2.4e-3 off torch's while torch's own error
# was 2e-5; SE-ResNet-50's float32 gradients differed by 13%). The one float64
# difference seen: ATen's float64 hardsigmoid backward uses the float constant
# 1/6 (3e-8 relative), 4e-8 at the input. Hence 1e-6.
# ("gradient": parameter gradients against torchvision, tests/test_torch_backend.py.)
TOLERANCE = {"float32": 5e-5, "bfloat16": 0.2, "gradient": 5e-5, "float64": 1e-6}
ROUNDING_FACTOR = 4.0
# Training mode and input gradients run on float64 copies at most this size:
# they test the arithmetic, which a smaller image covers, and float64 training
# passes of B7 at 600 px took more than the 24 GB of a CI machine.
FLOAT64_MAX_SIZE = 224


@dataclass
class Comparison:
    where: str
    max_abs: float
    max_rel: float


@dataclass
class Result:
    network: ir.Network
    size: int
    mode: str  # "eval", "train" or "input gradient"
    rows: list[Comparison] = field(default_factory=list)
    tolerance: float = 0.0

    @property
    def logits(self) -> Comparison:
        return self.rows[-1]

    @property
    def ok(self) -> bool:
        return self.logits.max_rel <= self.tolerance

    @property
    def first_divergence(self) -> str | None:
        """The first compared point whose error is over the tolerance."""
        return next((r.where for r in self.rows if r.max_rel > self.tolerance), None)


def randomize(model: Any, size: int, seed: int = 0) -> None:
    """Random weights and batch-norm statistics that keep the signal alive.

    Random running statistics alone let activations die out or explode over
    dozens of blocks, until every input gives the same logits and a comparison
    proves nothing. So the statistics come from one training-mode pass over
    random data at `size` (the resolution the model will run at; statistics
    from another size mis-scale them), then get perturbed, as do the affine
    parameters.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    with torch.no_grad():
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: exactly this batch's statistics
            m.weight.uniform_(0.5, 1.5, generator=generator)
            m.bias.normal_(0, 0.1, generator=generator)
        param = next(model.parameters())
        # Calibrate on what the model expects: 0-255 images if it normalises them.
        if hasattr(model, "preprocess"):
            x = torch.rand(2, 3, size, size, generator=generator) * 255
        else:
            x = torch.randn(2, 3, size, size, generator=generator)
        model.train()
        model(x.to(param.device, param.dtype))
        model.eval()
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
            std = m.running_var.sqrt()
            m.running_mean.add_(0.1 * std * torch.randn(std.shape, generator=generator))
            m.running_var.mul_(
                torch.empty(std.shape).uniform_(0.8, 1.25, generator=generator)
            )


def _error(where: str, ours: Any, reference: Any) -> Comparison:
    import numpy as np

    a, b = np.asarray(ours, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    diff = float(np.abs(a - b).max())
    return Comparison(where, diff, diff / max(float(np.abs(b).max()), 1e-30))


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
        features = _features(keras_model, boundaries)

        if dtype == "bfloat16":
            model = model.to(torch.bfloat16)
        model = model.to(device)
        # The yardstick of float32 comparisons (see TOLERANCE), made before any
        # comparison can touch the model's batch-norm statistics.
        float64 = _float64_copy(model, network, folder) if dtype == "float32" else None
        return cls(network, model, keras_model, features, boundaries, float64, folder)

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
        x = _images(net, np.random.default_rng(seed), batch, size)
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
            m.register_forward_hook(lambda _m, _i, out: captured.append(out))
            for m in modules
        ]
        try:
            torch_model.train(train)
            if train:  # batch statistics, but no randomness: drop path and dropout off
                _deterministic_training(torch_model, keras_model)
            with torch.no_grad():
                logits = torch_model(torch_x)
        finally:
            for hook in hooks:
                hook.remove()
            torch_model.eval()
        if exact:
            tolerance = TOLERANCE["float64"]
        elif _dtype(param) == "float32":

            @torch.no_grad()
            def forward(model: Any, x: Any) -> Any:
                return model(x)

            own = self._own_rounding(forward, torch_x, logits)
            tolerance = max(TOLERANCE["float32"], ROUNDING_FACTOR * own)
        else:
            tolerance = TOLERANCE[_dtype(param)]
        with _keras_float64() if exact else contextlib.nullcontext():
            keras_out = keras_call(
                keras_features, x.transpose(0, 2, 3, 1), training=train
            )
        if train:
            torch_model.load_state_dict(saved_torch)
            keras_model.set_weights(saved_keras)
        result = Result(net, size, "train" if train else "eval", tolerance=tolerance)
        for (where, *_), ours, theirs in zip(
            self.boundaries, captured, keras_out, strict=False
        ):
            ours = ours.double().cpu().numpy().transpose(0, 2, 3, 1)
            result.rows.append(_error(where, _numpy(theirs), ours))
        result.rows.append(
            _error("logits", _numpy(keras_out[-1]), logits.double().cpu().numpy())
        )
        if not result.ok and not exact and self.float64 is not None:
            # A second opinion before failing: TensorFlow's own rounding can be
            # several times torch's (see ROUNDING_FACTOR).
            own = self._keras_own_rounding(x, keras_out[-1])
            result.tolerance = max(result.tolerance, ROUNDING_FACTOR * own)
        return result

    def compare_input_gradients(
        self, size: int, *, batch: int = 2, seed: int = 0
    ) -> Result:
        """d(sum(logits * w)) / d(input) through float64 copies of both models
        (eval mode; see TOLERANCE for why float64). Float32 pairs only."""
        import numpy as np
        import torch

        if self.float64 is None:
            raise ValueError("input gradients are compared for float32 pairs only")
        net = self.network
        rng = np.random.default_rng(seed)
        x = _images(net, rng, batch, size).astype(np.float64)
        w = rng.standard_normal((batch, net.classifier.out_features))

        param = next(self.float64.parameters())
        torch_x = torch.from_numpy(x).to(param.device).requires_grad_(True)
        (self.float64(torch_x) * torch.from_numpy(w).to(torch_x)).sum().backward()
        ours = torch_x.grad.cpu().numpy().transpose(0, 2, 3, 1)
        keras_model = self._keras_float64()[0]
        with _keras_float64():
            theirs = _keras_input_gradient(keras_model, x.transpose(0, 2, 3, 1), w)
        result = Result(net, size, "input gradient", tolerance=TOLERANCE["float64"])
        result.rows.append(_error("d logits / d input", theirs, ours))
        return result

    def _keras_float64(self) -> tuple[Any, Any]:
        """A float64 copy of the Keras model and its feature model."""
        import numpy as np

        if self._keras64 is None:
            with _keras_float64():
                model = runtime.keras_model(self.network, self.folder)
            model.set_weights(
                [w.astype(np.float64) for w in self.keras_model.get_weights()]
            )
            _exact_constants(model)
            self._keras64 = (model, _features(model, self.boundaries))
        return self._keras64

    def _keras_own_rounding(self, x: Any, float32: Any) -> float:
        """Keras's own float32 error on the NCHW batch `x`: its float64 copy
        against its float32 logits `float32`. 0 where float64 cannot run."""
        import numpy as np

        if not float64_supported():
            return 0.0
        model = self._keras_float64()[0]
        with _keras_float64():
            exact = keras_call(
                model, x.transpose(0, 2, 3, 1).astype(np.float64), training=False
            )
        return _error("float64", _numpy(float32), _numpy(exact)).max_rel

    def _own_rounding(self, run: Callable, x: Any, float32: Any) -> float:
        """torch's own float32 error: `run(model, x)` on the float64 copy of
        the model against `float32`."""
        exact = run(self.float64, x.double())
        return _error("float64", float32.cpu().numpy(), exact.cpu().numpy()).max_rel


@contextlib.contextmanager
def _keras_float64() -> Iterator[None]:
    """float64 as Keras's dtype policy and floatx: else its Input layer (and,
    on the torch backend, its conversion of a float64 batch) rounds to float32."""
    import keras

    policy, floatx = keras.config.dtype_policy(), keras.config.floatx()
    keras.config.set_dtype_policy("float64")
    keras.config.set_floatx("float64")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(policy)
        keras.config.set_floatx(floatx)


def _exact_constants(model: Any) -> None:
    """Keras turns the Python floats of a Rescaling's scale and offset and a
    Normalization's mean and variance into float32 constants whatever the
    dtype policy (7e-8 off, as much as float32 rounding): give a float64
    model the doubles torch's float64 copy holds."""
    import keras
    import numpy as np

    for layer in model.layers:
        if isinstance(layer, keras.layers.Rescaling):
            layer.scale = np.float64(layer.scale)
            layer.offset = np.float64(layer.offset)
        elif isinstance(layer, keras.layers.Normalization) and (
            layer.input_mean is not None
        ):
            layer.input_mean = np.asarray(layer.input_mean, np.float64)
            layer.input_variance = np.asarray(layer.input_variance, np.float64)
            layer.build(layer.input.shape)


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


def _deterministic_training(torch_model: Any, keras_model: Any) -> None:
    """Drop path and dropout off in both models."""
    import torch

    for m in torch_model.modules():
        if hasattr(m, "drop_path") and isinstance(m.drop_path, float):
            m.drop_path = 0.0
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    for layer in keras_model.layers:
        if hasattr(layer, "rate"):  # Dropout layers, drop path included
            layer.rate = 0.0


def _features(keras_model: Any, boundaries: list[tuple[str, str | None, str]]) -> Any:
    """A Keras model returning the maps at `boundaries` and the logits."""
    import keras

    outputs = [_last_map(keras_model, prefix) for *_, prefix in boundaries]
    return keras.Model(keras_model.inputs, [*outputs, keras_model.outputs[0]])


def keras_call(model: Any, x: Any, *, training: bool) -> Any:
    """`model(x)`, as a graph on the TensorFlow and JAX backends: called eagerly, a
    Keras functional model holds every intermediate map until it returns (B7
    at 600 px: 7.7 GB, against 0.4 GB as a graph). Grappler off: its fused
    kernels round differently from the eager ones users run (EfficientNetV2-L's
    ill-conditioned last stages at 129 px: 2.9e-2 against 1.4e-2)."""
    import keras

    backend = keras.backend.backend()
    if backend not in ("jax", "tensorflow"):
        return model(x, training=training)
    graphs = model.__dict__.setdefault("_archspec_graphs", {})
    if backend == "jax":
        # One XLA program per input shape: called eagerly, every layer's op
        # compiles on its own (B0 on a GPU: minutes). Updated batch-norm
        # statistics of a training pass are dropped, as callers restore them.
        import jax

        if training not in graphs:
            graphs[training] = jax.jit(
                lambda trainable, other, t: model.stateless_call(
                    trainable, other, t, training=training
                )[0]
            )
        return graphs[training](
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            x,
        )
    import tensorflow as tf

    key = (training, str(x.dtype), x.shape[-1])
    if key not in graphs:
        # One graph for every batch and image size: tracing a deep Keras model
        # costs seconds (EfficientNetV2-L: 5 s), and check runs two sizes.
        spec = tf.TensorSpec((None, None, None, x.shape[-1]), x.dtype)
        graphs[key] = tf.function(
            lambda t: model(t, training=training), input_signature=[spec]
        )
    options = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    # Each model traces once, but TensorFlow counts the first traces of many
    # functions as "excessive retracing" and warns at length.
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        return graphs[key](x)
    finally:
        logger.setLevel(level)
        tf.config.optimizer.set_experimental_options(options)


def _images(net: ir.Network, rng: Any, batch: int, size: int) -> Any:
    """A float32 NCHW batch in the model's input range: images in 0-255 when the
    model normalises inside, else normalised ones."""
    import numpy as np

    shape = (batch, net.input.channels, size, size)
    if net.input.preprocess:
        return rng.uniform(0, 255, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def _dtype(param: Any) -> str:
    return "bfloat16" if "bfloat16" in str(param.dtype) else "float32"


def _numpy(value: Any) -> Any:
    import keras

    return keras.ops.convert_to_numpy(keras.ops.cast(value, "float64"))


def _last_map(model: Any, name: str) -> Any:
    """The output of the last 4-D layer named `name` or `name_...`."""
    layer = [
        lay
        for lay in model.layers
        if (lay.name == name or lay.name.startswith(f"{name}_"))
        and len(lay.output.shape) == 4
    ][-1]
    return layer.output


def _keras_input_gradient(model: Any, x: Any, w: Any) -> Any:
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function  # eagerly, the tape holds every map twice over
        def gradient(tx):
            with tf.GradientTape() as tape:
                tape.watch(tx)
                loss = tf.reduce_sum(model(tx, training=False) * w)
            return tape.gradient(loss, tx)

        return gradient(tf.constant(x)).numpy()
    if backend == "torch":
        import torch

        tx = torch.tensor(x, requires_grad=True)
        (model(tx, training=False) * torch.from_numpy(w)).sum().backward()
        return tx.grad.numpy()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def loss(value):
            return jnp.sum(model(value, training=False) * w)

        return jax.device_get(jax.grad(loss)(jnp.asarray(x)))
    raise RuntimeError(f"no input gradient for the Keras backend {backend!r}")


def release() -> None:
    """Free the models of pairs no longer referenced: Keras holds every model
    a process builds in its global state (checking B0-B7 in one process grew
    to 11 GB)."""
    import gc

    import keras

    keras.backend.clear_session()
    gc.collect()
    # glibc keeps what was freed in the process; give it back to the machine.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def float64_supported() -> bool:
    """Whether the float64 comparisons can run: on Keras's TensorFlow backend.
    On its JAX and torch backends Keras rounds float64 inputs and constants to
    float32 in places (a float64 Normalization layer on torch: 7.5e-8 off)."""
    import keras

    return keras.backend.backend() == "tensorflow"


def configure(device: str) -> None:
    """Pin both frameworks to `device` and to exact float32 (no TF32 on GPUs)."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise SpecError("--device cuda: torch sees no CUDA device on this machine")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # TensorFlow's C++ notices (oneDNN, and grappler's on float64 graphs) are
    # not the comparison's business; errors still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # oneDNN's own allocator keeps the peak of every pass for the life of the
    # process (8 GB after one of B7 at 600 px); the system's gives it back.
    os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
        if device == "cpu":
            tf.config.set_visible_devices([], "GPU")
    elif backend == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
        if device == "cpu":
            jax.config.update("jax_platforms", "cpu")


def transpose_kernel(layer: str) -> Callable[[dict[str, list[Any]]], None]:
    """A deliberately broken transfer: swap the spatial axes of one kernel."""

    def corrupt(layers: dict[str, list[Any]]) -> None:
        if layer not in layers:
            raise SpecError(f"--corrupt: no layer {layer!r} with weights")
        kernel = layers[layer][0]
        layers[layer][0] = kernel.transpose(1, 0, *range(2, kernel.ndim)).copy()

    return corrupt
