"""archspec's Flax NNX backend: one readable, self-contained module per
variant, importing only `jax` and `flax.nnx`, written from primitives.

Every block is written from its dataflow graph (generic.py): this backend
has no template per block kind, only the module's primitives
(templates/layers.py.j2: ConvBNAct, NormAct, SqueezeExcitation, Pool, the
stage containers) and the model class (templates/model.py.j2). Maps are
NHWC; `model(x, train=False)`; `nnx.state(model)` paths are the IR's layer
names (`stages.2.0.depthwise.conv.kernel`), which is how weights move by
name from the other backends (archspec.weights). This package never imports
jax or flax.
"""

from __future__ import annotations

from pathlib import Path

from archspec import ir
from archspec.errors import SpecError
from archspec.render import (
    Code,
    Provenance,
    activations,
    bare_convs,
    call,
    cell_wiring,
    environment,
    features,
    head,
    literal,
    nodes,
    paddings,
    uniform,
)
from archspec.structure import describe_stage, structures

from .generic import FUNCTIONS, Writer, lax_padding

TEMPLATES = Path(__file__).parent / "templates"

# IR activation -> the function that computes it, as source (`gelu`: the
# module's exact GELU, PyTorch's; jax.nn.gelu approximates by default).
ACTIVATIONS = FUNCTIONS
GATES = {"sigmoid": "jax.nn.sigmoid", "hardsigmoid": "jax.nn.hard_sigmoid"}


class FlaxBackend:
    name = "flax"
    description = "Flax NNX module per variant (imports jax and flax.nnx only)"

    def __init__(self) -> None:
        self.env = environment(TEMPLATES)

    @property
    def runtime(self):
        """The runtime adapter (imports jax and flax when used)."""
        from .runtime import FlaxRuntime

        return FlaxRuntime()

    def emit(self, network: ir.Network, *, generic: bool = True) -> dict[str, str]:
        """The module of one network; every block is written from its graph
        (`generic` is accepted for the other backends' signature)."""
        del generic
        kinds = list(dict.fromkeys(block.kind for block in network.blocks))
        acts = activations(network, self.name, ACTIVATIONS)
        top = head(network, self.name)
        cells, skip_reduction = cell_wiring(network, self.name)
        pads = paddings(network, self.name, kinds)
        conv_bias = bool(
            uniform(
                network,
                "bias",
                self.name,
                (ir.Conv, ir.Block),
                besides=bare_convs(network, kinds),
            )
        )
        gate = uniform(network, "gate", self.name, (ir.SqueezeExcite,))
        if gate is not None and gate not in GATES:
            raise SpecError(
                f"flax backend: squeeze-excitation gate {gate!r} is not supported "
                f"(supported: {', '.join(GATES)})"
            )
        groups = structures(network.blocks, set(kinds))
        writer = Writer(acts.default, conv_bias, pads.default or "symmetric", groups)
        # Kinds the graphs use as ops (NASNet's separable branch) come first.
        classes = [writer.write(s) for found in groups.values() for s in found]
        build = {
            block.name: call(
                s.name,
                *_arguments(s.call_arguments(block)),
                "rngs=rngs",
                indent=16,
                trailing=",",
            )
            for found in groups.values()
            for s in found
            for block in s.blocks
        }
        class_of = {
            b.name: s.name for f in groups.values() for s in f for b in s.blocks
        }
        everything = nodes(network)
        top_level = TopLevel(network, top, acts.default, pads.default)
        stem = [top_level.layer(layer) for layer in network.stem]
        head_layers = [top_level.layer(layer) for layer in network.head]
        used = {*writer.functions, *top_level.functions}
        convs = [n for n in everything if isinstance(n, ir.Conv)]
        pools = [n for n in everything if isinstance(n, ir.Pool)]
        source = self.env.get_template("module.py.j2").render(
            net=network,
            about=Provenance.of(network),
            classes=classes,
            build=build,
            stage_text=[
                describe_stage(stage, i, class_of, stage.blocks[0].kind)
                for i, stage in enumerate(network.stages, 1)
            ],
            stem=stem,
            head=head_layers,
            pool=top.pool,
            classifier=top.classifier,
            head_dropout=top.dropout,
            cells=cells,
            skip_reduction=skip_reduction,
            norm=uniform(network, "norm", self.name),
            conv_bias=conv_bias,
            padding=pads.default or "symmetric",
            paddings=pads.used,
            conv_bn_act=any(c.norm is not None for c in convs),
            conv_padding=writer.conv_padding or any(c.norm is not None for c in convs),
            norm_act=any(isinstance(n, ir.NormAct) for n in everything),
            squeeze_excitation=any(isinstance(n, ir.SqueezeExcite) for n in everything),
            se_activation=ACTIVATIONS[acts.se or acts.default or "relu"],
            se_gate=GATES[gate or "sigmoid"],
            pools=bool(pools),
            ceil_mode=any(p.ceil_mode for p in pools),
            activation=acts.default,
            per_layer=acts.per_layer,
            used_activations=acts.used,
            ACTIVATIONS=ACTIVATIONS,
            gelu="gelu" in {*acts.used, *used, acts.se},
            stochastic_depth=any(s.drops_path for f in groups.values() for s in f),
            features=features(network),
            momentum=_flax_momentum,
        )
        if "jnp." not in source:  # no padding, pooling or concatenation
            source = source.replace("import jax.numpy as jnp\n", "", 1)
        return {f"{network.module}.py": source}


