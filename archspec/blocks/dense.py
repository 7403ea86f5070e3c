"""DenseNet's blocks (Huang, Liu, van der Maaten & Weinberger, CVPR 2017).

dense:      one layer of a dense block, pre-activation: norm -> activation ->
            1x1 conv to bn_size x growth -> norm -> activation -> 3x3 conv to
            growth; its output is concatenated after its input, so the block
            outputs in + growth channels (DenseNet-BC's bottleneck layer).
transition: between dense blocks: norm -> activation -> 1x1 conv to
            floor(in x compression) -> 2x2 average pool, stride 2.

Pre-activation is expressed with the IR's own nodes: a `norm_act` node before a
convolution that has neither norm nor activation. Convolutions have no bias.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from .. import ir
from ..types import Channels
from .registry import BlockContext, BlockKind, StageRow, register


class DenseRow(StageRow):
    block: Literal["dense"]
    channels: Channels | None = Field(
        None, description="unused: a dense layer adds `growth` channels to its input"
    )
    growth: Channels = Field(
        description="growth rate k: channels each layer adds (scaled by width)"
    )
    bn_size: int = Field(
        4, ge=1, le=64, description="the 1x1 bottleneck has bn_size x growth channels"
    )
    stride: Literal[1] = Field(1, description="dense layers keep the size")

    def block_channels(self, in_channels, scale) -> int:
        return in_channels + scale(self.growth)


class TransitionRow(StageRow):
    block: Literal["transition"]
    channels: Channels | None = Field(
        None, description="unused: the output is the input times `compression`"
    )
    compression: float = Field(
        0.5, gt=0, le=1, description="output channels = floor(input x compression)"
    )
    stride: Literal[2] = Field(2, description="of the 2x2 average pool")

    def block_channels(self, in_channels, scale) -> int:
        return max(1, int(in_channels * self.compression))


class PreActivation(ir.Block):
    """Settings both kinds share."""

    activation: ir.Activation
    norm: ir.Norm
    padding: ir.Padding

    def norm_act(self, name: str, channels: int) -> ir.NormAct:
        return ir.NormAct(
            name=name, channels=channels, norm=self.norm, activation=self.activation
        )

    def conv(self, name: str, c_in: int, c_out: int, kernel: int, size: int) -> ir.Conv:
        """A bare convolution: its norm and activation come before it."""
        return ir.Conv(
            name=name,
            in_channels=c_in,
            out_channels=c_out,
            kernel=kernel,
            padding=self.padding,
            norm=None,
            activation=None,
            in_size=size,
            out_size=size,
        )


class DenseLayer(PreActivation):
    """One layer of a DenseNet dense block: the block kind "dense". Not the
    fully connected layer node ir.Dense, whose kind is also "dense": block
    kinds and layer kinds are separate vocabularies (a stage's blocks vs the
    nodes of a graph, the stem and the head)."""

    kind: Literal["dense"] = "dense"
    CLASS_NAME: ClassVar[str | None] = "DenseLayer"
    bottleneck_channels: ir.Size

    @property
    def growth(self) -> int:
        return self.out_channels - self.in_channels

    def graph(self) -> list[ir.Layer]:
        c, mid, size = self.in_channels, self.bottleneck_channels, self.in_size
        return [
            self.norm_act("norm1", c),
            self.conv("conv1", c, mid, 1, size),
            self.norm_act("norm2", mid),
            self.conv("conv2", mid, self.growth, 3, size),
            # The new features after the layer's input: the block grows.
            ir.Concat(
                name="concat",
                channels=self.out_channels,
                inputs=(ir.BLOCK_INPUT, "conv2"),
            ),
        ]


class Transition(PreActivation):
    kind: Literal["transition"] = "transition"
    CLASS_NAME: ClassVar[str | None] = "Transition"

    def graph(self) -> list[ir.Layer]:
        c_in, c_out = self.in_channels, self.out_channels
        return [
            self.norm_act("norm", c_in),
            self.conv("conv", c_in, c_out, 1, self.in_size),
            ir.Pool(
                name="pool",
                op="avg",
                kernel=2,
                stride=2,
                channels=c_out,
                in_size=self.in_size,
                out_size=self.out_size,
            ),
        ]


def _settings(at: BlockContext) -> dict:
    return dict(
        name=at.name,
        in_channels=at.in_channels,
        out_channels=at.out_channels,
        in_size=at.in_size,
        activation=at.activation,
        norm=at.norm,
        padding=at.padding,
    )


def build_dense(row: DenseRow, at: BlockContext) -> DenseLayer:
    growth = at.out_channels - at.in_channels
    return DenseLayer(
        **_settings(at),
        stride=1,
        out_size=at.in_size,
        bottleneck_channels=row.bn_size * growth,
    )


def build_transition(row: TransitionRow, at: BlockContext) -> Transition:
    # The 2x2 average pool rounds the size down (PyTorch's and Keras's default).
    # Every transition pools with stride 2, the blocks of a row after its
    # first too (the expander gives those stride 1): the graph and both
    # backends' templates say so.
    return Transition(
        **_settings(at),
        stride=row.stride,
        out_size=ir.pool_out_size(at.in_size, row.stride, row.stride, 0, False),
    )


DENSE = register(BlockKind("dense", DenseRow, DenseLayer, build_dense))
TRANSITION = register(
    BlockKind("transition", TransitionRow, Transition, build_transition)
)
