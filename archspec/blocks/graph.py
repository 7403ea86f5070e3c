"""Block kinds written in a spec: the `blocks:` section.

A definition names its columns (as a built-in kind's row model does), the
block's output width, and its graph: named nodes, each an op over the nodes
it reads. Widths, strides and conditions are expressions of the grammar in
archspec.expr over the row's columns and the block's `channels` (the row's
width, scaled), `in_channels`, `out_channels` and `stride`::

    blocks:
      preact_bottleneck:
        columns:
          expansion: {type: int, default: 4, min: 1, description: ...}
        out: channels * expansion
        graph:
          preact: {op: norm_act}
          conv1:  {op: conv, kernel: 1, channels: channels}
          conv2:  {op: conv, kernel: 3, stride: stride}
          conv3:  {op: conv, kernel: 1, channels: out_channels, norm: false, act: false}
          shortcut: {op: conv, in: preact, kernel: 1, stride: stride,
                     channels: out_channels, norm: false, act: false,
                     when: "stride != 1 or in_channels != out_channels", else: x}
          add:    {op: add, in: [conv3, shortcut]}

A node reads the node written before it unless `in` says otherwise (`x`: the
block's input). A node whose `when` is false is left out; nodes that read it
read its `else` (default: its own input) instead. The last node (or
`output`) is the block's output. Such a kind expands to `ir.GraphBlock`:
every width written out, so backends emit it through their generic path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, create_model

from .. import ir
from ..errors import Diagnostic, Diagnostics, SpecError, format_path
from ..expr import ExprError, Expression, whole
from ..types import Activation, ClassName, ModuleName, NetworkPadding
from .registry import BUILTIN, BlockContext, BlockKind, StageRow

DataPath = tuple[str | int, ...]
NodeName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
# Expression text, or a plain number.
Expr = Annotated[
    str | int | float,
    Field(
        description="a number or an expression over the columns, channels, "
        "in_channels, out_channels and stride (archspec.expr)"
    ),
]
# Names every block's expressions may read, besides its columns. `prev_*`
# describe a cell's second input (`prev`); `has_prev` is false in the
# network's first block, whose `prev` is its own input.
BLOCK_NAMES = (
    "channels",
    "in_channels",
    "out_channels",
    "stride",
    "in_size",
    "prev_channels",
    "prev_size",
    "has_prev",
)
# The names `out` may not read: a block's width does not depend on sizes.
SIZE_NAMES = {"in_size", "prev_channels", "prev_size", "has_prev"}
# The row column of kinds that read `prev` (NASNet's skip_reduction).
SKIP_REDUCTION = "skip_reduction"
INPUTS = (ir.BLOCK_INPUT, ir.BLOCK_PREV)
RESERVED = {*BLOCK_NAMES, *StageRow.model_fields, *INPUTS, SKIP_REDUCTION}


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        allow_inf_nan=False,
        populate_by_name=True,
        defer_build=True,
    )


class Column(_Model):
    """One column of the kind's stage rows."""

    type: Literal["int", "float", "bool"] = "int"
    default: int | float | bool | None = Field(
        None, description="the value of an empty cell; none: the column is required"
    )
    min: float | None = None
    max: float | None = None
    description: str = ""


class _Node(_Model):
    in_: NodeName | list[NodeName] | None = Field(
        None,
        alias="in",
        description="the node(s) read (x: the block's input; prev: the output "
        "of the block before the previous one); default: the node written "
        "before, or x for the first",
    )
    when: Expr | None = Field(
        None, description="a condition: the node exists only where it holds"
    )
    else_: NodeName | None = Field(
        None,
        alias="else",
        description="where the node is left out, what reads it reads this "
        "instead; default: the node's own input",
    )


