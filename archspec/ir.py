"""The backend-neutral intermediate representation: one explicit network per variant.

A network is an input (with optional in-model preprocessing), a stem that is a
sequence of layers, stages of blocks, and a head that is a sequence of layers.
A small closed set of layer nodes (conv, pool, global pool, norm + activation,
dropout, dense, squeeze-excitation) serves the stem, the head and the inside
of every block. Each node carries its own settings (activation, norm,
padding): backends may hoist a setting into a module constant when it is
uniform, but nothing here assumes it is.

Block kinds are an open registry (archspec.blocks). A block declares its named
sub-layers (`layers()`), and everything else is derived from those generically:
parameter counts, FLOPs, weight names, weight transfer between backends and
the name mappings to reference implementations.

Every weight-bearing layer has a stable dotted name (`stages.2.0.depthwise.conv`);
each backend derives its own parameter names from it. The IR is frozen pydantic
models, so an expanded network serialises to YAML and validates back
unchanged (`archspec expand`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny

FORMAT = "archspec.network/2"

Padding = Literal["same", "symmetric", "same_even"]
Activation = Literal["silu", "relu", "relu6", "hardswish", "gelu"]
Gate = Literal["sigmoid", "hardsigmoid"]

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
#
# `owner` is the block (or top-level layer) a tensor belongs to and `part` its
# name inside it, so reference mappings translate (block kind, part) pairs and
# never parse paths.


@dataclass(frozen=True)
class Conv2dWeights:
    owner: str
    part: str
    in_channels: int
    out_channels: int
    kernel: int
    groups: int = 1
    bias: bool = False
    kind: ClassVar[str] = "conv2d"

    @property
    def path(self) -> str:
        return join(self.owner, self.part)

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
        """One group per input channel, each with out/in filters (the depth
        multiplier; MobileNetV1's `depth_multiplier`)."""
        return (
            self.groups > 1
            and self.groups == self.in_channels
            and self.out_channels % self.in_channels == 0
        )

    @property
    def params(self) -> int:
        count = self.out_channels * (self.in_channels // self.groups) * self.kernel**2
        return count + (self.out_channels if self.bias else 0)


@dataclass(frozen=True)
class BatchNormWeights:
    owner: str
    part: str
    channels: int
    kind: ClassVar[str] = "batch_norm"

    @property
    def path(self) -> str:
        return join(self.owner, self.part)

    @property
    def params(self) -> int:
        """Trainable scale and shift; running mean and variance are buffers."""
        return 2 * self.channels


@dataclass(frozen=True)
class DenseWeights:
    owner: str
    part: str
    in_features: int
    out_features: int
    bias: bool = True
    kind: ClassVar[str] = "dense"

    @property
    def path(self) -> str:
        return join(self.owner, self.part)

    @property
    def params(self) -> int:
        return self.in_features * self.out_features + (
            self.out_features if self.bias else 0
        )


Weights = Conv2dWeights | BatchNormWeights | DenseWeights


def join(owner: str, part: str) -> str:
    return f"{owner}.{part}" if owner and part else owner or part


def out_size(size: int, stride: int) -> int:
    """Feature-map size after a padded stride-s layer: ceil(size / s)."""
    return -(-size // stride)


def conv_out_size(size: int, kernel: int, stride: int, padding: Padding) -> int:
    """Feature-map size after a convolution: ceil(size / s), except that
    "same_even" pads (k//2 - 1, k//2) also on odd sizes, which loses the
    last row: floor(size / s)."""
    if padding == "same_even" and kernel > 1:
        return size // stride
    return out_size(size, stride)


# Layer nodes -------------------------------------------------------------------
#
# `name` is a node's path relative to its owner: "stem" at the top level,
# "conv1" inside a block. Blocks build their layers with their own name as
# owner, so every tensor path is owner + name + the tensor's part.


class Layer(Node):
    kind: str
    name: LayerName

    def weights(self, owner: str = "") -> list[Weights]:
        return []

    def flops(self) -> int:
        return 0


class Conv(Layer):
    """Convolution, then optional batch norm, then optional activation.

    Tensors: `{name}.conv` and `{name}.bn` with a norm, `{name}` alone without.
    """

    kind: Literal["conv"] = "conv"
    in_channels: Size
    out_channels: Size
    kernel: Size
    stride: Stride = 1
    groups: Size = 1
    bias: bool = False
    padding: Padding
    norm: Norm | None
    activation: Activation | None
    in_size: Size
    out_size: Size

    @property
    def depthwise(self) -> bool:
        return (
            self.groups > 1
            and self.groups == self.in_channels
            and self.out_channels % self.in_channels == 0
        )

    def weights(self, owner: str = "") -> list[Weights]:
        if self.norm is None:
            return [self._conv(owner, self.name)]
        return [
            self._conv(owner, f"{self.name}.conv"),
            BatchNormWeights(owner, f"{self.name}.bn", self.out_channels),
        ]

    def _conv(self, owner: str, part: str) -> Conv2dWeights:
        return Conv2dWeights(
            owner,
            part,
            self.in_channels,
            self.out_channels,
            self.kernel,
            self.groups,
            self.bias,
        )

    def flops(self) -> int:
        """Multiply-adds of the convolution (norm and activation not counted)."""
        per_pixel = self.out_channels * (self.in_channels // self.groups)
        return per_pixel * self.kernel**2 * self.out_size**2


class Pool(Layer):
    """Max or average pooling with explicit padding (PyTorch's semantics: max
    pooling pads with -inf, average pooling with zeros counted in the mean)."""

    kind: Literal["pool"] = "pool"
    op: Literal["max", "avg"]
    kernel: Size
    stride: Size
    pad: Annotated[int, Field(ge=0, le=16)] = 0  # on every side
    ceil_mode: bool = False
    channels: Size
    in_size: Size
    out_size: Size


class GlobalPool(Layer):
    """Pooling over the whole feature map; the output is (batch, channels)."""

    kind: Literal["global_pool"] = "global_pool"
    op: Literal["avg", "max"] = "avg"
    channels: Size


class NormAct(Layer):
    """Batch norm and an optional activation on their own (DenseNet's norm5)."""

    kind: Literal["norm_act"] = "norm_act"
    channels: Size
    norm: Norm
    activation: Activation | None

    def weights(self, owner: str = "") -> list[Weights]:
        return [BatchNormWeights(owner, f"{self.name}.bn", self.channels)]


class Dropout(Layer):
    kind: Literal["dropout"] = "dropout"
    rate: Probability


class Dense(Layer):
    """Fully connected layer on pooled features, with an optional activation.

    With `conv`, computed as a 1x1 convolution on the pooled 1x1 map and
    holding its weights so (keras.applications' MobileNets): the same
    function, in the layout whose weights load.
    """

    kind: Literal["dense"] = "dense"
    in_features: Size
    out_features: Annotated[int, Field(gt=0, le=1 << 20)]
    bias: bool = True
    activation: Activation | None = None
    conv: bool = False

    def weights(self, owner: str = "") -> list[Weights]:
        if self.conv:
            return [
                Conv2dWeights(
                    owner,
                    self.name,
                    self.in_features,
                    self.out_features,
                    1,
                    bias=self.bias,
                )
            ]
        return [
            DenseWeights(
                owner, self.name, self.in_features, self.out_features, self.bias
            )
        ]

    def flops(self) -> int:
        return self.in_features * self.out_features


class SqueezeExcite(Layer):
    """Channel attention: global mean, 1x1 reduce (+bias), activation, 1x1
    expand (+bias), gate, then the input scaled by the gate."""

    kind: Literal["se"] = "se"
    channels: Size
    squeeze_channels: Size
    activation: Activation
    gate: Gate = "sigmoid"

    def weights(self, owner: str = "") -> list[Weights]:
        c, s = self.channels, self.squeeze_channels
        return [
            Conv2dWeights(owner, f"{self.name}.reduce", c, s, 1, bias=True),
            Conv2dWeights(owner, f"{self.name}.expand", s, c, 1, bias=True),
        ]

    def flops(self) -> int:
        return 2 * self.channels * self.squeeze_channels  # on a 1x1 map


AnyLayer = Annotated[
    Conv | Pool | GlobalPool | NormAct | Dropout | Dense | SqueezeExcite,
    Field(discriminator="kind"),
]


# Blocks ------------------------------------------------------------------------


class Block(Node):
    """Base of every block kind in a stage; kinds live in archspec.blocks.

    A kind adds its own fields and `layers()`: its weight-bearing (and other)
    sub-layers, named relative to the block, in forward order.
    """

    kind: str
    name: LayerName
    in_channels: Size
    out_channels: Size
    stride: Stride
    in_size: Size
    out_size: Size

    # Blocks with a residual branch take part in stochastic depth.
    stochastic_depth: ClassVar[bool] = False
    # Blocks whose `activation` may differ from the rest of the network's.
    per_layer_activation: ClassVar[bool] = False

    def layers(self) -> list[Layer]:
        raise NotImplementedError

    def weights(self) -> list[Weights]:
        return [w for layer in self.layers() for w in layer.weights(self.name)]

    def flops(self) -> int:
        return sum(layer.flops() for layer in self.layers())


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


class Source(Node):
    """Where a network came from: enough to say so in generated headers."""

    spec: Text
    variant: ModuleName
    rule: Literal["compound", "formula", "table", "width"]
    phi: int | float | None = None
    listed: bool = True  # named in the spec; else a formula phi or a free width
    width: float
    depth: float
    resolution: int
    dropout: float


class Network(Node):
    format: Literal["archspec.network/2"] = FORMAT
    module: ModuleName
    class_name: ClassName
    title: Text
    source: Source
    input: Input
    stem: tuple[AnyLayer, ...]
    stages: tuple[Stage, ...]
    head: tuple[AnyLayer, ...]
    # Stochastic depth: residual block i of n (counting all blocks) drops
    # its branch with probability drop_path * i / n, as torchvision does.
    drop_path: Probability = 0.0

    @property
    def blocks(self) -> list[Block]:
        return [block for stage in self.stages for block in stage.blocks]

    @property
    def layers(self) -> list[Layer]:
        """The top-level layers: stem, then head."""
        return [*self.stem, *self.head]

    @property
    def classifier(self) -> Dense:
        """The last layer of the head: it maps features to classes."""
        return self.head[-1]

    @property
    def dropout(self) -> float:
        """The rate of the dropout right before the classifier (0: none)."""
        rates = [layer.rate for layer in self.head if isinstance(layer, Dropout)]
        return rates[-1] if rates else 0.0

    def weights(self) -> list[Weights]:
        """All weight-bearing layers in forward order."""
        layers = [w for layer in self.stem for w in layer.weights()]
        for block in self.blocks:
            layers += block.weights()
        return layers + [w for layer in self.head for w in layer.weights()]

    def flops(self) -> int:
        """Multiply-adds of one forward pass at the network's resolution."""
        return sum(layer.flops() for layer in self.layers) + sum(
            block.flops() for block in self.blocks
        )


def pool_out_size(size: int, kernel: int, stride: int, padding: int, ceil: bool) -> int:
    span = size + 2 * padding - kernel
    steps = math.ceil(span / stride) if ceil else span // stride
    if ceil and steps * stride >= size + padding:
        steps -= 1  # PyTorch: the last window must start inside the input
    return steps + 1
