"""The generic emitter: any block, from its graph, as a Keras helper function.

One helper per block structure (archspec.structure), in the style of the
kinds' own templates: it takes the block's input, the numbers that differ
between the blocks sharing it, the drop-path rate where it has one, and the
block's name. Each node is one statement: a layer, or a call of the
module's layer helpers (`conv_bn_act`, `norm_act`, `pool`,
`squeeze_excitation`, `drop_path`), whose Keras layers are named
`{name}_{node}` (plus the helper's suffixes), so weights move by name. The
main path reads as one variable (`x`, or `out` where the input is needed
again); branches and values read twice are named after their nodes
(archspec.structure.Flow). Blocks of such a kind are built with one call
each, arguments as literals.

A call node (a block kind used as an op inside another graph: NASNet's
separable branch) is a call of that kind's own helper, named
`{name}_{node}`, with each of its arguments the caller's argument or a
literal; its layers are then `{name}_{node}_{its node}`, the IR's weight
paths. A cell (a block reading `prev`, the output two blocks back) takes
`(x, prev, ...)`.

This module decides what each statement says (`Step`: which settings are
arguments, which are literals, which flags a layer needs);
templates/generic.py.j2 writes the code, with the macros every kind's
template has: `definitions()` and `build(block)`.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from archspec import ir
from archspec.errors import SpecError
from archspec.render import Code, literal
from archspec.structure import (
    SETTINGS,
    Flow,
    Node,
    Structure,
    call_settings,
    callee,
    describe_nodes,
)
from archspec.weights import keras_name

# The module's names for a structure's arguments (its own names otherwise).
KERAS_NAMES = {"out_channels": "filters", "stride": "strides"}
# The block's input width, read from its input rather than passed.
IN_FILTERS = "in_filters"
# Names a helper's values must not take: the module's own and Python's.
TAKEN = {
    *("drop_path", "keras", "pool", "pad", "name", "norm_act", "conv_bn_act"),
    *("squeeze_excitation", "drop_rate", IN_FILTERS, ir.BLOCK_PREV),
    *("sum", "max", "min", "input", "len", "type", "id", "pow", "abs", "round"),
}
# Keras layers of each merge node.
MERGES = {"add": "Add", "concat": "Concatenate", "multiply": "Multiply"}


@dataclass(frozen=True)
class Step:
    """One node's statement: `{target}{layer or helper}(...)`.

    `inputs`: the variables it reads; `variable`: the one it writes (what
    `target` assigns, unless the statement returns); `layer`: the Keras
    layer name, as source; `args`: the settings after the input, as source;
    `kw`: its keyword arguments, the layer name among them where the call
    takes it so (values are literals unless Code); `helper`: the function a
    call node calls."""

    kind: str
    target: str
    inputs: tuple[str, ...]
    variable: str
    layer: Code
    args: tuple[Code, ...] = ()
    kw: Mapping[str, Any] = field(default_factory=dict)
    helper: str = ""


@dataclass(frozen=True)
class Helper:
    """One helper function: its name, parameters (source, after `x`), the
    docstring's lines and one step per node."""

    name: str
    parameters: tuple[str, ...]
    title: str
    doc: tuple[str, ...]
    steps: tuple[Step, ...]
    # Whether the body starts by reading the input's width (IN_FILTERS).
    reads_width: bool = False
    # A cell's: its second input, `prev`, follows x.
    reads_prev: bool = False


