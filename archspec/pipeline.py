"""The front half in one place: file -> validated spec or IR -> variants -> networks."""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence

from . import ir, scaling
from .errors import Diagnostics, SpecError
from .expand import expand
from .network_file import validate_network
from .scaling import Variant
from .source import load
from .validate import ValidSpec, validate_spec


def load_spec(
    path: str | os.PathLike, diagnostics: Diagnostics | None = None
) -> ValidSpec | ir.Network:
    """A spec file, or an expanded network written by `archspec expand`."""
    diagnostics = diagnostics if diagnostics is not None else Diagnostics()
    document = load(path, diagnostics)
    if isinstance(document.data, dict) and "format" in document.data:
        return validate_network(document, diagnostics)
    return validate_spec(document, diagnostics)


def select(
    valid: ValidSpec,
    *,
    variant: str | None = None,
    phis: Sequence[float] | None = None,
    formula: bool = False,
    width: float | None = None,
    resolution: int | None = None,
) -> list[Variant]:
    """The variants a command asked for: `--variant b3,b4` (or `all`, the
    default), `--phi 0-7` (compound rules), `--width 0.6` (width rules)."""
    chosen = [
        flag
        for flag, value in (("--variant", variant), ("--phi", phis), ("--width", width))
        if value is not None
    ]
    if len(chosen) > 1:
        raise SpecError(f"{' and '.join(chosen)}: give one of them")
    if resolution is not None and width is None:
        raise SpecError("--resolution goes with --width (a free width multiplier)")
    if formula and phis is None:
        raise SpecError("--formula goes with --phi")
    if phis is not None:
        return [scaling.by_phi(valid, phi, force_formula=formula) for phi in phis]
    if width is not None:
        return [scaling.free_width(valid, width, resolution)]
    named = scaling.named(valid)
    if variant in (None, "all"):
        return list(named.values())
    found = []
    for name in (part.strip() for part in variant.split(",")):
        if name not in named:
            close = difflib.get_close_matches(name, list(named), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SpecError(
                f"--variant: {valid.document.file} has no variant {name!r}{hint} "
                f"(its variants: {', '.join(named)})"
            )
        found.append(named[name])
    return found


def network(
    loaded: ValidSpec | ir.Network,
    phi: float | None = None,
    *,
    formula: bool = False,
    variant: str | None = None,
) -> ir.Network:
    """One network: by variant name or phi (default: the first variant); an
    expanded file is already one network."""
    if isinstance(loaded, ir.Network):
        return loaded
    if phi is not None:
        return expand(loaded, scaling.by_phi(loaded, phi, force_formula=formula))
    return expand(loaded, select(loaded, variant=variant)[0])
