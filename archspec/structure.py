"""Blocks grouped by structure, for the backends' generic emitters.

A generic emitter writes one class (PyTorch) or helper (Keras) per block
*structure*: blocks of one kind whose graphs have the same nodes, inputs and
settings but for numbers (widths, strides, kernels) share it, and the
numbers that differ become its arguments, written as literals where each
block is built. Numbers that are the same for every block of the structure
stay literals inside. This module finds the structures and names their
arguments; backends only lay out the code.
"""

from __future__ import annotations

import keyword
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import ir
from .errors import SpecError
from .render import LINE_LENGTH, Code, literal

# Per node kind: the settings a backend needs, numbers and the rest.
SETTINGS: dict[str, tuple[str, ...]] = {
    "conv": (
        "in_channels",
        "out_channels",
        "kernel",
        "stride",
        "groups",
        "bias",
        "padding",
        "activation",
    ),
    "pool": ("op", "kernel", "stride", "pad", "ceil_mode", "fill", "count_pad", "same"),
    "norm_act": ("channels", "activation"),
    "se": ("channels", "squeeze_channels"),
    "act": ("activation",),
    "pad": ("pad",),
}
# The block-level numbers an argument is named after when it equals them.
BLOCK_ARGUMENTS = ("in_channels", "out_channels", "stride")
# Settings that are widths: one argument may carry several (a conv's output
# and the next one's input); other settings share arguments of their own
# kind only, so no kernel is ever written as a stride that equals it.
WIDTHS = ("in_channels", "out_channels", "channels", "squeeze_channels", "groups")


@dataclass(frozen=True)
class Node:
    """One node as a generic emitter writes it: its inputs spelled out."""

    layer: ir.Layer
    inputs: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def kind(self) -> str:
        return self.layer.kind


def explicit(block: ir.Block) -> list[Node]:
    """The block's nodes, each with its inputs named (none left implicit)."""
    found, previous = [], ir.BLOCK_INPUT
    for layer in block.graph():
        found.append(Node(layer, layer.inputs or (previous,)))
        previous = layer.name
    return found


def _settings(layer: ir.Layer) -> dict[str, Any]:
    if isinstance(layer, ir.Call):
        return _call_settings(layer)
    values = {k: getattr(layer, k) for k in SETTINGS.get(layer.kind, ())}
    if isinstance(layer, ir.Conv):
        values["norm"] = layer.norm is not None
    return values


def _call_settings(call: ir.Call) -> dict[str, Any]:
    """A call's settings: the shape of its graph (which class computes it)
    and every number inside, as `node.setting`, so the calling class passes
    on those that vary as its own arguments."""
    block = call.as_block()
    values: dict[str, Any] = {"graph": _signature(block)}
    for key in BLOCK_ARGUMENTS:
        values[key] = getattr(block, key)
    for node in explicit(block):
        for key, value in _settings(node.layer).items():
            if _number(value):
                values[f"{node.name}.{key}"] = value
    return values


def calls(blocks: Sequence[ir.Block]) -> list[ir.GraphBlock]:
    """Every call in the blocks' graphs (and in the calls'), as a block named
    by its path."""
    found: list[ir.GraphBlock] = []
    todo = [(block.name, layer) for block in blocks for layer in block.graph()]
    while todo:
        owner, layer = todo.pop(0)
        if isinstance(layer, ir.Call):
            found.append(layer.as_block(owner))
            todo += [(found[-1].name, inner) for inner in layer.graph_]
    return found


def _number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _signature(block: ir.Block) -> tuple:
    return tuple(
        (
            node.name,
            node.kind,
            node.inputs,
            tuple(
                (key, "#" if _number(value) else value)
                for key, value in _settings(node.layer).items()
            ),
        )
        for node in explicit(block)
    )