class Writer:
    """Writes the helpers of a kind's structures with the module's
    conventions: its default activation, convolution bias and padding rule
    (conv_bn_act's and norm_act's defaults). `structures` and `names`: every
    kind's structures and their helper names, which call nodes call."""

    def __init__(
        self,
        drop_rate: Callable[[ir.Block], Code],
        activation: str | None,
        conv_bias: bool,
        activations: Mapping[str, str],
        padding: str | None,
        structures: Mapping[str, list[Structure]] | None = None,
        names: Mapping[str, list[str]] | None = None,
    ):
        self.drop_rate = drop_rate
        self.activation = activation
        self.conv_bias = conv_bias
        self.activations = activations
        self.padding = padding
        self.structures = structures or {}
        self.names = names or {}

    def kind(self, structures: list[Structure], names: list[str]) -> dict[str, Any]:
        """What templates/generic.py.j2 needs for one kind: `helpers`, and
        `calls` (block name -> the helper and its arguments). `names`: each
        structure's helper name (`helper_names`)."""
        helpers, calls = [], {}
        for s, name in zip(structures, names, strict=True):
            helper = self.helper(s, name)
            helpers.append(helper)
            for block in s.blocks:
                calls[block.name] = (helper.name, self._arguments(s, block))
        return {"helpers": helpers, "calls": calls}

    def helper(self, s: Structure, name: str) -> Helper:
        _check_layer_names(s)
        parameters = self._parameters(s)
        helpers = {h for names in self.names.values() for h in names}
        taken = TAKEN | set(parameters) | helpers
        flow = Flow(s.nodes, taken)
        steps = []
        for i, node in enumerate(s.nodes):
            step = self._step(s, node, flow, last=i == len(s.nodes) - 1)
            if step is not None:
                steps.append(step)
        signature = [ir.BLOCK_PREV] if s.reads_prev else []
        signature += [f"{p}: int" for p in parameters if p != IN_FILTERS]
        if s.drops_path:
            signature.append("drop_rate: float")
        signature.append("name: str")
        article = "An" if s.kind[:1] in "aeiou" else "A"
        return Helper(
            name,
            tuple(signature),
            f"{article} {s.kind} block, written from its graph:",
            tuple(describe_nodes(s)),
            tuple(steps),
            reads_width=IN_FILTERS in parameters,
            reads_prev=s.reads_prev,
        )

    def callee(self, s: Structure, node: str) -> tuple[Structure, str]:
        """The structure a call node of `s` builds, and its helper's name."""
        i, called = callee(self.structures, s, node)
        return called, self.names[called.kind][i]

    def _call_keys(self, s: Structure, node: str) -> dict[str, str]:
        """A call's arguments, as its helper takes them (Keras's names) ->
        the setting of the call node that gives each (structure.call_settings);
        the callee reads its input's width itself."""
        called, _ = self.callee(s, node)
        found: dict[str, str] = {}
        for argument, key in call_settings(called).items():
            found.setdefault(_rename(called, argument), key)
        return {p: found[p] for p in self._parameters(called) if p != IN_FILTERS}

    def _arguments(self, s: Structure, block: ir.Block) -> dict[str, Any]:
        """The call's keyword arguments for one block, as literals."""
        values = dict(s.call_arguments(block))
        kw: dict[str, Any] = {}
        for p in self._parameters(s):
            if p != IN_FILTERS:
                kw[p] = next(v for k, v in values.items() if _rename(s, k) == p)
        if s.drops_path:
            kw["drop_rate"] = self.drop_rate(block)
        kw["name"] = keras_name(block.name)
        return kw

    def _parameters(self, s: Structure) -> list[str]:
        """The arguments Keras needs, in the structure's order: a layer's
        input width is its input's, and the block's own input width is read
        from x (IN_FILTERS), not passed. A call node needs those its helper
        takes."""
        calls = {n.name for n in s.nodes if isinstance(n.layer, ir.Call)}
        passed = {node: set(self._call_keys(s, node).values()) for node in calls}
        needed = []
        for (node, key), argument in s.arguments.items():
            if node in calls and key not in passed[node]:
                continue
            name = _rename(s, argument)
            if key not in ("in_channels", "channels") and name not in needed:
                needed.append(name)
        order = [_rename(s, p) for p in s.parameters]
        return sorted(needed, key=order.index)

    def _arg(self, s: Structure, node: str, key: str) -> Code:
        """A setting as source: the argument that carries it, or the literal
        every block of the structure shares."""
        is_argument, value = s.literal_or_argument(node, key)
        return Code(_rename(s, value) if is_argument else literal(value))

    def _groups(self, s: Structure, node: str) -> Code:
        # A depthwise convolution's groups are its width: said so.
        for key in ("out_channels", "in_channels"):
            same = all(
                s.value(node, "groups", b) == s.value(node, key, b) for b in s.blocks
            )
            argument = s.arguments.get((node, key))
            if same and argument and _rename(s, argument) in self._parameters(s):
                return self._arg(s, node, key)
        return self._arg(s, node, "groups")

    def _step(self, s: Structure, node: Node, flow: Flow, last: bool) -> Step | None:
        layer, n = node.layer, node.name
        inputs = tuple(flow.variable[i] for i in node.inputs)
        variable = flow.variable[n]
        if isinstance(layer, ir.Identity) and variable == inputs[0] and not last:
            return None  # the same value, under the same name
        target = "return " if last else f"{variable} = "
        name = Code(f'f"{{name}}_{n}"')
        args: tuple[Code, ...] = ()
        kw: dict[str, Any] = {}
        if isinstance(layer, ir.Conv):
            args = tuple(
                self._arg(s, n, k) for k in ("out_channels", "kernel", "stride")
            )
            kw = self._conv_keywords(s, n, layer, name)
        elif isinstance(layer, ir.NormAct):
            kw = {"name": name}
            if layer.activation is None or layer.activation != self.activation:
                kw["activation"] = False
            if layer.activation not in (None, self.activation):
                # norm_act applies ACTIVATION: another is a layer of its own.
                own = self.activations[layer.activation]
                args = (Code(literal(own)), Code(f'f"{{name}}_{n}_act"'))
        elif isinstance(layer, ir.SqueezeExcite):
            args = (self._arg(s, n, "squeeze_channels"),)
        elif isinstance(layer, ir.Act):
            args = (
                Code("ACTIVATION")
                if layer.activation == self.activation
                else Code(literal(self.activations[layer.activation])),
            )
        elif isinstance(layer, ir.DropPath):
            # Its layer is {name}_drop; in a block with more than one, each
            # is named after its node too (Keras's names are unique).
            several = sum(isinstance(m.layer, ir.DropPath) for m in s.nodes) > 1
            name = name if several else Code("name")
        elif isinstance(layer, ir.Pad):
            t, b, left, right = layer.pad
            args = (Code(literal(((t, b), (left, right)))),)
        elif isinstance(layer, ir.Shift):
            kw = {"pad_layer": Code(f'f"{{name}}_{n}_pad"')}
        elif isinstance(layer, ir.Pool) and layer.same:
            # TensorFlow's "same" at stride 2, worked out from the map's size.
            settings = (self._arg(s, n, k) for k in ("kernel", "stride"))
            args = (Code(literal(layer.op)), *settings, Code(literal("same")))
            kw = {"name": name} | self._same_pool_flags(s, n, layer)
        elif isinstance(layer, ir.Pool):
            settings = (self._arg(s, n, k) for k in ("kernel", "stride", "pad"))
            args = (Code(literal(layer.op)), *settings)
            kw = {"name": name} | self._pool_flags(s, n, layer)
        elif isinstance(layer, ir.Call):
            _, helper = self.callee(s, n)
            keys = self._call_keys(s, n)
            kw = {p: self._arg(s, n, key) for p, key in keys.items()}
            kw["name"] = name
            return Step(layer.kind, target, inputs, variable, name, (), kw, helper)
        elif not isinstance(layer, ir.Add | ir.Concat | ir.Multiply | ir.Identity):
            # check_graph lets no other kind into a block
            raise SpecError(f"keras backend: a {layer.kind!r} node in a block")
        return Step(layer.kind, target, inputs, variable, name, args, kw)

    def _conv_keywords(
        self, s: Structure, n: str, layer: ir.Conv, name: Code
    ) -> dict[str, Any]:
        """conv_bn_act's keywords: groups, the layer name, then what differs
        from its defaults."""
        kw: dict[str, Any] = {}
        if layer.groups != 1:
            kw["groups"] = self._groups(s, n)
        kw["name"] = name
        strided = any(
            s.value(n, "stride", b) > 1 and s.value(n, "kernel", b) > 1
            for b in s.blocks
        )
        if strided and layer.padding != self.padding:
            # The network's PADDING elsewhere (render.paddings lets blocks
            # written from their graphs name their own).
            kw["padding"] = layer.padding
        if layer.activation is None:
            kw["activation"] = False
        elif layer.activation != self.activation:
            kw["activation"] = self.activations[layer.activation]
        if layer.norm is None:
            kw["norm"] = False
            # Its own bias (render.bare_convs); the others have CONV_BIAS.
            if layer.bias != self.conv_bias:
                kw["bias"] = layer.bias
        return kw

    @staticmethod
    def _same_pool_flags(s: Structure, n: str, layer: ir.Pool) -> dict[str, Any]:
        """pool(padding="same")'s flags: zeros it takes in (max pooling
        with fill zero, averages that count them), or Keras's own "same"
        pooling, whose padding takes no part (max pooling with -inf)."""
        even = sorted({k for b in s.blocks if (k := s.value(n, "kernel", b)) % 2 == 0})
        if even:
            raise SpecError(
                f'keras backend: {s.kind} blocks: node {n}: stride-2 "same" '
                f"pooling needs an odd kernel; found {even[0]}"
            )
        if layer.op == "avg" and not layer.count_pad:
            raise SpecError(
                f'keras backend: {s.kind} blocks: node {n}: stride-2 "same" '
                "average pooling that does not count its padding is not "
                "supported yet"
            )
        if layer.op == "max" and layer.fill == "-inf":
            return {"exclude_padding": True}
        return {}

    @staticmethod
    def _pool_flags(s: Structure, n: str, layer: ir.Pool) -> dict[str, Any]:
        if layer.ceil_mode:
            raise SpecError(
                f"keras backend: {s.kind} blocks: node {n}: ceil_mode pooling is "
                "not supported (Keras's pooling rounds the output size down)"
            )
        if not excludes_padding(layer):
            return {}
        # pool(exclude_padding=True) is a stride-1 "same" pool, subsampled:
        # the windows of PyTorch's padding when it is kernel // 2 of an odd
        # kernel.
        kernels = {(s.value(n, "kernel", b), s.value(n, "pad", b)) for b in s.blocks}
        for kernel, pad in sorted(kernels):
            if kernel % 2 == 0 or pad != kernel // 2:
                raise SpecError(
                    f"keras backend: {s.kind} blocks: node {n}: a pool whose "
                    f"padding takes no part in its windows (max pooling with "
                    f"-inf, or an average without count_pad) needs an odd kernel "
                    f"padded by kernel // 2; found kernel {kernel}, padding {pad}"
                )
        return {"exclude_padding": True}


