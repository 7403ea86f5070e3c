"""The backend registry: a backend turns one IR network into source files.

The interface is deliberately small::

    class Backend(Protocol):
        name: str                 # what --backend selects
        description: str
        def emit(self, network: ir.Network) -> dict[str, str]: ...
            # {relative path: source text}; writing is archspec's job

To be used as well as compiled (`create_model`, `check`, `profile`,
`weights`), a backend also has a `runtime` attribute: its runtime adapter
(`adapter(name)`; docs/backends.md lists what one provides).

Built-in backends are registered here by import path, so the compiler imports
only the one it uses. Other packages add backends through the entry-point
group `archspec.backends` (name = "module:attribute"), or programmatically
with `register`.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

from . import ir
from .errors import SpecError

ENTRY_POINT_GROUP = "archspec.backends"

BUILTIN = {
    "torch": "archspec_torch:BACKEND",
    "keras": "archspec_keras:BACKEND",
    "flax": "archspec_flax:BACKEND",
}


@runtime_checkable
class Backend(Protocol):
    name: str
    description: str

    def emit(self, network: ir.Network) -> dict[str, str]: ...


_registered: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    _registered[backend.name] = backend
    return backend


def _targets() -> dict[str, str]:
    from importlib.metadata import entry_points

    targets = dict(BUILTIN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        targets.setdefault(entry.name, entry.value)
    return targets


def names() -> list[str]:
    return sorted({*_targets(), *_registered})


def get(name: str) -> Backend:
    if name in _registered:
        return _registered[name]
    # Entry points only for a name that is not built in: scanning the installed
    # distributions costs a compile ~10 ms.
    target = BUILTIN.get(name) or _targets().get(name)
    if target is None:
        raise SpecError(
            f"--backend: unknown backend {name!r} (known: {', '.join(names())})"
        )
    module, _, attribute = target.partition(":")
    backend = getattr(importlib.import_module(module), attribute)
    if not isinstance(backend, Backend):
        raise SpecError(
            f"backend {name!r} ({target}) does not provide name, description and emit()"
        )
    return register(backend)


def adapter(name: str) -> Any:
    """The runtime adapter of backend `name` (its `runtime`): what builds,
    runs and moves weights into its models. A SpecError for a backend that
    has none (it can be compiled, not used)."""
    found = getattr(get(name), "runtime", None)
    if found is None:
        raise SpecError(
            f"backend {name!r} has no runtime adapter: archspec compiles it but "
            "cannot build, run or move weights into its models"
        )
    return found
