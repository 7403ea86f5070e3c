"""Cross-backend parity: the generated PyTorch and Keras models are one function.

For one variant: compile both backends into a scratch folder, import them,
give the PyTorch model random weights and batch-norm statistics, move them to
the Keras model by name (archspec.weights), run both on the same batch (NCHW
vs NHWC) and compare the logits and the feature maps at every stage boundary,
so that a mismatch points at the stage where it starts.

- `tolerance`: what bound each comparison is held to and why, and what
  `archspec check` compares for a variant;
- `calibrate`: random weights and batch-norm statistics that keep the signal
  alive, and the deliberately broken transfer that tests the checker;
- `frameworks`: pinning torch and Keras to a device and to exact float32,
  calling a Keras model as a graph, float64 Keras, releasing memory;
- `sides`: the two models of one variant, through the backends' runtime
  adapters, and their comparisons; `pair`: the default pair, torch,keras.

torch is always imported before TensorFlow: torch's CUDA build segfaults
loading triton in a process that already holds TensorFlow.
"""

from .calibrate import randomize, transpose_kernel
from .frameworks import configure, float64_supported, keras_call, release
from .pair import Pair
from .tolerance import (
    FLOAT64_MAX_SIZE,
    ROUNDING_FACTOR,
    TOLERANCE,
    Comparison,
    Result,
)

__all__ = [
    "FLOAT64_MAX_SIZE",
    "ROUNDING_FACTOR",
    "TOLERANCE",
    "Comparison",
    "Pair",
    "Result",
    "configure",
    "float64_supported",
    "keras_call",
    "randomize",
    "release",
    "transpose_kernel",
]