def _flax_momentum(momentum: float) -> float:
    """Flax's BatchNorm momentum weighs the running average; PyTorch's (the
    IR's) weighs the new batch."""
    return round(1.0 - momentum, 12)


def _arguments(values: list[tuple[str, int]]) -> list[str]:
    """A block's constructor arguments: widths in and out by position, the
    rest by name."""
    return [
        literal(v) if k in ("in_channels", "out_channels") else f"{k}={literal(v)}"
        for k, v in values
    ]


class TopLevel:
    """The stem's and head's layers: each one's constructor line (None for
    those computed inline) and its statement."""

    def __init__(
        self,
        network: ir.Network,
        top,
        activation: str | None,
        padding: str | None,
    ):
        self.network, self.top = network, top
        self.activation, self.padding = activation, padding
        self.functions: set[str] = set()

    def layer(self, layer: ir.Layer) -> tuple[str | None, str]:
        this, rngs = f"self.{layer.name} = ", Code("rngs")
        name = f"self.{layer.name}"
        if isinstance(layer, ir.Conv) and layer.norm is not None:
            if layer.groups != 1:
                raise SpecError(
                    f"flax backend: a stem or head convolution with groups ({layer.name})"
                )
            kw: dict[str, object] = {}
            if layer.stride != 1:
                kw["stride"] = layer.stride
            if layer.activation != self.activation:
                kw["activation"] = layer.activation or False
            strided = layer.stride > 1 and layer.kernel > 1
            if (strided or layer.padding == "valid") and layer.padding != self.padding:
                kw["padding"] = layer.padding
            init = call(
                "ConvBNAct",
                layer.in_channels,
                layer.out_channels,
                layer.kernel,
                indent=8,
                prefix=this,
                **kw,
                rngs=rngs,
            )
            return init, f"x = {name}(x, train=train)"
        if isinstance(layer, ir.Conv):
            kw = {}
            if layer.stride != 1:
                kw["strides"] = layer.stride
            if layer.kernel > 1:
                pad = lax_padding(layer.padding, layer.kernel, layer.stride)
                kw["padding"] = Code(literal(pad))
            if layer.groups != 1:
                kw["feature_group_count"] = layer.groups
            kw["use_bias"] = layer.bias
            init = call(
                "nnx.Conv",
                layer.in_channels,
                layer.out_channels,
                f"({layer.kernel}, {layer.kernel})",
                indent=8,
                prefix=this,
                **kw,
                rngs=rngs,
            )
            value = f"{name}(x)"
            if layer.activation:
                self.functions.add(layer.activation)
                value = f"{FUNCTIONS[layer.activation]}({value})"
            return init, f"x = {value}"
        if isinstance(layer, ir.NormAct):
            kw = {}
            if layer.activation != self.activation:
                kw["activation"] = layer.activation or False
            init = call(
                "NormAct", layer.channels, indent=8, prefix=this, **kw, rngs=rngs
            )
            return init, f"x = {name}(x, train=train)"
        if isinstance(layer, ir.Pool):
            if layer.ceil_mode and layer.op == "avg":
                raise SpecError(
                    f"flax backend: {layer.name}: average pooling with ceil_mode is "
                    "not supported yet"
                )
            kw = {}
            if layer.same:
                kw["same"] = True
            elif layer.pad:
                kw["padding"] = layer.pad
            if layer.op == "max" and layer.fill == "zero" and (layer.same or layer.pad):
                kw["fill"] = Code("0.0")
            if layer.op == "avg" and not layer.count_pad and (layer.same or layer.pad):
                kw["count_pad"] = False
            if layer.ceil_mode:
                kw["ceil_mode"] = True
            init = call(
                "Pool",
                literal(layer.op),
                layer.kernel,
                layer.stride,
                indent=8,
                prefix=this,
                **kw,
            )
            return init, f"x = {name}(x)"
        if isinstance(layer, ir.Act):
            self.functions.add(layer.activation)
            return None, f"x = {FUNCTIONS[layer.activation]}(x)"
        if isinstance(layer, ir.GlobalPool):
            op = "mean" if layer.op == "avg" else "max"
            keep = ", keepdims=True" if self.network.classifier.conv else ""
            return None, f"x = x.{op}((1, 2){keep})"
        if isinstance(layer, ir.Dropout):
            rate = Code("drop_rate") if layer is self.top.dropout else layer.rate
            init = call(
                "nnx.Dropout",
                literal(rate) if not isinstance(rate, Code) else rate,
                indent=8,
                prefix=this,
                rngs=rngs,
            )
            return init, f"x = {name}(x, deterministic=not train)"
        if isinstance(layer, ir.Dense):
            if layer is self.top.classifier:
                return None, "x = self.classifier(x)"
            if layer.conv:
                init = call(
                    "nnx.Conv",
                    layer.in_features,
                    layer.out_features,
                    "(1, 1)",
                    indent=8,
                    prefix=this,
                    use_bias=layer.bias,
                    rngs=rngs,
                )
            else:
                init = call(
                    "nnx.Linear",
                    layer.in_features,
                    layer.out_features,
                    indent=8,
                    prefix=this,
                    use_bias=layer.bias,
                    rngs=rngs,
                )
            value = f"{name}(x)"
            if layer.activation:
                self.functions.add(layer.activation)
                value = f"{FUNCTIONS[layer.activation]}({value})"
            return init, f"x = {value}"
        raise SpecError(
            f"flax backend: a {layer.kind!r} layer in the stem or head ({layer.name}) "
            "is not supported yet"
        )


BACKEND = FlaxBackend()

__all__ = ["BACKEND", "FlaxBackend"]
