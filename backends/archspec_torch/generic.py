"""The generic emitter: any block, from its graph, as a PyTorch class.

One class per block structure (archspec.structure): one attribute per layer
node, named as the node (so parameter names are the IR's weight paths), and
a `forward` that follows the graph. The block's main path reads as a chain
of one variable (`x`, or `out` where the input is needed again, as
torchvision writes it); branches and values read twice are named after
their nodes (`shortcut`, `preact`). Nodes without weights are expressions in
`forward`. The template (templates/generic.py.j2) lays the classes out; this
module works out what each line says.
"""

from __future__ import annotations

import keyword
from collections.abc import Mapping
from dataclasses import dataclass

from archspec import ir
from archspec.errors import SpecError
from archspec.render import LINE_LENGTH, Code, Paddings, call, literal
from archspec.structure import (
    Node,
    Structure,
    argument,
    call_arguments,
    describe_nodes,
    groups_argument,
)

# Activations applied on their own (`act` nodes, convolutions without norm).
FUNCTIONAL = {
    "relu": "F.relu",
    "relu6": "F.relu6",
    "silu": "F.silu",
    "hardswish": "F.hardswish",
    "gelu": "F.gelu",
}


@dataclass(frozen=True)
class Class:
    """One generated class: its name, docstring, __init__ and forward, the
    last three as indented source. `se_copies`: whether a squeeze-excitation
    in it must not gate its input in place (the input is read again)."""

    name: str
    title: str
    doc: str
    signature: str
    init: str
    forward: str
    se_copies: bool = False
    reads_prev: bool = False  # a cell: forward(x, prev)


