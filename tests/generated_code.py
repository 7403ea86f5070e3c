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


__all__ = ["B0", "B0_TV", "import_generated", "relative_error", "variant"]
