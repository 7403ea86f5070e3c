"""MBConv: the mobile inverted bottleneck with squeeze-and-excitation.

expand 1x1 (only when it widens) -> depthwise kxk (the stride sits here) ->
squeeze-and-excitation -> project 1x1 (no activation) -> drop path -> add the
block's input, the last two only when the block keeps stride 1 and its
channel count.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from .. import ir
from ..types import Activation, Channels, OddKernel, Rate, Ratio
from .registry import BlockContext, BlockKind, StageRow, register


class MBConvRow(StageRow):
    block: Literal["mbconv"]
    expand: Ratio | None = Field(
        None,
        description="expansion ratio of the block's scaled input (MBConv6: 6; "
        'Keras\'s MobileNetV3 writes some as fractions, "72/16")',
    )
    expanded: Channels | None = Field(
        None,
        description="the expanded width itself, scaled like `channels` "
        "(torchvision's MobileNetV3); instead of `expand`",
    )
    kernel: OddKernel
    se: Rate = Field(
        0.25,
        description="squeeze ratio, of the block's input channels or of its "
        "expanded width as `defaults.se.of` says",
    )
    activation: Activation | None = Field(
        None,
        description="of the expand and depthwise convolutions; default: the "
        "network's (MobileNetV3 mixes ReLU and hardswish rows)",
    )

    @model_validator(mode="after")
    def _one_expansion(self) -> MBConvRow:
        if (self.expand is None) == (self.expanded is None):
            raise ValueError(
                "expected exactly one of `expand` (a ratio) and `expanded` (a width)"
            )
        return self


class MBConv(ir.Block):
    kind: Literal["mbconv"] = "mbconv"
    CLASS_NAME: ClassVar[str | None] = "MBConv"
    expanded_channels: ir.Size
    squeeze_channels: Annotated[
        int, Field(ge=0, le=1 << 16)
    ]  # 0: no squeeze-excitation
    kernel: ir.Size
    padding: ir.Padding
    activation: ir.Activation
    norm: ir.Norm
    bias: bool = False
    se_activation: ir.Activation
    se_gate: ir.Gate = "sigmoid"

    stochastic_depth: ClassVar[bool] = True
    per_layer_activation: ClassVar[bool] = True

    @property
    def has_expand(self) -> bool:
        return self.expanded_channels != self.in_channels

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels

    def graph(self) -> list[ir.Layer]:
        mid = self.expanded_channels
        conv = dict(padding=self.padding, norm=self.norm, bias=self.bias)
        layers: list[ir.Layer] = []
        if self.has_expand:
            layers.append(
                ir.Conv(
                    name="expand",
                    in_channels=self.in_channels,
                    out_channels=mid,
                    kernel=1,
                    activation=self.activation,
                    in_size=self.in_size,
                    out_size=self.in_size,
                    **conv,
                )
            )
        layers.append(
            ir.Conv(
                name="depthwise",
                in_channels=mid,
                out_channels=mid,
                kernel=self.kernel,
                stride=self.stride,
                groups=mid,
                activation=self.activation,
                in_size=self.in_size,
                out_size=self.out_size,
                **conv,
            )
        )
        if self.squeeze_channels:
            layers.append(
                ir.SqueezeExcite(
                    name="se",
                    channels=mid,
                    squeeze_channels=self.squeeze_channels,
                    activation=self.se_activation,
                    gate=self.se_gate,
                )
            )
        layers.append(
            ir.Conv(
                name="project",
                in_channels=mid,
                out_channels=self.out_channels,
                kernel=1,
                activation=None,
                in_size=self.out_size,
                out_size=self.out_size,
                **conv,
            )
        )
        if self.residual:
            layers += residual_add(self.out_channels, "project")
        return layers


def residual_add(channels: int, branch: str) -> list[ir.Layer]:
    """Drop path on the residual branch, then the identity shortcut added."""
    return [
        ir.DropPath(name="drop_path", channels=channels, inputs=(branch,)),
        ir.Add(name="add", channels=channels, inputs=("drop_path", ir.BLOCK_INPUT)),
    ]


def build(row: MBConvRow, at: BlockContext) -> MBConv:
    if row.expanded is not None:
        expanded = at.scale(row.expanded)
    else:
        expanded = at.make_divisible(at.in_channels * row.expand)
    # EfficientNet squeezes the block's input width, MobileNetV3 the expanded one.
    base = expanded if at.se.of == "expanded" else at.in_channels
    return MBConv(
        name=at.name,
        in_channels=at.in_channels,
        out_channels=at.out_channels,
        expanded_channels=expanded,
        squeeze_channels=at.se.round(base * row.se) if row.se > 0 else 0,
        kernel=row.kernel,
        stride=at.stride,
        padding=at.padding,
        activation=row.activation or at.activation,
        norm=at.norm,
        bias=at.bias,
        se_activation=at.se.activation,
        se_gate=at.se.gate,
        in_size=at.in_size,
        out_size=ir.conv_out_size(at.in_size, row.kernel, at.stride, at.padding),
    )


MBCONV = register(BlockKind("mbconv", MBConvRow, MBConv, build))