class ConvNode(_Node):
    op: Literal["conv"]
    channels: Expr | None = Field(
        None, description="output width; default: the input's"
    )
    kernel: Expr = 1
    stride: Expr = 1
    groups: Expr = Field(1, description="in_channels for a depthwise convolution")
    norm: bool = Field(True, description="a batch norm after the convolution")
    act: Activation | bool = Field(
        True,
        description="the activation after the norm: true for the network's, "
        "false for none, or a name",
    )
    bias: bool | None = Field(None, description="default: the spec's defaults.bias")
    padding: NetworkPadding | None = Field(None, description="default: the network's")


class NormActNode(_Node):
    op: Literal["norm_act"]
    act: Activation | bool = True


class ActNode(_Node):
    op: Literal["act"]
    act: Activation | bool = Field(True, description="true: the network's activation")


class PoolNode(_Node):
    op: Literal["max_pool", "avg_pool"]
    kernel: Expr = 1
    stride: Expr = 1
    pad: Expr = Field(0, description="zeros (or -inf: `fill`) on every side")
    padding: Literal["same"] | None = Field(
        None,
        description="same: TensorFlow's rule instead of `pad` (stride 1: kernel "
        "// 2 on every side; stride 2: on an even size the extra row and column "
        "go after the map)",
    )
    fill: Literal["-inf", "zero"] = Field(
        "-inf",
        description="max pooling: what the padding holds (PyTorch and timm: "
        "-inf; Keras's ZeroPadding2D: zero)",
    )
    count_pad: bool = Field(
        True, description="average pooling: whether padded zeros count in the mean"
    )


class SENode(_Node):
    op: Literal["se"]
    squeeze: Expr = Field(
        description="the squeezed width (rounded by defaults.se.rounding when a "
        "fraction: `in_channels * 0.25`)"
    )


class MergeNode(_Node):
    op: Literal["add", "concat", "multiply"]


class PlainNode(_Node):
    op: Literal["identity", "drop_path", "shift"]


class PadNode(_Node):
    op: Literal["pad"]
    pad: tuple[int, int, int, int] = Field(
        description="zeros (top, bottom, left, right); top + bottom = left + right"
    )


class CallNode(_Node):
    """Another block kind of the spec's `blocks:` used as one op (NASNet's
    separable branch inside its cells): its `channels` and `stride`, and its
    columns as further keys (`kernel: 5`)."""

    model_config = ConfigDict(extra="allow")

    op: ModuleName = Field(description="a block kind this spec defines")
    channels: Expr | None = Field(
        None, description="the called block's `channels`; default: the input's"
    )
    stride: Expr = 1

    def arguments(self) -> dict[str, Any]:
        """The called kind's columns, as given."""
        return dict(self.model_extra or {})


# Each primitive op's node model; any other op calls a kind of the spec's.
_TAGS = {
    "conv": "conv",
    "norm_act": "norm_act",
    "act": "act",
    "max_pool": "pool",
    "avg_pool": "pool",
    "se": "se",
    "add": "merge",
    "concat": "merge",
    "multiply": "merge",
    "identity": "plain",
    "drop_path": "plain",
    "shift": "plain",
    "pad": "pad",
}
PRIMITIVES = tuple(_TAGS)


def _tag(value: Any) -> str | None:
    op = value.get("op") if isinstance(value, dict) else getattr(value, "op", None)
    if not isinstance(op, str):
        return None
    return _TAGS.get(op, "call")


NodeDef = Annotated[
    Annotated[ConvNode, Tag("conv")]
    | Annotated[NormActNode, Tag("norm_act")]
    | Annotated[ActNode, Tag("act")]
    | Annotated[PoolNode, Tag("pool")]
    | Annotated[SENode, Tag("se")]
    | Annotated[MergeNode, Tag("merge")]
    | Annotated[PlainNode, Tag("plain")]
    | Annotated[PadNode, Tag("pad")]
    | Annotated[CallNode, Tag("call")],
    Discriminator(
        _tag,
        custom_error_type="op",
        custom_error_message="expected a node with an `op`",
    ),
]


