"""The backend-neutral intermediate representation: one explicit network per variant.

Every number a backend needs is spelled out here (channels, kernels, strides,
padding rule, norm parameters, drop-path rates, feature-map sizes), so backends
only translate and never compute architecture. Every weight-bearing layer has a
stable dotted name (`stages.2.0.depthwise.conv`); each backend derives its own
parameter names from it, which is what lets weights move between backends.

The IR is frozen pydantic models, so an expanded network serialises to YAML
and validates back unchanged (`archspec expand`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny

FORMAT = "archspec.network/1"

Padding = Literal["same", "symmetric"]
Activation = Literal["silu", "relu", "relu6", "hardswish", "gelu"]

# Strings that reach generated source are constrained here as well as in the
# spec, because an expanded network file is input too.
LayerName = Annotated[
    str, Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$", max_length=128)
]
ModuleName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=80)]
ClassName = Annotated[str, Field(pattern=r"^[A-Z][A-Za-z0-9_]*$", max_length=80)]
Text = Annotated[str, Field(pattern=r"^[A-Za-z0-9_ .=()\-]*$", max_length=128)]
Size = Annotated[int, Field(gt=0, le=1 << 16)]
# Both backends implement TensorFlow's "same" padding for strides 1 and 2 only.
Stride = Literal[1, 2]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]


class Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Norm(Node):
    """Batch normalisation. `momentum` is PyTorch's convention: the weight of
    each new batch in the running statistics (Keras's momentum is 1 minus it)."""

    eps: Annotated[float, Field(gt=0, lt=1)]
    momentum: Annotated[float, Field(gt=0, lt=1)]


# Weight-bearing layers, as backends and weight transfer see them ------------


@dataclass(frozen=True)
class Conv2dWeights:
    path: str
    in_channels: int
    out_channels: int
    kernel: int
    groups: int = 1
    bias: bool = False
    kind: ClassVar[str] = "conv2d"

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """PyTorch's OIHW layout."""
        return (
            self.out_channels,
            self.in_channels // self.groups,
            self.kernel,
            self.kernel,
        )

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels

    @property
    def params(self) -> int:
        count = self.out_channels * (self.in_channels // self.groups) * self.kernel**2
        return count + (self.out_channels if self.bias else 0)


@dataclass(frozen=True)
class BatchNormWeights:
    path: str
    channels: int
    kind: ClassVar[str] = "batch_norm"

    @property
    def params(self) -> int:
        """Trainable scale and shift; running mean and variance are buffers."""
        return 2 * self.channels


@dataclass(frozen=True)
class DenseWeights:
    path: str
    in_features: int
    out_features: int
    kind: ClassVar[str] = "dense"

    @property
    def params(self) -> int:
        return self.in_features * self.out_features + self.out_features


Weights = Conv2dWeights | BatchNormWeights | DenseWeights


def conv_flops(c: Conv2dWeights, out_size: int) -> int:
    """Multiply-adds of a convolution producing an out_size x out_size map."""
    return c.out_channels * (c.in_channels // c.groups) * c.kernel**2 * out_size**2


# Nodes -----------------------------------------------------------------------


class ConvNormAct(Node):
    """Convolution (no bias) + batch norm + optional activation: stem and head."""

    kind: Literal["conv"] = "conv"
    name: LayerName
    in_channels: Size
    out_channels: Size
    kernel: Size
    stride: Stride
    padding: Padding
    activation: Activation | None
    norm: Norm
    in_size: Size
    out_size: Size

    def weights(self) -> list[Weights]:
        return [
            Conv2dWeights(
                f"{self.name}.conv", self.in_channels, self.out_channels, self.kernel
            ),
            BatchNormWeights(f"{self.name}.bn", self.out_channels),
        ]

    def flops(self) -> int:
        return conv_flops(self.weights()[0], self.out_size)


class Block(Node):
    """Base of every block kind in a stage; kinds live in archspec.blocks."""

    kind: str
    name: LayerName
    in_channels: Size
    out_channels: Size
    stride: Stride
    in_size: Size
    out_size: Size

    def weights(self) -> list[Weights]:
        raise NotImplementedError

    def flops(self) -> int:
        raise NotImplementedError


class Stage(Node):
    name: LayerName
    blocks: tuple[SerializeAsAny[Block], ...]


class Preprocess(Node):
    """Input normalisation inside the model: (x * scale - mean) / std per channel."""

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]


class Input(Node):
    channels: Size
    resolution: Size
    preprocess: Preprocess | None = None


class Classifier(Node):
    """Global average pool, dropout, then a dense layer to the class logits."""

    name: LayerName = "classifier"
    in_features: Size
    num_classes: Annotated[int, Field(gt=0, le=1 << 20)]
    dropout: Probability

    def weights(self) -> list[Weights]:
        return [DenseWeights(self.name, self.in_features, self.num_classes)]

    def flops(self) -> int:
        return self.in_features * self.num_classes


class Source(Node):
    """Where a network came from: enough to say so in generated headers."""

    spec: Text
    phi: int | float
    rule: Literal["published", "formula"]
    width: float
    depth: float
    resolution: int
    dropout: float


class Network(Node):
    format: Literal["archspec.network/1"] = FORMAT
    module: ModuleName
    class_name: ClassName
    title: Text
    source: Source
    input: Input
    stem: ConvNormAct
    stages: tuple[Stage, ...]
    head: ConvNormAct
    classifier: Classifier

    @property
    def blocks(self) -> list[Block]:
        return [block for stage in self.stages for block in stage.blocks]

    def weights(self) -> list[Weights]:
        """All weight-bearing layers in forward order."""
        layers = self.stem.weights()
        for block in self.blocks:
            layers += block.weights()
        return layers + self.head.weights() + self.classifier.weights()
