"""Block kinds: built-in ones load on first use; others via entry points."""

from .registry import (
    BlockContext,
    BlockKind,
    SESettings,
    StageRow,
    broken,
    columns,
    defined,
    get,
    names,
    register,
)

__all__ = [
    "BlockContext",
    "BlockKind",
    "SESettings",
    "StageRow",
    "broken",
    "columns",
    "defined",
    "get",
    "names",
    "register",
]