class BlockDef(_Model):
    """A block kind defined in the spec: columns, output width and graph."""

    description: str = ""
    class_name: ClassName | None = Field(
        None, description="the generated class's name; default: the kind in CamelCase"
    )
    columns: dict[ModuleName, Column] = {}
    out: Expr = Field(
        "channels", description="the block's output width (default: the row's channels)"
    )
    graph: dict[NodeName, NodeDef] = Field(min_length=1)
    output: NodeName | None = Field(None, description="default: the last node")

    @property
    def reads_prev(self) -> bool:
        """Whether the kind is a cell that reads two inputs, `x` and `prev`."""
        written = list(self.graph)
        return any(
            ir.BLOCK_PREV in _inputs(node, written[i - 1] if i else ir.BLOCK_INPUT)
            or node.else_ == ir.BLOCK_PREV
            for i, node in enumerate(self.graph.values())
        )

    def calls(self) -> list[str]:
        """The kinds its graph uses as ops."""
        return [n.op for n in self.graph.values() if isinstance(n, CallNode)]


# Checking a definition ------------------------------------------------------


def _expressions(node: Any) -> list[tuple[str, Any]]:
    fields = ("channels", "kernel", "stride", "groups", "pad", "squeeze", "when")
    return [
        (f, getattr(node, f))
        for f in fields
        if f in type(node).model_fields
        and getattr(node, f) is not None
        and not (f == "pad" and isinstance(node, PadNode))
    ]


def _inputs(node: Any, previous: str) -> list[str]:
    if node.in_ is None:
        return [previous]
    return [node.in_] if isinstance(node.in_, str) else list(node.in_)


def check_definition(
    name: str,
    definition: BlockDef,
    at: DataPath,
    definitions: Mapping[str, BlockDef | None] = MappingProxyType({}),
) -> list[tuple[DataPath, str]]:
    """Every mistake in one definition, each with the path of its value;
    `definitions`: the spec's kinds, which its graph may use as ops."""
    errors: list[tuple[DataPath, str]] = []
    if name in BUILTIN:
        errors.append(
            ((*at,), f"{name!r} is a built-in block kind; choose another name")
        )
    for column in definition.columns:
        if column in RESERVED:
            errors.append(
                (
                    (*at, "columns", column),
                    f"the column name {column!r} is taken (reserved: "
                    f"{', '.join(sorted(RESERVED))})",
                )
            )
    known = {*definition.columns, *BLOCK_NAMES}

    def expression(value: Any, where: DataPath, allowed: set[str]) -> None:
        try:
            parsed = Expression.parse(value)
        except ExprError as exc:
            errors.append((where, f"in {value!r}: {exc}"))
            return
        for word, column in parsed.names():
            if word not in allowed:
                errors.append(
                    (
                        where,
                        f"in {value!r} at column {column + 1}: unknown name {word!r} "
                        f"(known: {', '.join(sorted(allowed))})",
                    )
                )

    expression(definition.out, (*at, "out"), known - {"out_channels", *SIZE_NAMES})
    nodes = definition.graph
    order = list(nodes)
    edges: dict[str, list[str]] = {}
    previous = ir.BLOCK_INPUT
    for node_name, node in nodes.items():
        where = (*at, "graph", node_name)
        if node_name in INPUTS:
            errors.append(
                (where, f"{node_name!r} names a block input; choose another name")
            )
        reads = _inputs(node, previous)
        arity = {"add": None, "concat": None, "multiply": 2}.get(node.op, 1)
        if arity is None and len(reads) < 2:
            errors.append(
                (
                    (*where, "in"),
                    f"{node.op!r} takes two or more inputs, found {len(reads)}",
                )
            )
        elif arity is not None and len(reads) != arity:
            errors.append(
                (
                    (*where, "in"),
                    f"{node.op!r} takes {arity} input(s), found {len(reads)}",
                )
            )
        targets = [*reads, *([node.else_] if node.else_ else [])]
        for target in targets:
            if target not in INPUTS and target not in nodes:
                field = "else" if target == node.else_ and target not in reads else "in"
                errors.append(
                    (
                        (*where, field),
                        f"unknown node {target!r} (known: x, prev, {', '.join(order)})",
                    )
                )
        if isinstance(node, CallNode):
            errors += _check_call(node, where, definitions, expression, known)
        if isinstance(node, PoolNode) and node.padding and node.pad != 0:
            errors.append(((*where, "pad"), "expected `pad` or `padding`, not both"))
        edges[node_name] = [t for t in targets if t in nodes]
        for field, value in _expressions(node):
            expression(value, (*where, field), known)
        if node.else_ is not None and node.when is None:
            errors.append(((*where, "else"), "`else` needs a `when`"))
        previous = node_name
    output = definition.output or order[-1]
    if output not in nodes:
        errors.append(((*at, "output"), f"unknown node {output!r}"))
    cycle = _cycle(edges)
    if cycle:
        errors.append(
            ((*at, "graph", cycle[0]), f"a cycle: {' -> '.join([*cycle, cycle[0]])}")
        )
    used = {t for targets in edges.values() for t in targets}
    for node_name in order:
        if node_name != output and node_name not in used:
            errors.append(
                (
                    (*at, "graph", node_name),
                    f"node {node_name!r} is not used by any node",
                )
            )
    return errors


