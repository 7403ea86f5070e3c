"""Fused-MBConv: EfficientNetV2's early-stage block (Tan & Le, ICML 2021).

MBConv's 1x1 expansion and kxk depthwise convolution fused into one kxk
convolution:

expand kxk (the stride sits here) -> project 1x1 (no activation), or, with
expansion 1, a single kxk convolution with activation (`project`) -> drop-path
+ identity, the last only when the block keeps stride 1 and its channel count.
No squeeze-excitation (EfficientNetV2's fused rows have none).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from .. import ir
from ..types import OddKernel
from .mbconv import residual_add
from .registry import BlockContext, BlockKind, StageRow, register


class FusedMBConvRow(StageRow):
    block: Literal["fused_mbconv"]
    expand: int = Field(
        ge=1, le=64, description="expansion ratio of the kxk convolution (1: none)"
    )
    kernel: OddKernel


class FusedMBConv(ir.Block):
    kind: Literal["fused_mbconv"] = "fused_mbconv"
    CLASS_NAME: ClassVar[str | None] = "FusedMBConv"
    expanded_channels: ir.Size
    kernel: ir.Size
    padding: ir.Padding
    activation: ir.Activation
    norm: ir.Norm
    bias: bool = False

    stochastic_depth: ClassVar[bool] = True

    @property
    def has_expand(self) -> bool:
        return self.expanded_channels != self.in_channels

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels

    def graph(self) -> list[ir.Layer]:
        layers = self._convs()
        if self.residual:
            layers += residual_add(self.out_channels, "project")
        return layers

    def _convs(self) -> list[ir.Layer]:
        conv = dict(
            padding=self.padding,
            norm=self.norm,
            bias=self.bias,
            in_size=self.in_size,
            out_size=self.out_size,
        )
        if not self.has_expand:
            return [
                ir.Conv(
                    name="project",
                    in_channels=self.in_channels,
                    out_channels=self.out_channels,
                    kernel=self.kernel,
                    stride=self.stride,
                    activation=self.activation,
                    **conv,
                )
            ]
        conv_1x1 = {**conv, "in_size": self.out_size}
        return [
            ir.Conv(
                name="expand",
                in_channels=self.in_channels,
                out_channels=self.expanded_channels,
                kernel=self.kernel,
                stride=self.stride,
                activation=self.activation,
                **conv,
            ),
            ir.Conv(
                name="project",
                in_channels=self.expanded_channels,
                out_channels=self.out_channels,
                kernel=1,
                activation=None,
                **conv_1x1,
            ),
        ]


def build(row: FusedMBConvRow, at: BlockContext) -> FusedMBConv:
    return FusedMBConv(
        name=at.name,
        in_channels=at.in_channels,
        out_channels=at.out_channels,
        expanded_channels=at.make_divisible(at.in_channels * row.expand),
        kernel=row.kernel,
        stride=at.stride,
        padding=at.padding,
        activation=at.activation,
        norm=at.norm,
        bias=at.bias,
        in_size=at.in_size,
        out_size=at.out_size,
    )


FUSED_MBCONV = register(BlockKind("fused_mbconv", FusedMBConvRow, FusedMBConv, build))
