"""Helpers for tests that run generated code: compile a variant and import it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from conftest import B0, B0_TV

from archspec import backends, ir
from archspec.pipeline import load_spec, network

_loaded: dict = {}


def variant(spec: Path, phi: float) -> ir.Network:
    if spec not in _loaded:
        _loaded[spec] = load_spec(spec)
    return network(_loaded[spec], phi)


def import_generated(net: ir.Network, backend: str, folder: Path):
    """Emit `net` with `backend` into `folder` and import the module."""
    ((name, source),) = backends.get(backend).emit(net).items()
    path = folder / name
    path.write_text(source)
    module_name = f"archspec_test_{backend}_{net.module}_{abs(hash(str(folder)))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def relative_error(a, b) -> float:
    """max |a - b| / max |b|, in float64."""
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max())


__all__ = ["B0", "B0_TV", "import_generated", "relative_error", "variant"]