def _check_call(
    node: CallNode,
    where: DataPath,
    definitions: Mapping[str, BlockDef | None],
    expression: Callable[[Any, DataPath, set[str]], None],
    known: set[str],
) -> list[tuple[DataPath, str]]:
    """A node that uses another kind as its op: one the spec defines, with
    one input, given its columns and nothing else."""
    if node.op not in definitions:
        ops = ", ".join([*PRIMITIVES, *sorted(definitions)])
        return [((*where, "op"), f"unknown op {node.op!r} (known: {ops})")]
    callee = definitions[node.op]
    if callee is None:
        return []  # its own definition's errors say what is wrong
    errors: list[tuple[DataPath, str]] = []
    if callee.reads_prev:
        errors.append(
            ((*where, "op"), f"{node.op!r} reads two inputs (prev): not an op")
        )
    given = node.arguments()
    for key, value in given.items():
        if key not in callee.columns:
            columns = ", ".join(["channels", "stride", *callee.columns])
            errors.append(
                (
                    (*where, key),
                    f"{node.op!r} has no column {key!r} (known: {columns})",
                )
            )
        elif isinstance(value, bool | int | float | str):
            expression(value, (*where, key), known)
        else:
            errors.append(((*where, key), "expected a number or an expression"))
    for key, column in callee.columns.items():
        if column.default is None and key not in given:
            errors.append(((*where,), f"{node.op!r} needs its column {key!r}"))
    return errors


def call_cycle(definitions: Mapping[str, BlockDef]) -> list[str] | None:
    """Kinds that use each other as ops, round in a circle, if any."""
    return _cycle(
        {
            name: [c for c in d.calls() if c in definitions]
            for name, d in definitions.items()
        }
    )


def _cycle(edges: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in edges.get(node, ()):
            if state.get(target) == 1:
                return stack[stack.index(target) :]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in edges:
        if node not in state and (found := visit(node)):
            return found
    return None


def topological(definition: BlockDef) -> list[str]:
    """The nodes in an order where each comes after what it reads, keeping
    the written order where it already does (checked: no cycle)."""
    nodes = definition.graph
    order, done = [], set()
    written = list(nodes)
    previous = {
        n: (written[i - 1] if i else ir.BLOCK_INPUT) for i, n in enumerate(written)
    }

    def visit(name: str) -> None:
        if name in done or name not in nodes:
            return
        done.add(name)
        node = nodes[name]
        for target in [
            *_inputs(node, previous[name]),
            *([node.else_] if node.else_ else []),
        ]:
            visit(target)
        order.append(name)

    for name in nodes:
        visit(name)
    return order


# The kind ----------------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """Where a definition sits, so build-time errors (a width that is not a
    whole number, an add of unequal shapes) name the spec's line."""

    position: Callable[[DataPath], Any]
    path: DataPath

    def error(self, message: str, *parts: str | int) -> Diagnostic:
        at = (*self.path, *parts)
        return Diagnostic(message, self.position(at), format_path(at))


