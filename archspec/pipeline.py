"""The front half in one place: file -> validated spec or IR -> networks."""

from __future__ import annotations

import os

from . import ir
from .errors import Diagnostics
from .expand import expand
from .source import load
from .validate import ValidSpec, validate_network, validate_spec


def load_spec(
    path: str | os.PathLike, diagnostics: Diagnostics | None = None
) -> ValidSpec | ir.Network:
    """A spec file, or an expanded network written by `archspec expand`."""
    diagnostics = diagnostics if diagnostics is not None else Diagnostics()
    document = load(path, diagnostics)
    if isinstance(document.data, dict) and "format" in document.data:
        return validate_network(document, diagnostics)
    return validate_spec(document, diagnostics)


def network(
    loaded: ValidSpec | ir.Network, phi: float | None, *, formula: bool = False
) -> ir.Network:
    """The network for one phi; an expanded file is already one network."""
    if isinstance(loaded, ir.Network):
        return loaded
    return expand(loaded, 0 if phi is None else phi, formula=formula)
