"""Every block, from its graph, as a Flax NNX module: this backend has no
template per block kind.

One class per block structure (archspec.structure): one attribute per node
that holds weights or a layer, named as the node (so `nnx.state` paths are
the IR's weight paths), and a `__call__` that follows the graph, one
statement per node. The main path reads as one variable (`x`, or `out`
where the input is needed again); branches and values read twice are named
after their nodes (archspec.structure.Flow). Nodes without weights are
expressions. Numbers the blocks of a structure differ in are constructor
arguments, written as literals where each block is built.
"""

from __future__ import annotations

import keyword
from collections.abc import Mapping
from dataclasses import dataclass

from archspec import ir
from archspec.errors import SpecError
from archspec.render import LINE_LENGTH, Code, call, literal
from archspec.structure import (
    Flow,
    Node,
    Structure,
    argument,
    call_arguments,
    describe_nodes,
    groups_argument,
)

# An activation applied on its own (`act` nodes, convolutions without norm):
# the function, as source. `gelu` is the module's exact (erf) GELU.
FUNCTIONS = {
    "relu": "jax.nn.relu",
    "relu6": "jax.nn.relu6",
    "silu": "jax.nn.silu",
    "hardswish": "jax.nn.hard_swish",
    "gelu": "gelu",
}


@dataclass(frozen=True)
class Class:
    """One generated class: its name, docstring, and __init__ and __call__
    as indented source."""

    name: str
    title: str
    doc: str
    signature: str
    init: str
    body: str
    reads_prev: bool = False  # a cell: __call__(x, prev)