@dataclass(frozen=True)
class Defined:
    """A kind's definition and where it sits: what a call to it builds from."""

    definition: BlockDef
    where: Where


def make_kind(
    name: str,
    definition: BlockDef,
    where: Where,
    definitions: Mapping[str, Defined] = MappingProxyType({}),
) -> BlockKind:
    """A BlockKind whose rows have the definition's columns and whose blocks
    are `ir.GraphBlock`s built from its graph; `definitions`: the spec's
    kinds, which the graph may call."""
    fields: dict[str, Any] = {"block": (Literal[name], ...)}  # type: ignore[valid-type]
    if definition.reads_prev:
        fields[SKIP_REDUCTION] = (
            bool,
            Field(
                False,
                description="after this row's last block, the next block reads as "
                "`prev` this block's own `prev`, not its input (NASNet's "
                "skip_reduction: the cell after a reduction reads the cell before it)",
            ),
        )
    types = {"int": int, "float": float, "bool": bool}
    for column, spec in definition.columns.items():
        bounds = {}
        if spec.min is not None:
            bounds["ge"] = spec.min
        if spec.max is not None:
            bounds["le"] = spec.max
        default = ... if spec.default is None else spec.default
        fields[column] = (
            Annotated[types[spec.type], Field(**bounds)],
            Field(default, description=spec.description or None),
        )

    def block_channels(self: StageRow, in_channels: int, scale) -> int:
        columns = _columns(self, definition)
        channels = scale(self.channels)
        return out_width(definition, where, columns, channels, in_channels, self.stride)

    # A row model of the definition's columns; its output width is `out`.
    base = type(
        f"{ir.camel(name)}RowBase", (StageRow,), {"block_channels": block_channels}
    )
    row = create_model(
        f"{ir.camel(name)}Row",
        __base__=base,
        __doc__=definition.description
        or f"A row of {name} blocks (defined in the spec).",
        **fields,
    )

    def build(row_value: StageRow, at: BlockContext) -> ir.GraphBlock:
        columns = _columns(row_value, definition)
        channels = at.scale(row_value.channels)
        return _build(name, definition, columns, channels, at, where, definitions)

    return BlockKind(name, row, ir.GraphBlock, build)


def out_width(
    definition: BlockDef,
    where: Where,
    columns: dict[str, Any],
    channels: int,
    in_channels: int,
    stride: int,
) -> int:
    """A block's output width: the definition's `out`, for a row (or a call)
    with these columns, `channels`, input width and stride."""
    names = {**columns, "channels": channels, "in_channels": in_channels}
    names["stride"] = stride
    try:
        value = Expression.parse(definition.out).evaluate(names)
        return whole(value, "the block's output width")
    except ExprError as exc:
        raise SpecError(where.error(f"in {definition.out!r}: {exc}", "out")) from None


def _columns(row: StageRow, definition: BlockDef) -> dict[str, Any]:
    return {column: getattr(row, column) for column in definition.columns}