@dataclass
class Structure:
    """Blocks of one kind with one graph shape: one class or helper."""

    kind: str
    name: str  # the class name (PyTorch): the kind's, then `optional`
    blocks: list[ir.Block]
    nodes: list[Node]  # of the first block: names, kinds, inputs
    # (node, setting) -> the argument that carries it, or absent: a literal.
    arguments: dict[tuple[str, str], str] = field(default_factory=dict)
    parameters: list[str] = field(default_factory=list)  # argument names, in order
    drops_path: bool = False
    # The nodes that only some structures of the kind have, which name it.
    optional: tuple[str, ...] = ()

    @property
    def reads_prev(self) -> bool:
        """A cell's: its graph reads `prev`, the output two blocks back."""
        return any(ir.BLOCK_PREV in node.inputs for node in self.nodes)

    def value(self, node: str, key: str, block: ir.Block | None = None) -> Any:
        """The setting of `node` in `block` (default: the first block)."""
        layer = next(n for n in (block or self.blocks[0]).graph() if n.name == node)
        return _settings(layer)[key]

    def literal_or_argument(self, node: str, key: str) -> tuple[bool, Any]:
        """(True, argument name) or (False, the shared literal value)."""
        if (node, key) in self.arguments:
            return True, self.arguments[node, key]
        return False, self.value(node, key)

    def call_arguments(self, block: ir.Block) -> list[tuple[str, int]]:
        """The literal arguments that build `block`, in parameter order."""
        found = {}
        for (node, key), argument in self.arguments.items():
            found.setdefault(argument, self.value(node, key, block))
        return [(p, found[p]) for p in self.parameters]


def callee(
    found: Mapping[str, list[Structure]], s: Structure, node: str
) -> tuple[int, Structure]:
    """The structure a call node of `s` builds, and its place among its
    kind's (the same in each of s's blocks: a structure's signature holds its
    calls' graphs)."""
    path = ir.join(s.blocks[0].name, node)
    layer = next(n for n in s.blocks[0].graph() if n.name == node)
    return next(
        (i, c)
        for i, c in enumerate(found[layer.op])
        if any(b.name == path for b in c.blocks)
    )


def call_settings(callee: Structure) -> dict[str, str]:
    """Each argument of a called structure -> the setting of the call node
    that gives it: the call's own width in or out or stride, or the first
    `{inner node}.{setting}` it carries."""
    found: dict[str, str] = {}
    for (inner, key), argument in callee.arguments.items():
        own = argument == key and key in BLOCK_ARGUMENTS
        found.setdefault(argument, key if own else f"{inner}.{key}")
    return found


def structures(
    blocks: Sequence[ir.Block], generic: set[str]
) -> dict[str, list[Structure]]:
    """Kind -> its structures, for the kinds emitted generically and the
    kinds their graphs call (each called kind after those calling it)."""
    called = calls([b for b in blocks if b.kind in generic])
    blocks = [*blocks, *called]
    generic = {*generic, *(c.kind for c in called)}
    by_kind: dict[str, dict[tuple, list[ir.Block]]] = {}
    for block in blocks:
        if block.kind in generic and not block.graph():
            raise SpecError(
                f"block kind {block.kind!r} has no template here and its graph has "
                f"no nodes ({block.name}): nothing to write"
            )
        if block.kind in generic:
            by_kind.setdefault(block.kind, {}).setdefault(_signature(block), []).append(
                block
            )
    found = {}
    for kind, groups in by_kind.items():
        shapes = [[n.name for n in explicit(g[0])] for g in groups.values()]
        common = set.intersection(*(set(s) for s in shapes))
        made, taken = [], set()
        for members, names in zip(groups.values(), shapes, strict=True):
            base = members[0].block_class()
            # A kind with several structures: each named by the nodes only
            # some of them have (PreActBottleneck, PreActBottleneckShortcut).
            optional = tuple(n for n in names if n not in common)
            name = base + "".join(ir.camel(n) for n in optional)
            while name in taken:
                name += "Alt"
            taken.add(name)
            made.append(_structure(kind, name, members))
            made[-1].optional = optional
        found[kind] = made
    return found


def _structure(kind: str, name: str, members: list[ir.Block]) -> Structure:
    nodes = explicit(members[0])
    structure = Structure(kind, name, members, nodes)
    structure.drops_path = any(n.kind == "drop_path" for n in nodes)
    block_vectors = {
        key: tuple(getattr(b, key) for b in members) for key in BLOCK_ARGUMENTS
    }
    # Then the names the spec knows a block by (a cell's channels, the
    # columns: a separable branch's kernel), as their own arguments.
    first = members[0]
    for key in (*getattr(first, "names", {}), "prev_channels"):
        vector = tuple(_named_value(b, key) for b in members)
        if None not in vector and key not in block_vectors:
            block_vectors[key] = vector
    vectors: dict[tuple, str] = {}
    for node in nodes:
        for key, value in _settings(node.layer).items():
            if not _number(value):
                continue
            numbers = tuple(structure.value(node.name, key, b) for b in members)
            vector = (_category(key), numbers)
            if len(members) > 1 and len(set(numbers)) == 1:
                continue  # the same in every block: a literal in the class
            widths = tuple(
                v for k, v in block_vectors.items() if _category(k) == "width"
            )
            if len(members) == 1 and not (
                _category(key) == "width" and numbers in widths
            ):
                continue  # one block: literals but for its widths in and out
            if vector not in vectors:
                named = [
                    k
                    for k, v in block_vectors.items()
                    if (_category(k), v) == vector and _category(k) == _category(key)
                ]
                vectors[vector] = named[0] if named else _argument_name(node, key)
                if vectors[vector] in structure.parameters:
                    vectors[vector] += f"_{len(structure.parameters)}"
                structure.parameters.append(vectors[vector])
            structure.arguments[node.name, key] = vectors[vector]
    order = {name: i for i, name in enumerate(BLOCK_ARGUMENTS)}
    structure.parameters.sort(key=lambda p: order.get(p, len(order)))
    return structure


