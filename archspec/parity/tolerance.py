"""The tolerance policy: what bound a comparison is held to, and why.

A comparison's verdict is the relative max error of the logits,
max |torch - keras| / max |torch|, against its bound (`Result.tolerance`).
The feature maps at the stage boundaries are compared too, to say where a
difference starts (`Result.first_divergence`).

float32: each framework's own float32 rounding, measured against a float64
run of the same weights (B7, 600x600, calibrated random weights):
  torch float32 vs float64       7.8e-6  (B2: 5.1e-6)
  Keras/TF float32 vs float64    1.8e-5  (B2: 8.4e-6)
  Keras vs torch                 2.6e-5  (B2: 1.3e-5)
So 1e-5 holds for B0, B1 and B4 but cannot hold between two float32
implementations of the deeper variants; 5e-5 is about twice the worst seen.
(Against its own reference, each backend stays within 1e-5: tests/
test_torch_backend.py and tests/test_keras_backend.py.)

Deeper networks round more. Measured, torch float32 against float64 on the
same weights and batch: ResNet-101 logits at 64px 4.9e-5, ResNet-152
(Keras's v1) at 96px 3.5e-4. So every float32 comparison is held to the
larger of the bound here and ROUNDING_FACTOR times torch's own float32 error
against float64, measured on the same batch (`bound`). Two float32 results
can differ by the sum of their own errors, and TensorFlow's was up to 2.3x
torch's (B7, above): 1 + 2.3 < 4. Measured worst so far: SE-ResNet-101 at
65px, Keras vs torch 2.3x torch's own error. But not always: EfficientNetV2-M
at 129px (ill-conditioned there: its last stage's maps reach 1e3),
TensorFlow's own error 1.1e-4 with one thread (7e-5 with two), torch's
2.5e-5, the two float64 copies 1e-13 apart. So a comparison over that bound
asks for Keras's own error too (a float64 run of its model) and is held to
ROUNDING_FACTOR times the larger (`second_opinion`). A broken transfer is off
by ~100%, far beyond either.

bfloat16 keeps 8 bits of mantissa (2^-8 = 3.9e-3 per rounding) and the two
frameworks round in different places (Keras's bfloat16 policy also rounds the
preprocessing and batch norm). Measured on B0 against float32: torch bfloat16
4.6%, Keras bfloat16 13%, Keras vs torch 9.7%. The bound of 0.2 still fails a
broken transfer, which is off by ~40% at the logits.

float64: training mode and input gradients are compared on float64 copies of
both models (same weights), where the frameworks agree to 1e-14. In float32
neither has a bound that a broken model would fail: batch statistics over
the few pixels of a deep stage turn rounding into errors of order one
(MobileNetV3-Large-0.75 at 64px: torch's own float32 train-mode logits 30%
off float64), and ReLU, max pooling and hardswish make input gradients
discontinuous, so rounding flips branches (the same network: one hardswish
flip put Keras's float32 gradient 2.4e-3 off torch's while torch's own error
was 2e-5; SE-ResNet-50's float32 gradients differed by 13%). The one float64
difference seen: ATen's float64 hardsigmoid backward uses the float constant
1/6 (3e-8 relative), 4e-8 at the input. Hence 1e-6.
("gradient": parameter gradients against torchvision, tests/test_torch_backend.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import ir

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
        """The first compared point whose error is over the tolerance (or not
        a number: a map that overflowed on one side)."""
        return next(
            (r.where for r in self.rows if not r.max_rel <= self.tolerance), None
        )


def error(where: str, ours: Any, reference: Any) -> Comparison:
    """Max absolute and relative (to max |reference|) difference, in float64."""
    import numpy as np

    a, b = np.asarray(ours, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    diff = float(np.abs(a - b).max())
    return Comparison(where, diff, diff / max(float(np.abs(b).max()), 1e-30))


def bound(dtype: str, own: float = 0.0) -> float:
    """The bound on a comparison run in `dtype` ("float64" for the float64
    copies): TOLERANCE[dtype], and for float32 at least ROUNDING_FACTOR times
    `own`, torch's own float32 error against float64 on the same batch."""
    if dtype == "float32":
        return max(TOLERANCE["float32"], ROUNDING_FACTOR * own)
    return TOLERANCE[dtype]


def second_opinion(result: Result, keras_own: Callable[[], float]) -> None:
    """Before a float32 comparison fails: Keras's own rounding can be several
    times torch's, so measure it (`keras_own()`, a float64 run of the Keras
    model; 0 where that cannot run) and hold the result to ROUNDING_FACTOR
    times the larger of the two."""
    if not result.ok:
        result.tolerance = max(result.tolerance, ROUNDING_FACTOR * keras_own())


# What `archspec check` compares for each variant.


def sizes(size: int) -> list[int]:
    """The sizes of the eval comparisons: `size` (the variant's resolution,
    or --size) and the next odd one, so that strided layers meet both even and
    odd maps, where TensorFlow's "same" padding is asymmetric or not."""
    odd = size | 1
    return [size, odd if odd != size else odd + 2]


def exact_size(size: int) -> int:
    """The size of the float64 comparisons (training mode, input gradients)."""
    return min(size, FLOAT64_MAX_SIZE)