class Writer:
    """Writes a structure's class with the module's conventions: its default
    activation (ConvBNAct's and NormAct's), convolution bias and padding
    rule (PADDING; convolutions may name another where `paddings` has
    several)."""

    def __init__(
        self,
        activation: str | None,
        per_layer: bool,
        conv_bias: bool,
        paddings: Paddings | None = None,
        structures: Mapping[str, list[Structure]] | None = None,
    ):
        self.activation = activation
        # Every structure, by kind: what a call node's class is.
        self.structures = structures or {}
        self.per_layer = per_layer
        self.conv_bias = conv_bias
        self.paddings = paddings or Paddings("symmetric", ("symmetric",))
        # Whether a class uses PaddedConv2d, Pool2dSame (the module then
        # defines them).
        self.padded_conv = False
        self.pool_same = False

    def write(self, structure: Structure) -> Class:
        params = [f"{p}: int" for p in structure.parameters]
        signature = call(
            "__init__", "self", *params, indent=4, prefix="def ", trailing=" -> None:"
        )
        init = [_PAD + "super().__init__()"]
        if structure.drops_path:
            init.append(_PAD + "self.drop_path = 0.0  # set by the model")
        flow = Flow(structure.nodes)
        forward: list[str] = []
        se_copies = False
        for i, node in enumerate(structure.nodes):
            copy = isinstance(node.layer, ir.SqueezeExcite) and flow.shared(
                node.inputs[0]
            )
            se_copies |= copy
            made = self._init(structure, node, copy)
            if made:
                init.append(made)
            forward += self._forward(node, flow, last=i == len(structure.nodes) - 1)
        article = "An" if structure.kind[:1] in "aeiou" else "A"
        return Class(
            structure.name,
            f"{article} {structure.kind} block, written from its graph:",
            "\n".join(describe_nodes(structure)),
            signature,
            "\n".join(init),
            "\n".join(forward),
            se_copies,
            structure.reads_prev,
        )

    def _init(self, s: Structure, node: Node, se_copies: bool) -> str | None:
        layer, name = node.layer, node.name
        this = f"self.{name} = "
        holds_module = isinstance(
            layer, ir.Conv | ir.NormAct | ir.Pool | ir.SqueezeExcite | ir.Call
        )
        if holds_module and (keyword.iskeyword(name) or name in MODULE_ATTRIBUTES):
            raise SpecError(
                f"torch backend: {s.kind} blocks: the node {name!r} holds weights "
                f"or a layer, so it is an attribute of its PyTorch module, and "
                f"{name!r} is "
                + ("a Python keyword" if keyword.iskeyword(name) else "nn.Module's")
                + ": rename the node"
            )
        if isinstance(layer, ir.Call):
            class_name, args = call_arguments(self.structures, s, name)
            return call(class_name, *args, indent=8, prefix=this)
        if isinstance(layer, ir.Conv):
            return self._conv(s, name, layer, this)
        if isinstance(layer, ir.NormAct):
            kw = {}
            if layer.activation != self.activation:
                kw["activation"] = layer.activation or False
            channels = argument(s, name, "channels")
            return call("NormAct", channels, indent=8, prefix=this, **kw)
        if isinstance(layer, ir.Pool):
            return self._pool(s, name, layer, this)
        if isinstance(layer, ir.SqueezeExcite):
            kw = {"inplace": False} if se_copies else {}
            return call(
                "SqueezeExcitation",
                argument(s, name, "channels"),
                argument(s, name, "squeeze_channels"),
                indent=8,
                prefix=this,
                **kw,
            )
        return None  # computed in forward()

    def _conv(self, s: Structure, name: str, layer: ir.Conv, this: str) -> str:
        kernel, stride = argument(s, name, "kernel"), argument(s, name, "stride")
        groups = groups_argument(s, name)
        widths = (argument(s, name, "in_channels"), argument(s, name, "out_channels"))
        kw: dict[str, object] = {}
        # Strided in some block of the structure: its padding rule tells
        # (a stride-1 convolution pads kernel // 2 by every rule).
        strided = any(
            s.value(name, "stride", b) > 1 and s.value(name, "kernel", b) > 1
            for b in s.blocks
        )
        rule = layer.padding if strided else None
        if layer.norm is not None:
            if layer.bias != self.conv_bias:
                raise SpecError(
                    f"torch backend: {name}: a convolution with batch norm and "
                    f"bias={layer.bias} where the others have {self.conv_bias}"
                )
            positional = [*widths, kernel] + ([stride] if stride != "1" else [])
            if groups != "1":
                kw["groups"] = groups
            if layer.activation != self.activation:
                kw["activation"] = layer.activation or False
            if rule not in (None, self.paddings.default):
                kw["padding"] = rule
            return call("ConvBNAct", *positional, indent=8, prefix=this, **kw)
        if stride != "1":
            kw["stride"] = stride
        if rule not in (None, "symmetric"):
            # Alone, padded as ConvBNAct pads: PaddedConv2d.
            self.padded_conv = True
            if groups != "1":
                kw["groups"] = groups
            kw["bias"] = layer.bias
            if rule != self.paddings.default:
                kw["padding"] = rule
            return call("PaddedConv2d", *widths, kernel, indent=8, prefix=this, **kw)
        # Alone, kernel_size // 2 on every side: nn.Conv2d.
        if kernel != "1":
            kw["padding"] = Code(
                str(int(kernel) // 2) if kernel.isdigit() else f"{kernel} // 2"
            )
        if groups != "1":
            kw["groups"] = groups
        kw["bias"] = layer.bias
        return call("nn.Conv2d", *widths, kernel, indent=8, prefix=this, **kw)

    def _pool(self, s: Structure, name: str, layer: ir.Pool, this: str) -> str:
        kernel, stride, pad = (
            argument(s, name, k) for k in ("kernel", "stride", "pad")
        )
        kw: dict[str, object] = {"stride": stride}
        if layer.same:
            if layer.op == "avg" and not layer.count_pad:
                raise SpecError(
                    f'torch backend: {name}: stride-2 "same" average pooling '
                    "that does not count its padding is not supported yet"
                )
            self.pool_same = True
            if layer.op == "max":
                kw = {"fill": Code("0.0" if layer.fill == "zero" else "-math.inf")}
            else:
                kw = {}
            return call(
                "Pool2dSame", literal(layer.op), kernel, indent=8, prefix=this, **kw
            )
        if layer.op == "max" and layer.fill == "zero" and layer.pad:
            # Zeros around the map, which win over negative values (Keras's
            # ZeroPadding2D before MaxPooling2D), not nn.MaxPool2d's -inf.
            padded = call("nn.ZeroPad2d", pad)
            pool = call("nn.MaxPool2d", kernel, **kw)
            return call("nn.Sequential", padded, pool, indent=8, prefix=this)
        if pad != "0":
            kw["padding"] = pad
        if layer.ceil_mode:
            kw["ceil_mode"] = True
        if layer.op == "avg" and not layer.count_pad and pad != "0":
            kw["count_include_pad"] = False
        module = "nn.MaxPool2d" if layer.op == "max" else "nn.AvgPool2d"
        return call(module, kernel, indent=8, prefix=this, **kw)

    def _forward(self, node: Node, flow: Flow, last: bool) -> list[str]:
        """The node's statement in forward(), indented."""
        layer, name = node.layer, node.name
        args = [flow.variable[i] for i in node.inputs]
        x = args[0]
        target = flow.variable[name]
        if isinstance(layer, ir.Identity) and target == x and not last:
            return []  # the same value, under the same name
        prefix = "return " if last else f"{target} = "
        func, func_args = None, [x]
        if isinstance(layer, ir.Conv) and layer.norm is None and layer.activation:
            func, func_args = FUNCTIONAL[layer.activation], [f"self.{name}({x})"]
        elif isinstance(
            layer, ir.Conv | ir.NormAct | ir.SqueezeExcite | ir.Pool | ir.Call
        ):
            func = f"self.{name}"
        elif isinstance(layer, ir.Act):
            func = FUNCTIONAL[layer.activation]
        elif isinstance(layer, ir.Concat):
            func, func_args = "torch.cat", [f"({', '.join(args)})", "1"]
        elif isinstance(layer, ir.DropPath):
            func, func_args = "drop_path", [x, "self.drop_path", "self.training"]
        elif isinstance(layer, ir.Pad):
            top, bottom, left, right = layer.pad
            func, func_args = "F.pad", [x, literal((left, right, top, bottom))]
        elif isinstance(layer, ir.Shift):
            # One pixel up and left, a zero row and column after:
            # ZeroPadding2D(((0, 1), (0, 1))) then Cropping2D(((1, 0), (1, 0))).
            func, func_args = "F.pad", [f"{x}[:, :, 1:, 1:]", "(0, 1, 0, 1)"]
        elif not isinstance(layer, ir.Add | ir.Multiply | ir.Identity):
            # check_graph lets no other kind into a block
            raise SpecError(f"torch backend: a {layer.kind!r} node in a block")
        if func is not None:
            return call(func, *func_args, indent=8, prefix=prefix).splitlines()
        main = flow.main.get(name)
        if isinstance(layer, ir.Add) and len(args) == 2 and flow.fresh(main):
            # torchvision's `out += identity`: no new map for the sum.
            kept = flow.variable[main]
            if last or kept == target:
                (other,) = (flow.variable[i] for i in node.inputs if i != main)
                tail = [f"{_PAD}return {kept}"] if last else []
                return [f"{_PAD}{kept} += {other}", *tail]
        value = " * ".join(args) if isinstance(layer, ir.Multiply) else " + ".join(args)
        line = f"{_PAD}{prefix}{value}"
        if len(line) <= LINE_LENGTH:
            return [line]
        return [f"{_PAD}{prefix}(", f"{_PAD}    {value}", f"{_PAD})"]


class Flow:
    """The variables forward() keeps a block's values in.

    The main path runs from the block's output back through each node's main
    input (a multiply's first, the deepest of an add's or concat's inputs):
    it reads as one variable, `x` while the block's input is needed nowhere
    else, `out` after that. Values read by more than one node, and the nodes
    off the main path, are named after their node.
    """

    def __init__(self, nodes: list[Node]):
        self.readers: dict[str, list[int]] = {ir.BLOCK_INPUT: [], ir.BLOCK_PREV: []}
        depth = {ir.BLOCK_INPUT: 0, ir.BLOCK_PREV: 0}
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
        self.nodes = by_name
        main, name = {}, nodes[-1].name
        while name not in (ir.BLOCK_INPUT, ir.BLOCK_PREV):
            main[name] = main_input(by_name[name])
            name = main[name]
        self.main = main  # node -> its input on the main path
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
                    chosen = "out" if free("out", i) else _name(name, i, free)
            elif before is not None and once and free("out", i):
                chosen = "out"
            else:
                chosen = _name(name, i, free)
            self.variable[name] = chosen
            holds[chosen] = name

    def fresh(self, name: str | None) -> bool:
        """Whether a value may be added to in place: read once, made by this
        block (not its input), and by a node whose gradient does not need its
        own output (a convolution without activation, an add; a drop path or
        identity passes its input's status on)."""
        node = self.nodes.get(name)
        if node is None or len(self.readers[name]) != 1:
            return False
        layer = node.layer
        if isinstance(layer, ir.DropPath | ir.Identity):
            return self.fresh(node.inputs[0])
        if isinstance(layer, ir.Call):  # as the last node of its graph
            layer = layer.graph_[-1]
        return isinstance(layer, ir.Add) or (
            isinstance(layer, ir.Conv) and not layer.activation
        )

    def shared(self, name: str) -> bool:
        """Whether a value is read more than once, or is the block's input
        (which the caller may hold)."""
        return name in (ir.BLOCK_INPUT, ir.BLOCK_PREV) or len(self.readers[name]) > 1


def _name(node: str, i: int, free) -> str:
    """A node's own variable: its name, unless that shadows a name the module
    or Python defines, or a value still needed."""
    name = f"{node}_out" if node in TAKEN or keyword.iskeyword(node) else node
    chosen, n = name, 2
    while chosen in ("x", "out", "prev") or not free(chosen, i):
        chosen, n = f"{name}_{n}", n + 1
    return chosen


_PAD = " " * 8

# What every nn.Module has, and the rate of a block's drop path: no node that
# is a module attribute may take these names.
MODULE_ATTRIBUTES = {
    *("add_module", "apply", "bfloat16", "buffers", "call_super_init"),
    *("children", "compile", "cpu", "cuda", "double", "drop_path"),
    *("dump_patches", "eval", "extra_repr", "float", "forward", "get_buffer"),
    *("get_extra_state", "get_parameter", "get_submodule", "half", "ipu"),
    *("load_state_dict", "modules", "mtia", "named_buffers", "named_children"),
    *("named_modules", "named_parameters", "parameters", "register_buffer"),
    *("register_backward_hook", "register_forward_hook"),
    *("register_forward_pre_hook", "register_full_backward_hook"),
    *("register_full_backward_pre_hook", "register_load_state_dict_post_hook"),
    *("register_load_state_dict_pre_hook", "register_module"),
    *("register_parameter", "register_state_dict_post_hook"),
    *("register_state_dict_pre_hook", "requires_grad_", "set_extra_state"),
    *("set_submodule", "share_memory", "state_dict", "to", "to_empty", "train"),
    *("training", "type", "xpu", "zero_grad"),
}

# Names a value in forward() must not take: the module's own and Python's.
TAKEN = {
    *("drop_path", "torch", "nn", "F", "math", "self", "shifted_padding"),
    *("sum", "max", "min", "input", "len", "type", "id", "pow", "abs", "round"),
}
