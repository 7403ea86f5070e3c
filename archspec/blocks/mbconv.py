"""MBConv: the mobile inverted bottleneck with squeeze-and-excitation.

expand 1x1 (only when it widens) -> depthwise kxk (the stride sits here) ->
squeeze-and-excitation -> project 1x1 (no activation) -> drop-path + identity,
the last only when the block keeps stride 1 and its channel count.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .. import ir
from ..types import OddKernel, Rate
from .registry import BlockContext, BlockKind, StageRow, register


class MBConvRow(StageRow):
    block: Literal["mbconv"]
    expand: int = Field(ge=1, le=64, description="expansion ratio (MBConv6: 6)")
    kernel: OddKernel
    se: Rate = Field(0.25, description="squeeze ratio of the block's input channels")


class MBConv(ir.Block):
    kind: Literal["mbconv"] = "mbconv"
    expanded_channels: ir.Size
    squeeze_channels: Annotated[
        int, Field(ge=0, le=1 << 16)
    ]  # 0: no squeeze-excitation
    kernel: ir.Size
    padding: ir.Padding
    activation: ir.Activation
    norm: ir.Norm
    drop_path: ir.Probability

    @property
    def has_expand(self) -> bool:
        return self.expanded_channels != self.in_channels

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels

    def weights(self) -> list[ir.Weights]:
        n, mid = self.name, self.expanded_channels
        layers: list[ir.Weights] = []
        if self.has_expand:
            layers += [
                ir.Conv2dWeights(f"{n}.expand.conv", self.in_channels, mid, 1),
                ir.BatchNormWeights(f"{n}.expand.bn", mid),
            ]
        layers += [
            ir.Conv2dWeights(f"{n}.depthwise.conv", mid, mid, self.kernel, groups=mid),
            ir.BatchNormWeights(f"{n}.depthwise.bn", mid),
        ]
        if self.squeeze_channels:
            sq = self.squeeze_channels
            layers += [
                ir.Conv2dWeights(f"{n}.se.reduce", mid, sq, 1, bias=True),
                ir.Conv2dWeights(f"{n}.se.expand", sq, mid, 1, bias=True),
            ]
        return [
            *layers,
            ir.Conv2dWeights(f"{n}.project.conv", mid, self.out_channels, 1),
            ir.BatchNormWeights(f"{n}.project.bn", self.out_channels),
        ]

    def flops(self) -> int:
        total = 0
        for layer in self.weights():
            if isinstance(layer, ir.Conv2dWeights):
                # The squeeze-and-excitation convolutions act on a 1x1 map.
                size = 1 if ".se." in layer.path else self.out_size
                if layer.path.endswith("expand.conv"):
                    size = self.in_size
                total += ir.conv_flops(layer, size)
        return total


def build(row: MBConvRow, at: BlockContext) -> MBConv:
    return MBConv(
        name=at.name,
        in_channels=at.in_channels,
        out_channels=at.out_channels,
        expanded_channels=at.make_divisible(at.in_channels * row.expand),
        # Squeeze channels follow the block's input, not the expanded width.
        squeeze_channels=max(1, int(at.in_channels * row.se)) if row.se > 0 else 0,
        kernel=row.kernel,
        stride=at.stride,
        padding=at.padding,
        activation=at.activation,
        norm=at.norm,
        drop_path=at.drop_path,
        in_size=at.in_size,
        out_size=-(-at.in_size // at.stride),
    )


MBCONV = register(BlockKind("mbconv", MBConvRow, MBConv, build))