def excludes_padding(pool: ir.Pool) -> bool:
    """Whether a pool's padding must take no part in its windows: PyTorch's
    -inf padding for max pooling, an average that does not count it."""
    return (pool.pad > 0 or pool.same) and (
        (pool.op == "max" and pool.fill == "-inf")
        or (pool.op == "avg" and not pool.count_pad)
    )


def helper_names(
    kinds: Mapping[str, list[Structure]], taken: Collection[str]
) -> dict[str, list[str]]:
    """Each kind's helper names, one per structure in order: the kind, then
    the nodes only some of its structures have (`preact_bottleneck_shortcut`),
    with `_block` after a name the module already defines (`taken`) or
    Python reserves. Structures that would share a name differ in a setting:
    the first such setting that is a word follows (`mbconv_expand_relu`,
    `mbconv_expand_hardswish`), or else a number."""
    names: dict[str, list[str]] = {}
    used = set(taken)
    for kind, structures in kinds.items():
        bases = ["_".join([s.kind, *s.optional]) for s in structures]
        bases = [
            f"{base}_block" if base in taken or keyword.iskeyword(base) else base
            for base in bases
        ]
        names[kind] = []
        for s, base in zip(structures, bases, strict=True):
            group = [o for o, b in zip(structures, bases, strict=True) if b == base]
            name = base + (_distinction(s, group) if len(group) > 1 else "")
            chosen, n = name, 2
            while chosen in used:
                chosen, n = f"{name}_{n}", n + 1
            used.add(chosen)
            names[kind].append(chosen)
    return names