def _build(
    name: str,
    definition: BlockDef,
    columns: dict[str, Any],
    channels: int,
    at: BlockContext,
    where: Where,
    definitions: Mapping[str, Defined],
) -> ir.GraphBlock:
    prev = (at.prev_channels, at.prev_size) if at.prev else (at.in_channels, at.in_size)
    names = {**columns, "channels": channels}
    names.update(
        in_channels=at.in_channels,
        out_channels=at.out_channels,
        stride=at.stride,
        in_size=at.in_size,
        prev_channels=prev[0],
        prev_size=prev[1],
        has_prev=at.has_prev,
    )
    diagnostics = Diagnostics()

    def value(node_name: str, field: str, text: Any, *, integer: bool = True) -> Any:
        try:
            result = Expression.parse(text).evaluate(names, at.make_divisible)
            return whole(result, field) if integer else result
        except ExprError as exc:
            diagnostics.items.append(
                where.error(f"in {text!r}: {exc}", "graph", node_name, field)
            )
            return None

    written = list(definition.graph)
    previous = {
        n: (written[i - 1] if i else ir.BLOCK_INPUT) for i, n in enumerate(written)
    }
    alias: dict[str, str] = {i: i for i in INPUTS}
    shapes: dict[str, ir.Shape] = {
        ir.BLOCK_INPUT: ir.Shape(at.in_channels, at.in_size),
        ir.BLOCK_PREV: ir.Shape(*prev),
    }
    built: dict[str, ir.Layer] = {}
    failed: set[str] = set()
    for node_name in topological(definition):
        node = definition.graph[node_name]
        reads = [alias.get(r, r) for r in _inputs(node, previous[node_name])]
        if any(r in failed for r in reads):
            failed.add(node_name)  # what it reads is wrong, and said so
            continue
        if node.when is not None and not value(
            node_name, "when", node.when, integer=False
        ):
            alias[node_name] = (
                alias.get(node.else_, node.else_) if node.else_ else reads[0]
            )
            continue
        if isinstance(node, CallNode):
            made = _call(
                node_name, node, shapes[reads[0]], at, value, diagnostics, definitions
            )
        else:
            made = _node(
                node_name,
                node,
                [shapes[r] for r in reads],
                at,
                value,
                diagnostics,
                where,
            )
        if made is not None:
            made = made.model_copy(update={"inputs": tuple(reads)})
            problems: list = []
            shape = ir.node_shape(made, [shapes[r] for r in reads], problems, 0)
            for _, message in problems:
                diagnostics.items.append(
                    where.error(
                        f"{at.name} ({name} block): {message}", "graph", node_name
                    )
                )
            made = made if shape is not None else None
        if made is None:
            failed.add(node_name)
            continue
        built[node_name] = made
        alias[node_name] = node_name
        shapes[node_name] = shape
    if diagnostics.items:
        raise SpecError(diagnostics)
    output = alias[definition.output or written[-1]]
    nodes = _live(built, output)
    if not nodes:  # every node left out: the block passes its input on
        nodes = [ir.Identity(name="identity", channels=at.in_channels, inputs=("x",))]
    nodes = _implicit_inputs(nodes)
    out_shape = shapes.get(output, ir.Shape(at.in_channels, at.in_size))
    reads_prev = any(ir.BLOCK_PREV in n.inputs for n in nodes)
    block = ir.GraphBlock(
        kind=name,
        name=at.name,
        class_name=definition.class_name,
        in_channels=at.in_channels,
        out_channels=at.out_channels,
        stride=at.stride,
        in_size=at.in_size,
        out_size=out_shape.size,
        prev=(at.prev or at.input) if reads_prev else None,
        prev_channels=prev[0] if reads_prev else None,
        prev_size=prev[1] if reads_prev else None,
        names={
            **{k: v for k, v in columns.items() if isinstance(v, int | float)},
            **({"channels": channels} if reads_prev else {}),
        },
        graph=tuple(nodes),
    )
    problems = block.check()
    if problems:
        for index, message in problems:
            node_name = nodes[index].name if index is not None else None
            parts = ("graph", node_name) if node_name in definition.graph else ()
            diagnostics.items.append(
                where.error(f"{at.name} ({name} block): {message}", *parts)
            )
        raise SpecError(diagnostics)
    return block


def _live(built: dict[str, ir.Layer], output: str) -> list[ir.Layer]:
    """The nodes the output depends on, in the built order."""
    live, todo = set(), [output]
    while todo:
        name = todo.pop()
        if name in built and name not in live:
            live.add(name)
            todo += built[name].inputs
    return [node for name, node in built.items() if name in live]


