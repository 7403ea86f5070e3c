"""The generic emitter: any block, from its graph, as a Keras helper function.

One helper per block structure (archspec.structure), in the style of the
kinds' own templates: it takes the block's input, the numbers that differ
between the blocks sharing it, the drop-path rate where it has one, and the
block's name; each node becomes a layer (or a call of the module's layer
helpers) named `{name}_{node}`, so weights move by name. Blocks of such a
kind are built with one call each, arguments as literals. It stands in for
a kind's template module: `definitions()` and `build(block)`.
"""

from __future__ import annotations

from collections.abc import Callable

from archspec import ir
from archspec.errors import SpecError
from archspec.render import Code, call, literal
from archspec.structure import Node, Structure, describe_nodes
from archspec.weights import keras_name

# The module's names for a structure's arguments (its own names otherwise).
KERAS_NAMES = {"out_channels": "filters", "stride": "strides"}


class GenericKind:
    """A kind written from its graph: the helpers of its structures."""

    def __init__(
        self,
        structures: list[Structure],
        drop_rate: Callable[[ir.Block], Code],
        activation: str | None,
        conv_bias: bool,
        activations: dict[str, str],
    ):
        self.structures = structures
        self.drop_rate = drop_rate
        self.activation = activation
        self.conv_bias = conv_bias
        self.activations = activations
        self.uses = ()  # the layer helpers follow from the nodes themselves
        self._of = {b.name: s for s in structures for b in s.blocks}

    def helper(self, s: Structure) -> str:
        return "_".join([s.kind, *s.optional])

    def _parameters(self, s: Structure) -> list[str]:
        """The arguments Keras needs: widths into a layer come from its input."""
        needed = []
        for (_, key), argument in s.arguments.items():
            if key in ("in_channels", "channels"):
                continue
            name = self._rename(s, argument)
            if name not in needed:
                needed.append(name)
        order = [self._rename(s, p) for p in s.parameters]
        return sorted(needed, key=order.index)

    def definitions(self) -> str:
        return "\n\n\n".join(self._definition(s) for s in self.structures)

    def _definition(self, s: Structure) -> str:
        params = [f"{p}: int" for p in self._parameters(s)]
        if s.drops_path:
            params.append("drop_rate: float")
        params.append("name: str")
        head = call(self.helper(s), "x", *params, prefix="def ", trailing=":")
        doc = ["    " + line for line in _doc(s)]
        body = []
        for i, node in enumerate(s.nodes):
            body += self._node(s, node, last=i == len(s.nodes) - 1)
        doc[1:] = [line.rstrip() for line in doc[1:]]
        return "\n".join([head, '    """' + doc[0].strip(), *doc[1:], '    """', *body])

    def build(self, block: ir.Block) -> str:
        s = self._of[block.name]
        values = dict(s.call_arguments(block))
        kw = {}
        for p in self._parameters(s):
            original = next(k for k in values if self._rename(s, k) == p)
            kw[p] = values[original]
        if s.drops_path:
            kw["drop_rate"] = self.drop_rate(block)
        kw["name"] = keras_name(block.name)
        return call(f"x = {self.helper(s)}", "x", indent=4, **kw) + "\n"

    def _arg(self, s: Structure, node: str, key: str) -> Code:
        is_argument, value = s.literal_or_argument(node, key)
        return Code(self._rename(s, value) if is_argument else literal(value))

    @staticmethod
    def _rename(s: Structure, argument: str) -> str:
        """Keras's names: filters, strides. A block whose output width is its
        input's takes that width as `filters` (Keras reads the input's)."""
        if argument == "in_channels" and "out_channels" not in s.parameters:
            return "filters"
        return _rename(argument)

    def _node(self, s: Structure, node: Node, last: bool) -> list[str]:
        layer, n = node.layer, node.name
        args = [_var(i) for i in node.inputs]
        x = args[0]
        name = Code(f'f"{{name}}_{n}"')
        target = "return " if last else f"{_var(n)} = "

        def line(func: str, *positional, trailing: str = "", **kw) -> list[str]:
            return [
                call(
                    func, *positional, indent=4, prefix=target, trailing=trailing, **kw
                )
            ]

        if isinstance(layer, ir.Conv):
            kw = {}
            if layer.groups != 1:
                kw["groups"] = self._arg(s, n, "groups")
            if layer.activation != self.activation:
                kw["activation"] = (
                    self.activations[layer.activation] if layer.activation else False
                )
            if layer.norm is None:
                kw["norm"] = False
            if layer.bias != self.conv_bias:
                kw["bias"] = layer.bias
            return line(
                "conv_bn_act",
                x,
                self._arg(s, n, "out_channels"),
                self._arg(s, n, "kernel"),
                self._arg(s, n, "stride"),
                name=name,
                **kw,
            )
        if isinstance(layer, ir.NormAct):
            if layer.activation not in (None, self.activation):
                raise SpecError(
                    f"keras backend: {n}: a norm_act node with {layer.activation} "
                    f"where the network's activation is {self.activation}"
                )
            kw = {} if layer.activation else {"activation": False}
            return line("norm_act", x, name=name, **kw)
        if isinstance(layer, ir.SqueezeExcite):
            return line(
                "squeeze_excitation", x, self._arg(s, n, "squeeze_channels"), name=name
            )
        if isinstance(layer, ir.Act):
            activation = (
                "ACTIVATION"
                if layer.activation == self.activation
                else literal(self.activations[layer.activation])
            )
            return line(
                "keras.layers.Activation", activation, name=name, trailing=f"({x})"
            )
        if isinstance(layer, ir.Add | ir.Concat | ir.Multiply):
            kind = {"add": "Add", "concat": "Concatenate", "multiply": "Multiply"}
            return line(
                f"keras.layers.{kind[layer.kind]}",
                name=name,
                trailing=f"([{', '.join(args)}])",
            )
        if isinstance(layer, ir.DropPath):
            # Its layer is {name}_drop; in a block with more than one, each
            # is named after its node too (Keras's names are unique).
            several = sum(isinstance(m.layer, ir.DropPath) for m in s.nodes) > 1
            return line("drop_path", x, "drop_rate", name if several else "name")
        if isinstance(layer, ir.Identity):
            return [f"    {target}{x}"]
        if isinstance(layer, ir.Pad):
            t, b, left, right = layer.pad
            padding = literal(((t, b), (left, right)))
            return line(
                "keras.layers.ZeroPadding2D", padding, name=name, trailing=f"({x})"
            )
        if isinstance(layer, ir.Shift):
            # One pixel up and left, zeros after: NASNet's factorized reduction.
            padded = f"{_var(n)}_padded"
            return [
                call(
                    "keras.layers.ZeroPadding2D",
                    "((0, 1), (0, 1))",
                    indent=4,
                    prefix=f"{padded} = ",
                    trailing=f"({x})",
                    name=Code(f'f"{{name}}_{n}_pad"'),
                ),
                *line(
                    "keras.layers.Cropping2D",
                    "((1, 0), (1, 0))",
                    name=name,
                    trailing=f"({padded})",
                ),
            ]
        if isinstance(layer, ir.Pool):
            return self._pool(s, n, layer, x, name, line)
        raise SpecError(f"keras backend: a {layer.kind!r} node in a block")

    def _pool(self, s, n, layer: ir.Pool, x: str, name: Code, line) -> list[str]:
        exclude = layer.pad > 0 and (
            (layer.op == "max" and layer.fill == "-inf")
            or (layer.op == "avg" and not layer.count_pad)
        )
        if layer.ceil_mode:
            raise SpecError(f"keras backend: {n}: ceil_mode pooling is not supported")
        if exclude and not (layer.kernel % 2 == 1 and layer.pad == layer.kernel // 2):
            raise SpecError(
                f"keras backend: {n}: a pool whose padding takes no part in its "
                f"windows needs an odd kernel padded by kernel // 2; found kernel "
                f"{layer.kernel}, padding {layer.pad}"
            )
        kw = {"name": name}
        if exclude:
            kw["exclude_padding"] = True
        return line(
            "pool",
            x,
            literal(layer.op),
            self._arg(s, n, "kernel"),
            self._arg(s, n, "stride"),
            self._arg(s, n, "pad"),
            **kw,
        )


def excludes_padding(pool: ir.Pool) -> bool:
    return pool.pad > 0 and (
        (pool.op == "max" and pool.fill == "-inf")
        or (pool.op == "avg" and not pool.count_pad)
    )


def _rename(argument: str) -> str:
    if argument in KERAS_NAMES:
        return KERAS_NAMES[argument]
    return argument.replace("_channels", "_filters")


TAKEN = {
    *("drop_path", "keras", "pool", "pad", "name", "norm_act", "conv_bn_act"),
    *("squeeze_excitation", "sum", "max", "min", "input", "len", "type", "id"),
}


def _var(name: str) -> str:
    if name == ir.BLOCK_INPUT:
        return "x"
    return f"{name}_out" if name in TAKEN else name


def _doc(s: Structure) -> list[str]:
    return [f"A {s.kind} block, written from its graph:", "", *describe_nodes(s)]