def _category(key: str) -> str:
    key = key.rpartition(".")[2]  # a call's `node.setting`
    return "width" if key in WIDTHS or key.endswith("channels") else key


def _named_value(block: ir.Block, key: str) -> Any:
    names = getattr(block, "names", {})
    return names[key] if key in names else getattr(block, key, None)


def _argument_name(node: Node, key: str) -> str:
    # A call's `node.setting`: path1.out_channels -> path1_channels.
    key = key.replace(".out_channels", "_channels").replace(".", "_")
    if key in ("out_channels", "channels"):
        return f"{node.name}_channels"
    if key == "squeeze_channels":
        return f"{node.name}_squeeze"
    return f"{node.name}_{key}"


def describe_nodes(s: Structure) -> list[str]:
    """One line per node, for a docstring: what it computes from what."""
    return [
        f"{node.name}: {_describe(node.layer, s, node.name)} of "
        f"{', '.join(node.inputs)}"
        for node in s.nodes
    ]


def _describe(layer: ir.Layer, s: Structure, name: str) -> str:
    if isinstance(layer, ir.Conv):
        # A kernel or stride the blocks differ in is the argument's name.
        kernel = s.arguments.get((name, "kernel"))
        stride = s.arguments.get((name, "stride"))
        text = (
            f"`{kernel}` x `{kernel}`" if kernel else f"{layer.kernel}x{layer.kernel}"
        ) + " convolution"
        if stride:
            text += f", stride `{stride}`"
        elif layer.stride != 1:
            text += f", stride {layer.stride}"
        if layer.groups != 1:
            text += ", depthwise" if layer.depthwise else f", {layer.groups} groups"
        if layer.norm is not None:
            text += ", batch norm"
        if layer.activation:
            text += f", {layer.activation}"
        return text
    if isinstance(layer, ir.NormAct):
        return "batch norm" + (f", {layer.activation}" if layer.activation else "")
    if isinstance(layer, ir.Pool) and layer.same:
        return f"{layer.kernel}x{layer.kernel} {layer.op} pool, stride 2, same"
    if isinstance(layer, ir.Pool):
        return f"{layer.kernel}x{layer.kernel} {layer.op} pool, stride {layer.stride}"
    if isinstance(layer, ir.Act):
        return layer.activation
    if isinstance(layer, ir.Call):
        text = layer.op.replace("_", " ")
        return text + (f", stride {layer.stride}" if layer.stride != 1 else "")
    names = {
        "se": "squeeze-excitation",
        "add": "sum",
        "concat": "concatenation",
        "multiply": "product",
        "drop_path": "drop path",
        "identity": "identity",
        "pad": "zero padding",
        "shift": "one-pixel shift",
    }
    return names[layer.kind]


