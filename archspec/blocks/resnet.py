"""The residual blocks of ResNet (He et al., 2016) and its descendants.

basic:      3x3 (stride) -> 3x3 -> [SE] -> drop path -> + shortcut -> activation
bottleneck: 1x1 reduce -> 3x3 -> 1x1 expand -> [SE] -> drop path -> + shortcut
            -> activation

The shortcut is the identity, or a 1x1 projection with batch norm when the
block changes stride or width. The activation comes after the add
(post-activation). Squeeze-excitation (SE-ResNet) sits after the last batch
norm of the residual branch, before the add, and squeezes the block's output.
A bottleneck's stride sits on the 3x3 (`stride_on: conv2`, torchvision's
"v1.5") or on the first 1x1 (`conv1`, the original v1 that Keras implements);
its inner width is `channels * width * groups` (Wide ResNet: width 2).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from .. import ir
from ..types import Rate
from .registry import BlockContext, BlockKind, StageRow, register

SE_DESCRIPTION = "squeeze-excitation ratio of the block's output channels (0: none)"


class BasicRow(StageRow):
    block: Literal["basic"]
    se: Rate = Field(0.0, description=SE_DESCRIPTION)


class BottleneckRow(StageRow):
    block: Literal["bottleneck"]
    expansion: int = Field(
        4, ge=1, le=16, description="output channels = channels x expansion"
    )
    width: float = Field(
        1.0,
        gt=0,
        le=16,
        description="inner width factor: the 3x3 has channels x width x groups "
        "channels (Wide ResNet: 2)",
    )
    groups: int = Field(1, ge=1, le=256, description="groups of the 3x3 convolution")
    stride_on: Literal["conv1", "conv2"] = Field(
        "conv2",
        description="conv2: the 3x3 strides (torchvision, v1.5); conv1: the first "
        "1x1 strides (the original ResNet, Keras)",
    )
    se: Rate = Field(0.0, description=SE_DESCRIPTION)

    def output_channels(self, channels: int) -> int:
        return channels * self.expansion


class Residual(ir.Block):
    """What both kinds share: settings, the shortcut and squeeze-excitation."""

    padding: ir.Padding
    activation: ir.Activation
    norm: ir.Norm
    bias: bool = False
    squeeze_channels: Annotated[int, Field(ge=0, le=1 << 16)] = 0  # 0: no SE
    se_activation: ir.Activation = "relu"
    se_gate: ir.Gate = "sigmoid"

    stochastic_depth: ClassVar[bool] = True

    @property
    def has_shortcut_conv(self) -> bool:
        return self.stride != 1 or self.in_channels != self.out_channels

    def conv(self, name: str, c_in: int, c_out: int, kernel: int, **kw) -> ir.Conv:
        """A conv + norm of this block, with its settings."""
        kw.setdefault("activation", self.activation)
        kw.setdefault("in_size", self.out_size)
        return ir.Conv(
            name=name,
            in_channels=c_in,
            out_channels=c_out,
            kernel=kernel,
            padding=self.padding,
            norm=self.norm,
            bias=self.bias,
            out_size=ir.out_size(kw["in_size"], kw.get("stride", 1)),
            **kw,
        )

    def tail(self, branch: list[ir.Layer]) -> list[ir.Layer]:
        """The residual branch, then squeeze-excitation, drop path, the
        shortcut (a projection where present), the add and the activation."""
        c = self.out_channels
        layers = list(branch)
        if self.squeeze_channels:
            layers.append(
                ir.SqueezeExcite(
                    name="se",
                    channels=c,
                    squeeze_channels=self.squeeze_channels,
                    activation=self.se_activation,
                    gate=self.se_gate,
                )
            )
        layers.append(ir.DropPath(name="drop_path", channels=c))
        shortcut = ir.BLOCK_INPUT
        if self.has_shortcut_conv:
            shortcut = "shortcut"
            layers.append(
                self.conv(
                    "shortcut",
                    self.in_channels,
                    c,
                    1,
                    stride=self.stride,
                    activation=None,
                    in_size=self.in_size,
                    inputs=(ir.BLOCK_INPUT,),
                )
            )
        return [
            *layers,
            ir.Add(name="add", channels=c, inputs=("drop_path", shortcut)),
            ir.Act(name="act", channels=c, activation=self.activation),
        ]


class Basic(Residual):
    kind: Literal["basic"] = "basic"
    CLASS_NAME: ClassVar[str | None] = "BasicBlock"

    def graph(self) -> list[ir.Layer]:
        c_in, c_out = self.in_channels, self.out_channels
        return self.tail(
            [
                self.conv(
                    "conv1", c_in, c_out, 3, stride=self.stride, in_size=self.in_size
                ),
                self.conv("conv2", c_out, c_out, 3, activation=None),
            ]
        )


class Bottleneck(Residual):
    kind: Literal["bottleneck"] = "bottleneck"
    CLASS_NAME: ClassVar[str | None] = "Bottleneck"
    width_channels: ir.Size
    groups: ir.Size = 1
    stride_on: Literal["conv1", "conv2"] = "conv2"

    def graph(self) -> list[ir.Layer]:
        mid, s = self.width_channels, self.stride
        first = s if self.stride_on == "conv1" else 1
        return self.tail(
            [
                self.conv(
                    "conv1",
                    self.in_channels,
                    mid,
                    1,
                    stride=first,
                    in_size=self.in_size,
                ),
                self.conv(
                    "conv2",
                    mid,
                    mid,
                    3,
                    stride=s // first,
                    groups=self.groups,
                    in_size=ir.out_size(self.in_size, first),
                ),
                self.conv("conv3", mid, self.out_channels, 1, activation=None),
            ]
        )


def _settings(row: BasicRow | BottleneckRow, at: BlockContext) -> dict:
    return dict(
        name=at.name,
        in_channels=at.in_channels,
        out_channels=at.out_channels,
        stride=at.stride,
        in_size=at.in_size,
        out_size=at.out_size,
        padding=at.padding,
        activation=at.activation,
        norm=at.norm,
        bias=at.bias,
        squeeze_channels=at.se.round(at.out_channels * row.se) if row.se > 0 else 0,
        se_activation=at.se.activation,
        se_gate=at.se.gate,
    )


def build_basic(row: BasicRow, at: BlockContext) -> Basic:
    return Basic(**_settings(row, at))


def build_bottleneck(row: BottleneckRow, at: BlockContext) -> Bottleneck:
    # torchvision: int(planes * base_width / 64) * groups, planes = out / expansion.
    planes = at.out_channels // row.expansion
    return Bottleneck(
        **_settings(row, at),
        width_channels=int(planes * row.width) * row.groups,
        groups=row.groups,
        stride_on=row.stride_on,
    )


BASIC = register(BlockKind("basic", BasicRow, Basic, build_basic))
BOTTLENECK = register(
    BlockKind("bottleneck", BottleneckRow, Bottleneck, build_bottleneck)
)
