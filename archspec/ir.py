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
from dataclasses import dataclass, replace
from typing import Annotated, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

# The spec's vocabulary of activations, gates and paddings is the IR's too.
from .types import Activation, Gate, Padding

FORMAT = "archspec.network/2"

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
    # defer_build: a model's validator is built on first use, not at import;
    # a compile uses a few of the dozens of models (0.5 s -> 0.37 s a process).
    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, defer_build=True
    )


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
    last row: floor(size / s), and "valid" does not pad."""
    if padding == "same_even" and kernel > 1:
        return size // stride
    if padding == "valid":
        return max(0, size - kernel) // stride + 1
    return out_size(size, stride)


# Layer nodes -------------------------------------------------------------------
#
# `name` is a node's path relative to its owner: "stem" at the top level,
# "conv1" inside a block. Blocks build their layers with their own name as
# owner, so every tensor path is owner + name + the tensor's part.


# A node's name inside its block: what other nodes name as their inputs.
NodeName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
# The name by which a block's nodes read the block's input.
BLOCK_INPUT = "x"
# A cell's second input: the output of the block before the previous one
# (NASNet's `p`; the network's first block reads its own input there).
BLOCK_PREV = "prev"


class Layer(Node):
    kind: str
    name: LayerName
    # The nodes this one reads, by name inside its block (BLOCK_INPUT: the
    # block's input). Empty: the node listed before it, or the block's input
    # for the first; the stem and the head are plain sequences.
    inputs: tuple[NodeName, ...] = ()

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
    """Max or average pooling with explicit padding, by default PyTorch's: max
    pooling pads with -inf (`fill`), average pooling with zeros counted in the
    mean (`count_pad`).

    `fill: zero`: a max pool over zeros padded around the map
    (keras.applications' ZeroPadding2D + MaxPooling2D), not the same function
    where the map can be negative. `count_pad: false`: an average over the
    window's cells inside the map only (PyTorch's count_include_pad=False,
    Keras's "same" pooling).
    """

    kind: Literal["pool"] = "pool"
    op: Literal["max", "avg"]
    kernel: Size
    stride: Size
    pad: Annotated[int, Field(ge=0, le=16)] = 0  # on every side
    ceil_mode: bool = False
    fill: Literal["-inf", "zero"] = "-inf"  # max pooling's padding
    count_pad: bool = True  # whether average pooling counts its padding
    # TensorFlow's "same" padding at stride 2, worked out from the map's size
    # when run: on an even size the extra row and column go after the map
    # (`pad` is then 0). Stride-1 "same" is `pad: kernel // 2`.
    same: bool = False
    channels: Size
    in_size: Size
    out_size: Size

    @model_serializer(mode="wrap")
    def _without_same(self, handler: SerializerFunctionWrapHandler) -> dict:
        data = handler(self)
        if not self.same:  # the padding `pad` says: as before `same` existed
            data.pop("same", None)
        return data

    @model_validator(mode="after")
    def _one_form(self) -> Pool:
        # One IR per function: each option only where it changes something.
        if self.same and (self.pad or self.stride != 2 or self.ceil_mode):
            raise ValueError("`same` is stride-2 pooling's, with no `pad`")
        if self.fill != "-inf" and self.op != "max":
            raise ValueError("`fill` is max pooling's; average pooling pads zeros")
        if not self.count_pad and self.op != "avg":
            raise ValueError("`count_pad` is average pooling's")
        if self.fill == "zero" and self.ceil_mode:
            raise ValueError(
                "ceil_mode pools pad as PyTorch does (-inf): not with fill zero"
            )
        return self


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
    (The block kind "dense", DenseNet's layer, is blocks.dense.DenseLayer.)

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


# Nodes that only route and combine maps inside a block: no weights, no
# multiply-adds counted. `channels` is each one's output width, checked
# against its inputs (`check_graph`).


class Act(Layer):
    """An activation on its own (after a residual add: ResNet's ReLU)."""

    kind: Literal["act"] = "act"
    channels: Size
    activation: Activation


class Identity(Layer):
    """Its input, unchanged: a named alias (a shortcut that is the input)."""

    kind: Literal["identity"] = "identity"
    channels: Size


class DropPath(Layer):
    """Stochastic depth on a residual branch: while training, zero it for a
    whole sample. Its rate is the block's, from its place in the network
    (`Network.drop_path`)."""

    kind: Literal["drop_path"] = "drop_path"
    channels: Size


class Add(Layer):
    """The sum of two or more maps of one shape."""

    kind: Literal["add"] = "add"
    channels: Size


class Concat(Layer):
    """Maps of one size stacked along channels, in the order of `inputs`."""

    kind: Literal["concat"] = "concat"
    channels: Size


class Multiply(Layer):
    """The first input scaled by the second (a gate, of the same shape or 1x1)."""

    kind: Literal["multiply"] = "multiply"
    channels: Size


class Pad(Layer):
    """Zeros around the map: (top, bottom, left, right) rows and columns.
    Maps are square, so top + bottom must equal left + right."""

    kind: Literal["pad"] = "pad"
    channels: Size
    pad: tuple[
        Annotated[int, Field(ge=0, le=16)],
        Annotated[int, Field(ge=0, le=16)],
        Annotated[int, Field(ge=0, le=16)],
        Annotated[int, Field(ge=0, le=16)],
    ]
    in_size: Size
    out_size: Size

    @model_validator(mode="after")
    def _square(self) -> Pad:
        top, bottom, left, right = self.pad
        if top + bottom != left + right:
            raise ValueError(
                f"maps are square: top + bottom ({top + bottom}) must equal "
                f"left + right ({left + right})"
            )
        if self.out_size != self.in_size + top + bottom:
            raise ValueError(
                f"out_size must be in_size + top + bottom = "
                f"{self.in_size + top + bottom}, found {self.out_size}"
            )
        return self


class Call(Layer):
    """A block kind used as an op inside another block's graph (NASNet's
    separable branch inside its cells): its own graph, every number written
    out, computed as one node. Its tensors are `{name}.{node}` inside the
    calling block. Backends write one class or helper per structure of it,
    as for blocks; a backend may as well inline the graph (ONNX functions)."""

    kind: Literal["call"] = "call"
    op: ModuleName  # the kind called
    class_name: ClassName | None = None
    in_channels: Size
    out_channels: Size
    stride: Stride = 1
    in_size: Size
    out_size: Size
    names: dict[ModuleName, int | float | bool] = {}  # as GraphBlock's
    graph_: tuple[AnyLayer, ...] = Field(alias="graph", min_length=1)

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    def as_block(self, owner: str = "") -> GraphBlock:
        """The call as a block of its kind, named by its path."""
        return GraphBlock(
            kind=self.op,
            name=join(owner, self.name),
            class_name=self.class_name,
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            stride=self.stride,
            in_size=self.in_size,
            out_size=self.out_size,
            names=self.names,
            graph=self.graph_,
        )

    def weights(self, owner: str = "") -> list[Weights]:
        return [
            replace(w, part=join(self.name, w.part))
            for layer in self.graph_
            for w in layer.weights(owner)
        ]

    def flops(self) -> int:
        return sum(layer.flops() for layer in self.graph_)


class Shift(Layer):
    """The map moved one pixel up and left, a zero row and column filling in
    at the bottom and right: NASNet's factorized reduction
    (`ZeroPadding2D(((0, 1), (0, 1)))` then `Cropping2D(((1, 0), (1, 0)))`)."""

    kind: Literal["shift"] = "shift"
    channels: Size


AnyLayer = Annotated[
    Conv
    | Pool
    | GlobalPool
    | NormAct
    | Dropout
    | Dense
    | SqueezeExcite
    | Act
    | Identity
    | DropPath
    | Add
    | Concat
    | Multiply
    | Pad
    | Shift
    | Call,
    Field(discriminator="kind"),
]


# Blocks ------------------------------------------------------------------------


class Block(Node):
    """Base of every block kind in a stage; kinds live in archspec.blocks.

    A block is a small dataflow graph (`graph()`): layer nodes and the merges
    between them, in topological order, each naming its inputs; the last
    node is the block's output. A kind adds its own fields and states its
    graph once, in `graph()`; its weights, FLOPs and sub-layers derive from
    that. Kinds written in a spec (archspec.blocks.graph) hold their graph as
    data instead.
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

    # The class (PyTorch) a generic emitter names blocks of this kind after.
    CLASS_NAME: ClassVar[str | None] = None

    def graph(self) -> list[Layer]:
        # A kind written before blocks were graphs lists its layers: a chain.
        if type(self).layers is not Block.layers:
            return self.layers()
        raise NotImplementedError(f"{type(self).__name__} states no graph()")

    def block_class(self) -> str:
        return type(self).CLASS_NAME or camel(self.kind)

    def layers(self) -> list[Layer]:
        """Every node of the graph, in its order."""
        return self.graph()

    def weights(self) -> list[Weights]:
        return [w for layer in self.graph() for w in layer.weights(self.name)]

    def flops(self) -> int:
        return sum(layer.flops() for layer in self.graph())

    def check(self) -> list[tuple[int | None, str]]:
        """What is wrong with the block's graph (`check_graph`): empty if sound."""
        return check_graph(
            self.graph(),
            {BLOCK_INPUT: Shape(self.in_channels, self.in_size)},
            Shape(self.out_channels, self.out_size),
        )

    @property
    def drops_path(self) -> bool:
        """Whether the block has a stochastic-depth node."""
        return any(isinstance(node, DropPath) for node in self.graph())

    @model_serializer(mode="wrap")
    def _with_graph(self, handler: SerializerFunctionWrapHandler, info) -> dict:
        # An expanded network shows every block's graph; kinds that compute
        # theirs from their fields get it written out (and checked on reading
        # back, archspec.network_file).
        data = handler(self)
        # What only cells (prev) and spec-defined kinds (names) have is left
        # out where a block has none.
        for key in ("prev", "prev_channels", "prev_size", "names"):
            if key in data and not data[key]:
                del data[key]
        if not isinstance(self, GraphBlock):
            data["graph"] = [
                {"kind": node.kind, "name": node.name}
                | node.model_dump(mode=info.mode, exclude_defaults=True)
                for node in self.graph()
            ]
        return data


def camel(kind: str) -> str:
    """A kind's name as a class name: preact_bottleneck -> PreactBottleneck."""
    return "".join(part[:1].upper() + part[1:] for part in kind.split("_"))


class GraphBlock(Block):
    """A block whose graph is data: a kind defined in a spec's `blocks:`
    section (archspec.blocks.graph), expanded with every width written out.
    Backends emit it through their generic emitter."""

    kind: ModuleName
    class_name: ClassName | None = None
    # A cell's second input (BLOCK_PREV): the output it reads there (a
    # block's name, or the stem's last layer) and its shape; None: the
    # block reads one input.
    prev: LayerName | None = None
    prev_channels: Size | None = None
    prev_size: Size | None = None
    # The values of the spec's names the graph was built from that a reader
    # knows the block by: its kind's columns, and a cell's `channels` (the
    # width of its branches); generic emitters name arguments after them.
    names: dict[ModuleName, int | float | bool] = {}
    graph_: tuple[AnyLayer, ...] = Field(alias="graph", min_length=1)

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    @model_validator(mode="after")
    def _prev_shape(self) -> GraphBlock:
        given = (self.prev_channels is not None, self.prev_size is not None)
        if given != (self.prev is not None,) * 2:
            raise ValueError("`prev`, `prev_channels` and `prev_size` go together")
        return self

    def graph(self) -> list[Layer]:
        return list(self.graph_)

    def check(self) -> list[tuple[int | None, str]]:
        given = {BLOCK_INPUT: Shape(self.in_channels, self.in_size)}
        if self.prev is not None:
            given[BLOCK_PREV] = Shape(self.prev_channels, self.prev_size)
        return check_graph(self.graph(), given, Shape(self.out_channels, self.out_size))

    def block_class(self) -> str:
        return self.class_name or camel(self.kind)


@dataclass(frozen=True)
class Shape:
    channels: int
    size: int


# What each node kind needs of its inputs: how many (None: two or more).
ARITY = {"add": None, "concat": None, "multiply": 2}
# Node kinds that may stand inside a block (the rest are stem and head only).
BLOCK_NODES = (
    "conv",
    "pool",
    "norm_act",
    "se",
    "act",
    "identity",
    "drop_path",
    "add",
    "concat",
    "multiply",
    "pad",
    "shift",
    "call",
)


def check_graph(
    nodes: list[Layer], given: dict[str, Shape], output: Shape | None = None
) -> list[tuple[int | None, str]]:
    """Check a block's graph, inferring every node's output shape: inputs
    that exist and come earlier (so no cycle), widths and sizes that fit at
    every node, every node used, and the last node of shape `output`.

    Returns (index of the node or None for the block, message) pairs: empty
    when the graph is sound.
    """
    errors: list[tuple[int | None, str]] = []
    shapes: dict[str, Shape] = dict(given)
    used: set[str] = set()
    previous = next(iter(given)) if given else None
    for i, node in enumerate(nodes):
        if node.kind not in BLOCK_NODES:
            errors.append((i, f"a {node.kind!r} node cannot stand inside a block"))
            continue
        if node.name in shapes:
            errors.append((i, f"the name {node.name!r} is taken by an earlier node"))
        names = node.inputs or ((previous,) if previous else ())
        unknown = [n for n in names if n not in shapes]
        if unknown:
            later = {n.name for n in nodes[i:]}
            errors.append(
                (
                    i,
                    f"input {unknown[0]!r} "
                    + (
                        "comes later in the graph (a cycle, or nodes out of order)"
                        if unknown[0] in later
                        else f"is no node of the block (known: {', '.join(shapes)})"
                    ),
                )
            )
            previous = node.name
            continue
        used.update(names)
        shape = node_shape(node, [shapes[n] for n in names], errors, i)
        shapes[node.name] = shape or Shape(getattr(node, "channels", 1), 1)
        previous = node.name
    for i, node in enumerate(nodes[:-1]):
        if node.name not in used:
            errors.append((i, f"node {node.name!r} is not used by any other node"))
    if nodes and output is not None and not errors:
        last = shapes[nodes[-1].name]
        if last != output:
            errors.append(
                (
                    len(nodes) - 1,
                    f"the block's output {_shape(output)} was expected from its "
                    f"last node {nodes[-1].name!r}, found {_shape(last)}",
                )
            )
    return errors


def _shape(shape: Shape) -> str:
    return f"{shape.channels} channels at {shape.size}x{shape.size}"


def node_shape(node: Layer, inputs: list[Shape], errors: list, i: int) -> Shape | None:
    def fail(message: str) -> None:
        errors.append((i, message))

    arity = ARITY.get(node.kind, 1)
    if arity is None and len(inputs) < 2:
        return fail(
            f"a {node.kind!r} node takes two or more inputs, found {len(inputs)}"
        )
    if arity is not None and len(inputs) != arity:
        return fail(f"a {node.kind!r} node takes {arity} input(s), found {len(inputs)}")
    first = inputs[0]
    if isinstance(node, Conv):
        if first.channels != node.in_channels or first.size != node.in_size:
            return fail(
                f"the convolution takes {node.in_channels} channels at "
                f"{node.in_size}x{node.in_size}, its input has {_shape(first)}"
            )
        return Shape(node.out_channels, node.out_size)
    if isinstance(node, Add):
        if len(set(inputs)) > 1:
            found = ", ".join(_shape(s) for s in inputs)
            return fail(f"an add needs inputs of one shape, found {found}")
        if first.channels != node.channels:
            return fail(
                f"the add has {node.channels} channels, its inputs {first.channels}"
            )
        return first
    if isinstance(node, Concat):
        if len({s.size for s in inputs}) > 1:
            found = ", ".join(_shape(s) for s in inputs)
            return fail(f"a concat needs inputs of one size, found {found}")
        total = sum(s.channels for s in inputs)
        if total != node.channels:
            return fail(f"the concat has {node.channels} channels, its inputs {total}")
        return Shape(total, first.size)
    if isinstance(node, Call):
        if first.channels != node.in_channels or first.size != node.in_size:
            return fail(
                f"the {node.op} takes {node.in_channels} channels at "
                f"{node.in_size}x{node.in_size}, its input has {_shape(first)}"
            )
        return Shape(node.out_channels, node.out_size)
    if isinstance(node, Multiply):
        gate = inputs[1]
        if gate.channels != first.channels or gate.size not in (1, first.size):
            return fail(
                f"a multiply scales {_shape(first)} by a gate of the same shape "
                f"(or 1x1), found {_shape(gate)}"
            )
    channels = getattr(node, "channels", None)
    if channels is not None and first.channels != channels:
        return fail(f"the node has {channels} channels, its input {first.channels}")
    if isinstance(node, Pool | Pad):
        if first.size != node.in_size:
            return fail(
                f"the node takes a {node.in_size}x{node.in_size} map, its input "
                f"is {first.size}x{first.size}"
            )
        return Shape(first.channels, node.out_size)
    return Shape(first.channels, first.size)


class Stage(Node):
    name: LayerName
    blocks: tuple[SerializeAsAny[Block], ...]


class Preprocess(Node):
    """Input normalisation inside the model: (x * scale - mean) / std per channel."""

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]


class Data(Node):
    """The evaluation transform the reference's weights expect (timm's
    pretrained_cfg); what the spec does not state is None."""

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = None
    crop_pct: Annotated[float, Field(gt=0, le=1)] | None = None


class Input(Node):
    channels: Size
    resolution: Size
    preprocess: Preprocess | None = None
    data: Data | None = None


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
