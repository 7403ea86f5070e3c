"""The generic emitter: any block, from its graph, as a PyTorch class.

One class per block structure (archspec.structure): one attribute per layer
node, named as the node (so parameter names are the IR's weight paths), and
a `forward` that follows the graph, each value named after its node. Nodes
without weights are expressions in `forward`. The template
(templates/generic.py.j2) lays the classes out; this module works out what
each line says.
"""

from __future__ import annotations

from dataclasses import dataclass

from archspec import ir
from archspec.errors import SpecError
from archspec.render import Code, call, literal
from archspec.structure import Node, Structure, describe_nodes

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
    last three as indented source."""

    name: str
    title: str
    doc: str
    signature: str
    init: str
    forward: str


class Writer:
    """Writes a structure's class with the module's conventions: its default
    activation and padding (ConvBNAct's), whether it names activations per
    layer."""

    def __init__(self, activation: str | None, per_layer: bool, conv_bias: bool):
        self.activation = activation
        self.per_layer = per_layer
        self.conv_bias = conv_bias

    def write(self, structure: Structure) -> Class:
        params = [f"{p}: int" for p in structure.parameters]
        signature = call(
            "__init__", "self", *params, indent=4, prefix="def ", trailing=" -> None:"
        )
        init = [_PAD + "super().__init__()"]
        if structure.drops_path:
            init.append(_PAD + "self.drop_path = 0.0  # set by the model")
        forward = []
        for i, node in enumerate(structure.nodes):
            made = self._init(structure, node)
            if made:
                init.append(made)
            last = i == len(structure.nodes) - 1
            forward += [_PAD + line for line in self._forward(structure, node, last)]
        title = f"A {structure.kind} block, written from its graph:"
        return Class(
            structure.name,
            title,
            "\n".join(describe_nodes(structure)),
            signature,
            "\n".join(init),
            "\n".join(forward),
        )

    def arg(self, structure: Structure, node: str, key: str) -> str:
        is_argument, value = structure.literal_or_argument(node, key)
        return value if is_argument else literal(value)

    def _init(self, s: Structure, node: Node) -> str | None:
        layer, name = node.layer, node.name
        this = f"self.{name} = "
        a = lambda key: Code(self.arg(s, name, key))  # noqa: E731
        if isinstance(layer, ir.Conv) and layer.norm is not None:
            kw = {}
            if s.value(name, "stride") != 1 or ("conv", "stride") in s.arguments:
                pass
            positional = [a("in_channels"), a("out_channels"), a("kernel")]
            stride = a("stride")
            if stride != "1":
                positional.append(stride)
            if a("groups") != "1":
                kw["groups"] = a("groups")
            if layer.activation != self.activation:
                kw["activation"] = layer.activation or False
            if layer.bias != self.conv_bias:
                raise SpecError(
                    f"torch backend: {name}: a convolution with batch norm and "
                    f"bias={layer.bias} where the others have {self.conv_bias}"
                )
            return call("ConvBNAct", *positional, indent=8, prefix=this, **kw)
        if isinstance(layer, ir.Conv):
            if layer.stride > 1 and layer.kernel > 1 and layer.padding != "symmetric":
                raise SpecError(
                    f"torch backend: {name}: a strided convolution without batch "
                    f"norm pads {layer.padding!r}; only 'symmetric' is supported"
                )
            kw = {}
            if a("stride") != "1":
                kw["stride"] = a("stride")
            kernel = a("kernel")
            if kernel != "1":
                kw["padding"] = Code(
                    f"{kernel} // 2" if not kernel.isdigit() else str(int(kernel) // 2)
                )
            if a("groups") != "1":
                kw["groups"] = a("groups")
            kw["bias"] = layer.bias
            return call(
                "nn.Conv2d",
                a("in_channels"),
                a("out_channels"),
                kernel,
                indent=8,
                prefix=this,
                **kw,
            )
        if isinstance(layer, ir.NormAct):
            kw = {}
            if layer.activation != self.activation:
                kw["activation"] = layer.activation or False
            return call("NormAct", a("channels"), indent=8, prefix=this, **kw)
        if isinstance(layer, ir.Pool):
            return self._pool(s, name, layer, this)
        if isinstance(layer, ir.SqueezeExcite):
            return call(
                "SqueezeExcitation",
                a("channels"),
                a("squeeze_channels"),
                indent=8,
                prefix=this,
            )
        return None

    def _forward(self, s: Structure, node: Node, last: bool) -> list[str]:
        layer, name = node.layer, node.name
        args = [_var(i) for i in node.inputs]
        x = args[0]
        value: str
        if isinstance(layer, ir.Conv) and layer.norm is None and layer.activation:
            value = f"{FUNCTIONAL[layer.activation]}(self.{name}({x}))"
        elif isinstance(layer, ir.Conv | ir.NormAct | ir.SqueezeExcite | ir.Pool):
            value = f"self.{name}({x})"
        elif isinstance(layer, ir.Act):
            value = f"{FUNCTIONAL[layer.activation]}({x})"
        elif isinstance(layer, ir.Add):
            value = " + ".join(args)
        elif isinstance(layer, ir.Multiply):
            value = f"{args[0]} * {args[1]}"
        elif isinstance(layer, ir.Concat):
            value = f"torch.cat(({', '.join(args)}), 1)"
        elif isinstance(layer, ir.DropPath):
            value = f"drop_path({x}, self.drop_path, self.training)"
        elif isinstance(layer, ir.Identity):
            value = x
        elif isinstance(layer, ir.Pad):
            top, bottom, left, right = layer.pad
            value = f"F.pad({x}, ({left}, {right}, {top}, {bottom}))"
        elif isinstance(layer, ir.Shift):
            # One pixel up and left, a zero row and column after:
            # ZeroPadding2D(((0, 1), (0, 1))) then Cropping2D(((1, 0), (1, 0))).
            value = f"F.pad({x}[:, :, 1:, 1:], (0, 1, 0, 1))"
        else:  # check_graph lets no other kind into a block
            raise SpecError(f"torch backend: a {layer.kind!r} node in a block")
        target = "return" if last else f"{_var(name)} ="
        line = f"{target} {value}"
        return [line] if len(line) <= 80 else [f"{target} (", f"    {value}", ")"]

    def _pool(self, s: Structure, name: str, layer: ir.Pool, this: str) -> str:
        kernel, stride, pad = (
            Code(self.arg(s, name, k)) for k in ("kernel", "stride", "pad")
        )
        kw = {}
        if layer.ceil_mode:
            kw["ceil_mode"] = True
        if layer.op == "max" and layer.fill == "zero" and layer.pad:
            # Zeros around the map, which win over negative values (Keras's
            # ZeroPadding2D before MaxPooling2D).
            padded = call("nn.ZeroPad2d", pad)
            pool = call("nn.MaxPool2d", kernel, stride=stride, **kw)
            return call("nn.Sequential", padded, pool, indent=8, prefix=this)
        if layer.op == "max":
            return call(
                "nn.MaxPool2d",
                kernel,
                stride=stride,
                padding=pad,
                indent=8,
                prefix=this,
                **kw,
            )
        if not layer.count_pad:
            kw["count_include_pad"] = False
        return call(
            "nn.AvgPool2d",
            kernel,
            stride=stride,
            padding=pad,
            indent=8,
            prefix=this,
            **kw,
        )


_PAD = " " * 8

# Names a value in forward() must not take: the module's own and Python's.
TAKEN = {
    *("drop_path", "torch", "nn", "F", "math", "self", "shifted_padding"),
    *("sum", "max", "min", "input", "len", "type", "id", "pow", "abs", "round"),
}


def _var(name: str) -> str:
    if name == ir.BLOCK_INPUT:
        return "x"
    return f"{name}_out" if name in TAKEN else name
