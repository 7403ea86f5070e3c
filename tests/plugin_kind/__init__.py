"""A block kind as a plugin package would ship it: VGG's plain block, a kxk
convolution with batch norm and activation and no shortcut. Its templates
live beside it (torch/blocks/plain.py.j2, keras/blocks/plain.py.j2)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from archspec import ir
from archspec.blocks import BlockContext, BlockKind, StageRow
from archspec.types import OddKernel

HERE = Path(__file__).parent


class PlainRow(StageRow):
    block: Literal["plain"]
    kernel: OddKernel = 3


class Plain(ir.Block):
    kind: Literal["plain"] = "plain"
    kernel: ir.Size
    padding: ir.Padding
    activation: ir.Activation
    norm: ir.Norm
    bias: bool = False

    def layers(self) -> list[ir.Layer]:
        return [
            ir.Conv(
                name="conv",
                in_channels=self.in_channels,
                out_channels=self.out_channels,
                kernel=self.kernel,
                stride=self.stride,
                padding=self.padding,
                norm=self.norm,
                bias=self.bias,
                activation=self.activation,
                in_size=self.in_size,
                out_size=self.out_size,
            )
        ]


def build(row: PlainRow, at: BlockContext) -> Plain:
    return Plain(
        name=at.name,
        in_channels=at.in_channels,
        out_channels=at.out_channels,
        stride=at.stride,
        in_size=at.in_size,
        out_size=at.out_size,
        kernel=row.kernel,
        padding=at.padding,
        activation=at.activation,
        norm=at.norm,
        bias=at.bias,
    )


PLAIN = BlockKind(
    "plain",
    PlainRow,
    Plain,
    build,
    templates={"torch": HERE / "torch", "keras": HERE / "keras"},
)