def _implicit_inputs(nodes: list[ir.Layer]) -> list[ir.Layer]:
    """Inputs left out where a node reads the one before it: the written-out
    graph reads as the chain it mostly is."""
    result, previous = [], ir.BLOCK_INPUT
    for node in nodes:
        if node.inputs == (previous,):
            node = node.model_copy(update={"inputs": ()})
        result.append(node)
        previous = node.name
    return result


def _node(
    name: str,
    node: Any,
    inputs: list[ir.Shape],
    at: BlockContext,
    value: Callable[..., Any],
    diagnostics: Diagnostics,
    where: Where,
) -> ir.Layer | None:
    first = inputs[0]
    activation = (
        None
        if getattr(node, "act", True) is False
        else (at.activation if getattr(node, "act", True) is True else node.act)
    )
    op = node.op
    if op == "conv":
        channels = (
            first.channels
            if node.channels is None
            else value(name, "channels", node.channels)
        )
        kernel = value(name, "kernel", node.kernel)
        stride = value(name, "stride", node.stride)
        groups = value(name, "groups", node.groups)
        if None in (channels, kernel, stride, groups):
            return None
        padding = node.padding or at.padding
        return _made(
            ir.Conv,
            dict(
                name=name,
                in_channels=first.channels,
                out_channels=channels,
                kernel=kernel,
                stride=stride,
                groups=groups,
                bias=at.bias if node.bias is None else node.bias,
                padding=padding,
                norm=at.norm if node.norm else None,
                activation=activation,
                in_size=first.size,
                out_size=ir.conv_out_size(first.size, kernel, stride, padding)
                if isinstance(stride, int) and stride > 0
                else first.size,
            ),
            name,
            diagnostics,
            where,
        )
    if op == "norm_act":
        return ir.NormAct(
            name=name, channels=first.channels, norm=at.norm, activation=activation
        )
    if op == "act":
        if activation is None:
            diagnostics.items.append(
                where.error("an act node needs an activation", "graph", name, "act")
            )
            return None
        return ir.Act(name=name, channels=first.channels, activation=activation)
    if op in ("max_pool", "avg_pool"):
        kernel = value(name, "kernel", node.kernel)
        stride = value(name, "stride", node.stride)
        pad = value(name, "pad", node.pad)
        if None in (kernel, stride, pad):
            return None
        extra = {}
        if node.padding == "same" and stride == 1:
            pad = kernel // 2  # TensorFlow's stride-1 "same", for odd kernels
        elif node.padding == "same":
            extra["same"] = True
        fields = ir.Pool.model_fields
        if "fill" in fields:
            extra["fill"] = node.fill
        elif op == "max_pool" and pad and node.fill != "-inf":
            diagnostics.items.append(
                where.error(
                    "zero-filled max pooling is not supported yet",
                    "graph",
                    name,
                    "fill",
                )
            )
            return None
        if "count_pad" in fields:
            extra["count_pad"] = node.count_pad
        out = (
            ir.out_size(first.size, stride)
            if extra.get("same")
            else ir.pool_out_size(first.size, kernel, stride, pad, False)
            if kernel > 0 and stride > 0
            else first.size
        )
        # What PyTorch's pooling requires (Keras would pool anything).
        if kernel > 0 and pad > 0 and 2 * pad > kernel:
            diagnostics.items.append(
                where.error(
                    f"{at.name}: expected padding at most half the "
                    f"kernel ({kernel // 2}), found {pad}",
                    "graph",
                    name,
                    "pad",
                )
            )
            return None
        if out < 1:
            diagnostics.items.append(
                where.error(
                    f"{at.name}: a {kernel}x{kernel} pool padded by {pad} does not "
                    f"fit its {first.size}x{first.size} input",
                    "graph",
                    name,
                )
            )
            return None
        return _made(
            ir.Pool,
            dict(
                name=name,
                op="max" if op == "max_pool" else "avg",
                kernel=kernel,
                stride=stride,
                pad=pad,
                channels=first.channels,
                in_size=first.size,
                out_size=out,
                **extra,
            ),
            name,
            diagnostics,
            where,
        )
    if op == "se":
        squeeze = value(name, "squeeze", node.squeeze, integer=False)
        if squeeze is None:
            return None
        squeeze = squeeze if float(squeeze).is_integer() else at.se.round(squeeze)
        return _made(
            ir.SqueezeExcite,
            dict(
                name=name,
                channels=first.channels,
                squeeze_channels=max(1, int(squeeze)),
                activation=at.se.activation,
                gate=at.se.gate,
            ),
            name,
            diagnostics,
            where,
        )
    if op == "concat":
        return ir.Concat(name=name, channels=sum(s.channels for s in inputs))
    if op == "pad":
        t, b, _, _ = node.pad
        return _made(
            ir.Pad,
            dict(
                name=name,
                channels=first.channels,
                pad=node.pad,
                in_size=first.size,
                out_size=first.size + t + b,
            ),
            name,
            diagnostics,
            where,
        )
    kinds = {
        "add": ir.Add,
        "multiply": ir.Multiply,
        "identity": ir.Identity,
        "drop_path": ir.DropPath,
        "shift": ir.Shift,
    }
    return kinds[op](name=name, channels=first.channels)