def _distinction(s: Structure, group: list[Structure]) -> str:
    """`_{value}` of the first word-valued setting (an activation, a pool's
    op, a padding rule) in which `s` differs from the others of `group`."""
    for node in s.nodes:
        for key in SETTINGS.get(node.kind, ()):
            value = s.value(node.name, key)
            if not isinstance(value, str) or not value.isidentifier():
                continue
            if len({other.value(node.name, key) for other in group}) > 1:
                return f"_{value}"
    return ""


def _rename(s: Structure, argument: str) -> str:
    """Keras's names: filters, strides. A block's input width is read from
    its input (IN_FILTERS), unless the block keeps it as its output width
    and has no other: then it is `filters`, as the templates pass it."""
    if argument == "in_channels":
        return "filters" if "out_channels" not in s.parameters else IN_FILTERS
    if argument in KERAS_NAMES:
        return KERAS_NAMES[argument]
    return argument.replace("_channels", "_filters")


def _layers(s: Structure, node: Node) -> list[str]:
    """The Keras layers a node may make, by their names after `{name}_`."""
    n, layer = node.name, node.layer
    if isinstance(layer, ir.Conv):
        own = [f"{n}_conv", f"{n}_bn"] if layer.norm else [n]
        return [*own, f"{n}_act", f"{n}_pad"]
    if isinstance(layer, ir.NormAct):
        return [f"{n}_bn", f"{n}_act"]
    if isinstance(layer, ir.SqueezeExcite):
        return [f"{n}_{part}" for part in ("squeeze", "reduce", "expand", "excite")]
    if isinstance(layer, ir.Pool):
        return [n, f"{n}_pad", f"{n}_same"]
    if isinstance(layer, ir.Shift):
        return [n, f"{n}_pad"]
    if isinstance(layer, ir.DropPath):
        several = sum(isinstance(m.layer, ir.DropPath) for m in s.nodes) > 1
        return [f"{n}_drop" if several else "drop"]
    if isinstance(layer, ir.Identity):
        return []
    return [n]


def _check_layer_names(s: Structure) -> None:
    """Keras layer names must be unique: two nodes whose layers would share
    one (a node `a` with batch norm makes `a_conv`; so would a node named
    `a_conv`) are an error naming both."""
    seen: dict[str, str] = {}
    for node in s.nodes:
        for layer in _layers(s, node):
            if layer in seen and seen[layer] != node.name:
                raise SpecError(
                    f"keras backend: {s.kind} blocks: nodes {seen[layer]!r} and "
                    f"{node.name!r} would both make the Keras layer "
                    f"'{{name}}_{layer}' (layers are named after their node): "
                    "rename one"
                )
            seen[layer] = node.name
