"""Helpers for tests that run generated code: compile a variant and import it."""

from __future__ import annotations

from pathlib import Path

from conftest import B0, B0_TV

from archspec import ir
from archspec.pipeline import load_spec, network
from archspec.runtime import import_generated

_loaded: dict = {}


def variant(spec: Path, phi: float | str) -> ir.Network:
    """One network of a spec: by phi (compound rules) or by variant name."""
    if spec not in _loaded:
        _loaded[spec] = load_spec(spec)
    if isinstance(phi, str):
        return network(_loaded[spec], variant=phi)
    return network(_loaded[spec], phi)


def relative_error(a, b) -> float:
    """max |a - b| / max |b|, in float64."""
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max())


# "Equal to float32 rounding", measured: the generated model may be no further
# from the reference's float64 output than about the reference's own float32
# output is (twice it, plus a floor for variants whose float32 error is tiny).
ROUNDING_FACTOR, ROUNDING_FLOOR = 2.0, 1e-6


def assert_float32_rounding(ours, reference, x) -> None:
    """`ours` (float32) computes `reference`'s function on x to float32 rounding;
    `reference` is turned to float64 for the yardstick (pass a copy if needed)."""
    import torch

    with torch.no_grad():
        ours_32, theirs_32 = ours.eval()(x), reference.eval()(x)
        truth = reference.double()(x.double())
    reference_error = relative_error(theirs_32, truth)
    error = relative_error(ours_32, truth)
    assert error <= ROUNDING_FACTOR * reference_error + ROUNDING_FLOOR, (
        error,
        reference_error,
    )
    # The weights carry signal: two inputs give clearly different logits.
    assert relative_error(truth[0], truth[1]) > 1e-2


__all__ = [
    "B0",
    "B0_TV",
    "assert_float32_rounding",
    "import_generated",
    "relative_error",
    "variant",
]