def _call(
    name: str,
    node: CallNode,
    first: ir.Shape,
    at: BlockContext,
    value: Callable[..., Any],
    diagnostics: Diagnostics,
    definitions: Mapping[str, Defined],
) -> ir.Call | None:
    """A node whose op is a kind of the spec's: that kind's block, built on
    the node's input with the node's channels, stride and columns."""
    callee = definitions[node.op]
    d = callee.definition
    args = {k: value(name, k, v, integer=False) for k, v in node.arguments().items()}
    for key, column in d.columns.items():
        if key not in args:
            args[key] = column.default
    channels = (
        first.channels
        if node.channels is None
        else value(name, "channels", node.channels)
    )
    stride = value(name, "stride", node.stride)
    if None in (channels, stride, *args.values()):
        return None
    try:
        out = out_width(d, callee.where, args, channels, first.channels, stride)
    except SpecError as exc:
        diagnostics.items += exc.diagnostics.items
        return None
    if stride not in (1, 2):
        diagnostics.items.append(
            callee.where.error(f"{at.name}.{name}: stride = {stride}: expected 1 or 2")
        )
        return None
    inner = replace(
        at,
        name=f"{at.name}.{name}",
        in_channels=first.channels,
        out_channels=out,
        stride=stride,
        in_size=first.size,
        input=ir.BLOCK_INPUT,
        prev=None,
        scale=lambda c: c,
    )
    try:
        block = _build(node.op, d, args, channels, inner, callee.where, definitions)
    except SpecError as exc:
        diagnostics.items += exc.diagnostics.items
        return None
    return ir.Call(
        name=name,
        op=node.op,
        class_name=d.class_name,
        in_channels=block.in_channels,
        out_channels=block.out_channels,
        stride=block.stride,
        in_size=block.in_size,
        out_size=block.out_size,
        names=block.names,
        graph=block.graph_,
    )


def _made(
    model: type[ir.Layer],
    values: dict,
    name: str,
    diagnostics: Diagnostics,
    where: Where,
):
    """An IR node, or the reason its computed values are out of range."""
    try:
        return model(**values)
    except Exception as exc:  # pydantic's ValidationError: the scaled values
        errors = getattr(exc, "errors", None)
        if errors is None:
            raise
        for error in errors(include_url=False):
            field = ".".join(map(str, error["loc"]))
            diagnostics.items.append(
                where.error(
                    f"{field} = {error.get('input')!r}: {error['msg'].replace('Input should be ', 'expected ')}",
                    "graph",
                    name,
                )
            )
        return None
