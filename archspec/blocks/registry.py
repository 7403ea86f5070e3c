"""The open registry of block kinds.

A block kind contributes three things: the model of one row of a stage table
(`row`), the IR node it expands to (`ir`), and `build`, which makes one block
from a row once the stage's channels, stride and drop-path rate are known.
Backends bring one template per kind. Kinds outside archspec register through
the `archspec.blocks` entry-point group, so adding one touches no core file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from .. import ir
from ..types import Channels, Count, Stride

ENTRY_POINT_GROUP = "archspec.blocks"


class StageRow(BaseModel):
    """Columns every block kind has; a kind's row model adds its own."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    block: str
    channels: Channels
    layers: Count
    stride: Stride


@dataclass(frozen=True)
class BlockContext:
    """What the expander knows about one block's place in the network."""

    name: str
    in_channels: int
    out_channels: int
    stride: int
    in_size: int
    drop_path: float
    activation: str
    padding: str
    norm: ir.Norm
    make_divisible: Callable[[float], int]


@dataclass(frozen=True)
class BlockKind:
    name: str
    row: type[StageRow]
    ir: type[ir.Block]
    build: Callable[[StageRow, BlockContext], ir.Block]


_kinds: dict[str, BlockKind] = {}
_plugins_loaded = False


def register(kind: BlockKind) -> BlockKind:
    _kinds[kind.name] = kind
    return kind


def _load_plugins() -> None:
    # Only when a name is not built in: scanning the installed distributions
    # costs a compile ~10 ms. A plugin cannot replace a built-in.
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        from importlib.metadata import entry_points

        for entry in entry_points(group=ENTRY_POINT_GROUP):
            if entry.name not in _kinds:
                register(entry.load())


def get(name: str) -> BlockKind | None:
    if name not in _kinds:
        _load_plugins()
    return _kinds.get(name)


def columns(plugins: bool = False) -> set[str]:
    """Every column some block kind's row has (registered kinds, or all)."""
    if plugins:
        _load_plugins()
    return {field for kind in _kinds.values() for field in kind.row.model_fields}


def names() -> list[str]:
    _load_plugins()
    return sorted(_kinds)
