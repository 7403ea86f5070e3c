"""The open registry of block kinds.

A block kind contributes: the model of one row of a stage table (`row`), the
IR node it expands to (`ir`), `build`, which makes one block from a row once
the block's channels, stride and settings are known, and optionally its own
templates (`templates`: backend name -> a folder holding
`blocks/{kind}.py.j2`). Kinds outside archspec register through the
`archspec.blocks` entry-point group, so adding one touches no core file.

Built-in kinds are imported on first use, so a compile pays only for the kinds
its spec uses.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .. import ir
from ..types import Channels, Count, Stride

ENTRY_POINT_GROUP = "archspec.blocks"

BUILTIN = {
    "mbconv": "archspec.blocks.mbconv:MBCONV",
    "fused_mbconv": "archspec.blocks.fused_mbconv:FUSED_MBCONV",
    "basic": "archspec.blocks.resnet:BASIC",
    "bottleneck": "archspec.blocks.resnet:BOTTLENECK",
    "separable": "archspec.blocks.separable:SEPARABLE",
    "dense": "archspec.blocks.dense:DENSE",
    "transition": "archspec.blocks.dense:TRANSITION",
}


class StageRow(BaseModel):
    """Columns every block kind has; a kind's row model adds its own."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, defer_build=True
    )

    block: str
    channels: Channels
    layers: Count
    stride: Stride
    stride_block: Literal["first", "last"] = Field(
        "first",
        description="which of the row's blocks takes its stride, the others "
        "stride 1: the first (torchvision, timm, most Keras models) or the last "
        "(keras.applications' ResNetV2)",
    )

    def output_channels(self, channels: int) -> int:
        """The blocks' output width, given the row's scaled `channels`."""
        return channels

    def block_channels(self, in_channels: int, scale: Callable[[float], int]) -> int:
        """The output width of one block of this row, given its input width;
        `scale` applies the variant's width multiplier and rounding. Most
        kinds ignore the input (DenseNet's layers add to it)."""
        return self.output_channels(scale(self.channels))


@dataclass(frozen=True)
class SESettings:
    """How the network builds squeeze-excitation layers: the spec's
    `defaults.se` (spec.SqueezeExcite) resolved for one variant. The layers
    themselves are ir.SqueezeExcite."""

    activation: str
    gate: str
    round: Callable[[float], int]
    # What a block's `se` ratio multiplies (MBConv: "input" or "expanded").
    of: str = "input"


@dataclass(frozen=True)
class BlockContext:
    """What the expander knows about one block's place in the network."""

    name: str
    in_channels: int
    out_channels: int
    stride: int
    in_size: int
    activation: str
    padding: str
    norm: ir.Norm
    bias: bool
    se: SESettings
    make_divisible: Callable[[float], int]
    # A width as the table gives it (multiplier 1), scaled and rounded as
    # this variant scales every channel count.
    scale: Callable[[float], int]
    # What the block reads: `input`, the output its x is (a block's name, or
    # the stem's last layer), and for a cell (archspec.blocks.graph) `prev`,
    # the output it reads as its second input, with its shape; None in the
    # network's first block, whose prev is its own input.
    input: str = ""
    prev: str | None = None
    prev_channels: int | None = None
    prev_size: int | None = None

    @property
    def has_prev(self) -> bool:
        return self.prev is not None

    @property
    def out_size(self) -> int:
        return ir.out_size(self.in_size, self.stride)


@dataclass(frozen=True)
class BlockKind:
    name: str
    row: type[StageRow]
    ir: type[ir.Block]
    build: Callable[[StageRow, BlockContext], ir.Block]
    templates: Mapping[str, Path] = field(default_factory=dict)


_kinds: dict[str, BlockKind] = {}
_plugins_loaded = False
# Kinds the spec being read defines (`blocks:`): seen only while it is
# validated and expanded, so two specs may each define a kind of one name.
_defined: ContextVar[Mapping[str, BlockKind | None]] = ContextVar(
    "defined", default=MappingProxyType({})
)


@contextmanager
def defined(kinds: Mapping[str, BlockKind | None]) -> Iterator[None]:
    """Make a spec's own kinds known to `get` inside the `with` block."""
    token = _defined.set(kinds)
    try:
        yield
    finally:
        _defined.reset(token)


def register(kind: BlockKind) -> BlockKind:
    _kinds[kind.name] = kind
    return kind


def _load_builtin(name: str) -> None:
    module, _, attribute = BUILTIN[name].partition(":")
    register(getattr(importlib.import_module(module), attribute))


def _load_plugins() -> None:
    # Only when a name is not built in: scanning the installed distributions
    # costs a compile ~10 ms. A plugin cannot replace a built-in.
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        from importlib.metadata import entry_points

        for entry in entry_points(group=ENTRY_POINT_GROUP):
            if entry.name not in _kinds and entry.name not in BUILTIN:
                register(entry.load())


def get(name: str) -> BlockKind | None:
    if name in _defined.get():
        return _defined.get()[name]  # None: its definition has errors
    if name not in _kinds:
        if name in BUILTIN:
            _load_builtin(name)
        else:
            _load_plugins()
    return _kinds.get(name)


def _load_all(plugins: bool) -> None:
    for name in BUILTIN:
        get(name)
    if plugins:
        _load_plugins()


def columns(plugins: bool = False) -> set[str]:
    """Every column some block kind's row has (built-in kinds, or all)."""
    _load_all(plugins)
    kinds = [*_kinds.values(), *filter(None, _defined.get().values())]
    return {field for kind in kinds for field in kind.row.model_fields}


def names() -> list[str]:
    _load_all(plugins=True)
    return sorted({*_kinds, *_defined.get()})


def broken() -> set[str]:
    """Kinds the spec being read defines with errors (reported already)."""
    return {name for name, kind in _defined.get().items() if kind is None}
