"""Depthwise-separable convolution: MobileNetV1's block.

depthwise kxk (the stride sits here; `multiplier` filters per input channel)
-> batch norm -> activation -> pointwise 1x1 -> batch norm -> activation.
No residual, so no stochastic depth.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from .. import ir
from ..types import Activation, OddKernel
from .registry import BlockContext, BlockKind, StageRow, register


class SeparableRow(StageRow):
    block: Literal["separable"]
    kernel: OddKernel = 3
    multiplier: int = Field(
        1,
        ge=1,
        le=16,
        description="depthwise filters per input channel (Keras's depth_multiplier)",
    )
    activation: Activation | None = Field(
        None, description="of both convolutions; default: the network's"
    )


class Separable(ir.Block):
    kind: Literal["separable"] = "separable"
    CLASS_NAME: ClassVar[str | None] = "DepthwiseSeparable"
    kernel: ir.Size
    multiplier: ir.Size = 1
    padding: ir.Padding
    activation: ir.Activation
    norm: ir.Norm
    bias: bool = False

    per_layer_activation: ClassVar[bool] = True

    def graph(self) -> list[ir.Layer]:
        mid = self.in_channels * self.multiplier
        conv = dict(
            padding=self.padding,
            norm=self.norm,
            bias=self.bias,
            activation=self.activation,
        )
        return [
            ir.Conv(
                name="depthwise",
                in_channels=self.in_channels,
                out_channels=mid,
                kernel=self.kernel,
                stride=self.stride,
                groups=self.in_channels,
                in_size=self.in_size,
                out_size=self.out_size,
                **conv,
            ),
            ir.Conv(
                name="pointwise",
                in_channels=mid,
                out_channels=self.out_channels,
                kernel=1,
                in_size=self.out_size,
                out_size=self.out_size,
                **conv,
            ),
        ]


def build(row: SeparableRow, at: BlockContext) -> Separable:
    return Separable(
        name=at.name,
        in_channels=at.in_channels,
        out_channels=at.out_channels,
        kernel=row.kernel,
        multiplier=row.multiplier,
        stride=at.stride,
        padding=at.padding,
        activation=row.activation or at.activation,
        norm=at.norm,
        bias=at.bias,
        in_size=at.in_size,
        out_size=ir.conv_out_size(at.in_size, row.kernel, at.stride, at.padding),
    )


SEPARABLE = register(BlockKind("separable", SeparableRow, Separable, build))
