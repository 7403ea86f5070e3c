"""Block kinds: the built-in ones register on import; others via entry points."""

from .mbconv import MBCONV
from .registry import BlockContext, BlockKind, StageRow, columns, get, names, register

__all__ = [
    "MBCONV",
    "BlockContext",
    "BlockKind",
    "StageRow",
    "columns",
    "get",
    "names",
    "register",
]