class Flow:
    """The variables a generated body keeps a block's values in.

    The main path runs from the block's output back through each node's main
    input (a multiply's first, the deepest of an add's or concat's inputs):
    it reads as one variable, `x` while the block's input is needed nowhere
    else, `out` after that. Values read by more than one node, and the nodes
    off the main path, are named after their node, unless that name is
    `taken` (the module's names, Python's builtins) or a keyword: then
    `{node}_out`.
    """

    def __init__(self, nodes: list[Node], taken: Collection[str] = ()):
        self.taken = taken
        # A cell's second input, `prev`, is held in a variable of that name.
        inputs = (ir.BLOCK_INPUT, ir.BLOCK_PREV)
        self.readers: dict[str, list[int]] = {name: [] for name in inputs}
        depth = dict.fromkeys(inputs, 0)
        for i, node in enumerate(nodes):
            self.readers[node.name] = []
            for name in node.inputs:
                self.readers[name].append(i)
            depth[node.name] = 1 + max(depth[name] for name in node.inputs)

        def main_input(node: Node) -> str:
            if isinstance(node.layer, ir.Add | ir.Concat):
                return max(node.inputs, key=depth.__getitem__)  # the first deepest
            return node.inputs[0]

        by_name = {node.name: node for node in nodes}
        main, name = {}, nodes[-1].name
        while name not in inputs:
            main[name] = main_input(by_name[name])
            name = main[name]
        self.variable = {ir.BLOCK_INPUT: "x", ir.BLOCK_PREV: "prev"}
        # variable -> the value it holds now
        holds = {"x": ir.BLOCK_INPUT, "prev": ir.BLOCK_PREV}

        def free(variable: str, i: int) -> bool:
            # Nothing held, or nothing held that a node after i still reads.
            held = holds.get(variable)
            return held is None or max(self.readers[held], default=-1) <= i

        for i, node in enumerate(nodes):
            name, once = node.name, len(self.readers[node.name]) <= 1
            before = main.get(name)
            if before is not None and once and self.readers[before] == [i]:
                chosen = self.variable[before]
                if chosen not in ("x", "out"):
                    chosen = "out" if free("out", i) else self._name(name, i, free)
            elif before is not None and once and free("out", i):
                chosen = "out"
            else:
                chosen = self._name(name, i, free)
            self.variable[name] = chosen
            holds[chosen] = name

    def shared(self, name: str) -> bool:
        """Whether a value is read more than once, or is the block's input
        (which the caller may hold)."""
        return name in (ir.BLOCK_INPUT, ir.BLOCK_PREV) or len(self.readers[name]) > 1

    def _name(self, node: str, i: int, free) -> str:
        """A node's own variable: its name, unless that shadows a name the
        module or Python defines, or a value still needed."""
        taken = node in self.taken or keyword.iskeyword(node)
        name = f"{node}_out" if taken else node
        chosen, n = name, 2
        while chosen in ("x", "out", "prev") or not free(chosen, i):
            chosen, n = f"{name}_{n}", n + 1
        return chosen


def describe_stage(
    stage: ir.Stage, index: int, class_of: Mapping[str, str], kind: str
) -> str:
    """The comment over a stage in the model's constructor, after "Stage N:"
    and before the channels: its classes in order (`BasicBlockShortcut,
    BasicBlock x2`) and its stride, or its count of blocks where the
    classes do not fit on the line."""
    runs: list[list] = []
    for block in stage.blocks:
        name = class_of[block.name]
        if runs and runs[-1][0] == name:
            runs[-1][1] += 1
        else:
            runs.append([name, 1])
    stride = math.prod(block.stride for block in stage.blocks)
    if len(runs) == 1:
        classes = f"{runs[0][0]} x{runs[0][1]}"
    else:
        classes = ", ".join(name + (f" x{n}" if n > 1 else "") for name, n in runs)
    text = f"{classes}, stride {stride}"
    channels = stage.blocks[-1].out_channels
    line = f"{' ' * 12}# Stage {index}: {text}, {channels} channels"
    if len(line) > LINE_LENGTH:
        text = f"{len(stage.blocks)} {kind} blocks, stride {stride}"
    return text


# What a generic emitter writes for a structure's settings (the same in every
# backend that writes one class per structure).


def argument(s: Structure, node: str, key: str) -> Code:
    """A setting as source: the constructor argument that carries it, or the
    literal every block of the structure shares."""
    is_argument, value = s.literal_or_argument(node, key)
    return Code(value if is_argument else literal(value))


def groups_argument(s: Structure, node: str) -> Code:
    """A convolution's groups as source; depthwise (as many groups as input
    channels in every block) says so."""
    if s.value(node, "groups") != 1 and all(
        s.value(node, "groups", b) == s.value(node, "in_channels", b) for b in s.blocks
    ):
        return argument(s, node, "in_channels")
    return argument(s, node, "groups")


def call_arguments(
    found: Mapping[str, list[Structure]], s: Structure, node: str
) -> tuple[str, list[Code]]:
    """A call node's class and constructor arguments, as the class takes them:
    each the calling class's argument or a literal; widths in and out by
    position, the rest by name."""
    _, called = callee(found, s, node)
    settings = call_settings(called)
    args = []
    for parameter in called.parameters:
        value = argument(s, node, settings[parameter])
        args.append(
            value
            if parameter in ("in_channels", "out_channels")
            else Code(f"{parameter}={value}")
        )
    return called.name, args
