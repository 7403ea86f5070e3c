"""The frameworks' side of a comparison: pinning torch and Keras to a device
and to exact float32, calling a Keras model as a graph, float64 Keras, and
giving back the memory of finished comparisons."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from typing import Any

from ..errors import SpecError


def configure(device: str, *, keras: bool = True) -> None:
    """Pin torch (which draws every check's weights) and, with `keras`, Keras
    to `device` and to exact float32 (no TF32 on GPUs). Without `keras`,
    TensorFlow is not imported (5-10 s of a torch,flax check)."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise SpecError("--device cuda: torch sees no CUDA device on this machine")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if not keras:
        return
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


# Up to this many input pixels (batch x height x width) TensorFlow runs a
# comparison eagerly: tracing a graph costs more than it saves over the few
# calls a check makes (EfficientNetV2-S at 67 px: 7.7 s to trace and run, 2 s
# eagerly), and the maps an eager call holds stay small (B7 at 2 x 192 px:
# 0.8 GB).
EAGER_PIXELS = 2 * 192 * 192


def _eager(x: Any) -> bool:
    batch, height, width = x.shape[:3]
    return batch * height * width <= EAGER_PIXELS


def keras_call(model: Any, x: Any, *, training: bool) -> Any:
    """`model(x)`, as a graph on the TensorFlow and JAX backends for all but
    small inputs: called eagerly, a Keras functional model holds every
    intermediate map until it returns (B7 at 600 px: 7.7 GB, against 0.4 GB as
    a graph). Grappler off: its fused kernels round differently from the eager
    ones users run (EfficientNetV2-L's ill-conditioned last stages at 129 px:
    2.9e-2 against 1.4e-2)."""
    import keras

    backend = keras.backend.backend()
    if backend not in ("jax", "tensorflow") or (backend == "tensorflow" and _eager(x)):
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


def keras_input_gradient(model: Any, x: Any, w: Any) -> Any:
    """d(sum(model(x) * w)) / dx on whichever backend Keras runs."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def gradient(tx):
            with tf.GradientTape() as tape:
                tape.watch(tx)
                loss = tf.reduce_sum(model(tx, training=False) * w)
            return tape.gradient(loss, tx)

        if not _eager(x):  # eagerly, the tape holds every map twice over
            gradient = tf.function(gradient)
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


def float64_supported() -> bool:
    """Whether the float64 comparisons can run: on Keras's TensorFlow backend.
    On its JAX and torch backends Keras rounds float64 inputs and constants to
    float32 in places (a float64 Normalization layer on torch: 7.5e-8 off)."""
    import keras

    return keras.backend.backend() == "tensorflow"


@contextlib.contextmanager
def keras_float64() -> Iterator[None]:
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


def exact_constants(model: Any) -> None:
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


def to_numpy(value: Any) -> Any:
    """A Keras tensor as a float64 numpy array."""
    import keras

    return keras.ops.convert_to_numpy(keras.ops.cast(value, "float64"))


def release() -> None:
    """Free the models of pairs no longer referenced: Keras holds every model
    a process builds in its global state (checking B0-B7 in one process grew
    to 11 GB)."""
    import gc
    import sys

    if "keras" in sys.modules:  # not imported for it, where no Keras ran
        sys.modules["keras"].backend.clear_session()
    gc.collect()
    # glibc keeps what was freed in the process; give it back to the machine.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