def lax_padding(rule: str, kernel: int, stride: int) -> str | tuple:
    """A padding rule as `lax.conv_general_dilated` takes it (the generated
    module's `conv_padding`, for literal kernels and strides): "valid" pads
    nothing; strided convolutions pad TensorFlow's "SAME" ("same") or
    (k//2 - 1, k//2) ("same_even"); everything else k // 2 on each side."""
    if rule == "valid":
        return "VALID"
    if stride > 1 and kernel > 1 and rule == "same":
        return "SAME"
    if stride > 1 and kernel > 1 and rule == "same_even":
        return ((kernel // 2 - 1, kernel // 2),) * 2
    return ((kernel // 2, kernel // 2),) * 2


class Writer:
    """Writes a structure's class with the module's conventions: its default
    activation (ConvBNAct's and NormAct's), convolution bias and padding
    rule (PADDING)."""

    def __init__(
        self,
        activation: str | None,
        conv_bias: bool,
        padding: str,
        structures: Mapping[str, list[Structure]],
    ):
        self.activation = activation
        self.conv_bias = conv_bias
        self.padding = padding
        self.structures = structures
        # What the module must define for the classes written.
        self.conv_padding = False  # a bare convolution's padding computed
        self.functions: set[str] = set()  # of FUNCTIONS

    def write(self, s: Structure) -> Class:
        params = [f"{p}: int" for p in s.parameters]
        signature = call(
            "__init__",
            "self",
            *params,
            "*",
            "rngs: nnx.Rngs",
            indent=4,
            prefix="def ",
            trailing=" -> None:",
        )
        init = []
        if s.drops_path:
            init.append(
                _PAD + "# Drop path: whole samples zeroed, the rate set by the model."
            )
            init.append(
                _PAD + "self.drop_path = nnx.Dropout(0.0, broadcast_dims=(1, 2, 3), "
                "rngs=rngs)"
            )
        flow = Flow(s.nodes, TAKEN)
        body: list[str] = []
        for i, node in enumerate(s.nodes):
            made = self._init(s, node)
            if made:
                init.append(made)
            body += self._call(node, flow, last=i == len(s.nodes) - 1)
        article = "An" if s.kind[:1] in "aeiou" else "A"
        return Class(
            s.name,
            f"{article} {s.kind} block, written from its graph:",
            "\n".join(describe_nodes(s)),
            signature,
            "\n".join(init) or _PAD + "pass",
            "\n".join(body),
            s.reads_prev,
        )

    def _init(self, s: Structure, node: Node) -> str | None:
        layer, name = node.layer, node.name
        this = f"self.{name} = "
        holds_module = isinstance(
            layer, ir.Conv | ir.NormAct | ir.Pool | ir.SqueezeExcite | ir.Call
        )
        if holds_module and (keyword.iskeyword(name) or name in MODULE_ATTRIBUTES):
            raise SpecError(
                f"flax backend: {s.kind} blocks: the node {name!r} holds "
                "weights or a layer, so it is an attribute of its nnx.Module, "
                f"and {name!r} is "
                + ("a Python keyword" if keyword.iskeyword(name) else "nnx.Module's")
                + ": rename the node"
            )
        rngs = Code("rngs")
        if isinstance(layer, ir.Call):
            class_name, args = call_arguments(self.structures, s, name)
            return call(class_name, *args, "rngs=rngs", indent=8, prefix=this)
        if isinstance(layer, ir.Conv):
            return self._conv(s, name, layer, this)
        if isinstance(layer, ir.NormAct):
            kw: dict[str, object] = {}
            if layer.activation != self.activation:
                kw["activation"] = layer.activation or False
            channels = argument(s, name, "channels")
            return call("NormAct", channels, indent=8, prefix=this, **kw, rngs=rngs)
        if isinstance(layer, ir.Pool):
            return self._pool(s, name, layer, this)
        if isinstance(layer, ir.SqueezeExcite):
            return call(
                "SqueezeExcitation",
                argument(s, name, "channels"),
                argument(s, name, "squeeze_channels"),
                indent=8,
                prefix=this,
                rngs=rngs,
            )
        return None  # computed in __call__

    def _conv(self, s: Structure, name: str, layer: ir.Conv, this: str) -> str:
        kernel, stride = argument(s, name, "kernel"), argument(s, name, "stride")
        groups = groups_argument(s, name)
        widths = (argument(s, name, "in_channels"), argument(s, name, "out_channels"))
        rngs = Code("rngs")
        kw: dict[str, object] = {}
        # Strided in some block of the structure: its padding rule tells
        # (a stride-1 convolution pads kernel // 2 by every rule but "valid").
        strided = any(
            s.value(name, "stride", b) > 1 and s.value(name, "kernel", b) > 1
            for b in s.blocks
        )
        rule = layer.padding if strided or layer.padding == "valid" else None
        if layer.norm is not None:
            if layer.bias != self.conv_bias:
                raise SpecError(
                    f"flax backend: {name}: a convolution with batch norm and "
                    f"bias={layer.bias} where the others have {self.conv_bias}"
                )
            positional = [*widths, kernel] + ([stride] if stride != "1" else [])
            if groups != "1":
                kw["groups"] = groups
            if layer.activation != self.activation:
                kw["activation"] = layer.activation or False
            if rule not in (None, self.padding):
                kw["padding"] = rule
            return call(
                "ConvBNAct", *positional, indent=8, prefix=this, **kw, rngs=rngs
            )
        # Alone: an nnx.Conv, padded by its rule.
        if kernel.isdigit() and stride.isdigit():
            padding = lax_padding(rule or "symmetric", int(kernel), int(stride))
            pad = Code(literal(padding))
        else:
            self.conv_padding = True
            pad = Code(
                call("conv_padding", literal(rule or "symmetric"), kernel, stride)
            )
        if stride != "1":
            kw["strides"] = stride
        if kernel != "1":  # 1x1: nothing to pad at any stride
            kw["padding"] = pad
        if groups != "1":
            kw["feature_group_count"] = groups
        kw["use_bias"] = layer.bias
        size = Code(f"({kernel}, {kernel})")
        return call("nnx.Conv", *widths, size, indent=8, prefix=this, **kw, rngs=rngs)

    def _pool(self, s: Structure, name: str, layer: ir.Pool, this: str) -> str:
        kernel, stride, pad = (
            argument(s, name, k) for k in ("kernel", "stride", "pad")
        )
        kw: dict[str, object] = {}
        if layer.same:
            kw["same"] = True
        elif pad != "0":
            kw["padding"] = pad
        if layer.op == "max" and layer.fill == "zero" and (layer.same or pad != "0"):
            kw["fill"] = Code("0.0")
        if layer.op == "avg" and not layer.count_pad and (layer.same or pad != "0"):
            kw["count_pad"] = False
        if layer.ceil_mode:
            if layer.op == "avg":
                raise SpecError(
                    f"flax backend: {name}: average pooling with ceil_mode is not "
                    "supported yet"
                )
            kw["ceil_mode"] = True
        return call(
            "Pool", literal(layer.op), kernel, stride, indent=8, prefix=this, **kw
        )

    def _call(self, node: Node, flow: Flow, last: bool) -> list[str]:
        """The node's statement in __call__, indented."""
        layer, name = node.layer, node.name
        args = [flow.variable[i] for i in node.inputs]
        x = args[0]
        target = flow.variable[name]
        if isinstance(layer, ir.Identity) and target == x and not last:
            return []  # the same value, under the same name
        prefix = "return " if last else f"{target} = "
        train = "train=train"
        if isinstance(layer, ir.Conv) and layer.norm is None:
            value = f"self.{name}({x})"
            if layer.activation:
                self.functions.add(layer.activation)
                value = f"{FUNCTIONS[layer.activation]}({value})"
        elif isinstance(layer, ir.Conv | ir.NormAct | ir.Call):
            value = f"self.{name}({', '.join(args)}, {train})"
        elif isinstance(layer, ir.SqueezeExcite | ir.Pool):
            value = f"self.{name}({x})"
        elif isinstance(layer, ir.Act):
            self.functions.add(layer.activation)
            value = f"{FUNCTIONS[layer.activation]}({x})"
        elif isinstance(layer, ir.Concat):
            value = f"jnp.concatenate([{', '.join(args)}], axis=-1)"
        elif isinstance(layer, ir.DropPath):
            value = f"self.drop_path({x}, deterministic=not train)"
        elif isinstance(layer, ir.Pad):
            top, bottom, left, right = layer.pad
            value = (
                f"jnp.pad({x}, ((0, 0), ({top}, {bottom}), ({left}, {right}), (0, 0)))"
            )
        elif isinstance(layer, ir.Shift):
            # One pixel up and left, a zero row and column after:
            # ZeroPadding2D(((0, 1), (0, 1))) then Cropping2D(((1, 0), (1, 0))).
            value = f"jnp.pad({x}[:, 1:, 1:], ((0, 0), (0, 1), (0, 1), (0, 0)))"
        elif isinstance(layer, ir.Add):
            value = " + ".join(args)
        elif isinstance(layer, ir.Multiply):
            value = " * ".join(args)
        elif isinstance(layer, ir.Identity):
            value = x
        else:  # check_graph lets no other kind into a block
            raise SpecError(f"flax backend: a {layer.kind!r} node in a block")
        line = f"{_PAD}{prefix}{value}"
        if len(line) <= LINE_LENGTH:
            return [line]
        if (
            value.endswith(")")
            and "(" in value
            and not isinstance(layer, ir.Add | ir.Multiply)
        ):
            func, _, inner = value.partition("(")
            parts = _split(inner[:-1])
            return call(func, *parts, indent=8, prefix=prefix).splitlines()
        return [f"{_PAD}{prefix}(", f"{_PAD}    {value}", f"{_PAD})"]


def _split(arguments: str) -> list[str]:
    """Top-level comma-separated arguments of a call's source."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(arguments):
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append(arguments[start:i].strip())
            start = i + 1
    parts.append(arguments[start:].strip())
    return parts


_PAD = " " * 8

# nnx.Module's own attributes, and the block's drop path: no node that is an
# attribute of its module may take these names.
MODULE_ATTRIBUTES = {
    *("eval", "iter_children", "iter_modules", "perturb", "set_attributes"),
    *("sow", "train", "drop_path"),
}

# Names a value in __call__ must not take: the module's own and Python's.
TAKEN = {
    *("jax", "jnp", "nnx", "math", "self", "train", "conv_padding", "gelu"),
    *("sum", "max", "min", "input", "len", "type", "id", "pow", "abs", "round"),
}
