"""The Keras 3 backend: one readable functional-model module per variant.

The generated module imports nothing but `keras` and uses only its public API,
so it runs on the TensorFlow, JAX and torch backends. It holds the network-wide
constants (BN_EPSILON, BN_MOMENTUM, PADDING, ACTIVATION, CONV_BIAS, the input
preprocessing), one helper function per layer kind and block kind the network
uses, and a builder named after the module (`resnet50(include_top=True,
weights=None, input_shape=..., pooling=None, classes=1000, ...)`, as
keras.applications.ResNet50, plus `drop_rate` and `drop_path_rate`) that emits the stem and head layer by
layer from the IR and calls a helper for every block, with literal arguments.

Layer naming: a Keras layer's name is the IR's dotted weight path with "."
replaced by "_": `stem.conv` -> `stem_conv`, `stages.0.0.conv1.conv` ->
`stages_0_0_conv1_conv`, `stages.0.0.shortcut.bn` -> `stages_0_0_shortcut_bn`,
`classifier` -> `classifier`. Layers without weights take the same prefix and a
suffix of their own (`stem_act`, `stem_pool_pad`, `stages_1_1_add`). Weights
therefore move between backends (archspec.weights), and to keras.applications
through `archspec.references.keras_applications`, by name.

Templates live in `templates/`: `module.py.j2` (the file), `layers.py.j2` (a
helper per layer kind, and the builder's line for a stem or head layer) and
one `blocks/{kind}.py.j2` per block kind with two macros: `definitions()` (its
helper functions) and `build(block)` (the call in the builder). A kind's
template sees `blocks` (the network's blocks of that kind), `network` and
`drop_rate(block)` (the stochastic-depth expression), and may set `uses` to
the layer helpers it calls ("conv", "se", "drop_path", ...). A block kind
outside archspec brings its template in its own folder
(`BlockKind.templates["keras"]`), searched before the built-in one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import jinja2

from archspec import blocks, ir
from archspec.errors import SpecError
from archspec.render import (
    Code,
    Provenance,
    activations,
    bare_convs,
    environment,
    features,
    nodes,
    paddings,
    uniform,
)
from archspec.structure import structures
from archspec.weights import keras_name

from .generic import GenericKind, excludes_padding

TEMPLATES = Path(__file__).parent / "templates"

# IR activation -> Keras activation name: only where Keras computes the same
# function as PyTorch (gelu: both the exact erf form by default).
ACTIVATIONS = {
    "silu": "silu",
    "relu": "relu",
    "relu6": "relu6",
    "gelu": "gelu",
    "hardswish": "hard_silu",  # x * relu6(x + 3) / 6, as torch's Hardswish
}
# Squeeze-excitation gates: IR name -> Keras activation (hard_sigmoid is
# relu6(x + 3) / 6, as torch's Hardsigmoid).
GATES = {"sigmoid": "sigmoid", "hardsigmoid": "hard_sigmoid"}
# Activations whose output is never negative: zero padding before a max pool
# then equals PyTorch's -inf padding.
NON_NEGATIVE = ("relu", "relu6")
# Helper macros of layers.py.j2, in the order they are written, and the layer
# kind (or block templates' `uses` entry) that needs each.
HELPERS = {
    "pad": "conv",
    "conv": "conv",
    "norm_act": "norm_act",
    "pool": "pool",
    "squeeze_excitation": "se",
    "drop_path": "drop_path",
}


class KerasBackend:
    name = "keras"
    description = "Keras 3 functional models (TensorFlow, JAX and torch backends)"

    def __init__(self, templates: Sequence[Path] = (TEMPLATES,)):
        """`templates`: folders searched in order; put a folder with
        `blocks/{kind}.py.j2` before TEMPLATES to add (or override) a kind."""
        self.templates = tuple(Path(t) for t in templates)
        self._envs: dict[tuple[Path, ...], jinja2.Environment] = {}
        self.env = self._environment(self.templates)

    def _environment(self, folders: tuple[Path, ...]) -> jinja2.Environment:
        env = self._envs.get(folders)
        if env is None:
            env = environment(list(folders))  # FileSystemLoader takes a list
            env.filters["keras_name"] = keras_name
            env.filters["keras_activation"] = ACTIVATIONS.__getitem__
            self._envs[folders] = env
        return env

    def _kind(self, kind: str) -> jinja2.Template | None:
        """The template of a block kind: the kind's own folder first (a plugin
        kind brings one), then this backend's folders; None if it has none."""
        registered = blocks.get(kind)
        own = registered.templates.get(self.name) if registered else None
        folders = ((Path(own),) if own is not None else ()) + self.templates
        try:
            return self._environment(folders).get_template(f"blocks/{kind}.py.j2")
        except jinja2.TemplateNotFound:
            return None  # written from its graph
        except jinja2.TemplateSyntaxError as exc:
            raise SpecError(
                f"keras backend: the template of block kind {kind!r} is invalid: "
                f"{exc.filename}:{exc.lineno}: {exc.message}"
            ) from None

    def emit(self, network: ir.Network, *, generic: bool = False) -> dict[str, str]:
        """The module of one network. Kinds without a template of their own
        (spec-defined ones), or every kind with `generic`, are written from
        their graphs."""
        templates = {b.kind: None for b in network.blocks}
        for kind in templates:
            templates[kind] = None if generic else self._kind(kind)
        from_graph = {kind for kind, found in templates.items() if found is None}
        groups = structures(network.blocks, from_graph)
        norm = uniform(network, "norm", self.name)
        acts = activations(network, self.name)
        activation, se_activation = acts.default, acts.se
        pads = paddings(network, self.name)
        # A stem or head convolution without norm (ResNetV2's stem) may have a
        # bias of its own; the builder passes it.
        # So may the convolutions without norm of blocks written from their
        # graphs: their calls pass it.
        bare = bare_convs(network, from_graph)
        conv_bias = uniform(network, "bias", self.name, among=(ir.Conv,), besides=bare)
        for value in (*acts.used, se_activation):
            if value is not None and value not in ACTIVATIONS:
                raise SpecError(
                    f"keras backend: activation {value!r} is not supported "
                    f"(supported: {', '.join(ACTIVATIONS)})"
                )
        everything = nodes(network)
        for node in everything:
            if isinstance(node, ir.SqueezeExcite) and node.gate not in GATES:
                raise SpecError(
                    f"keras backend: squeeze-excitation gate {node.gate!r} is not "
                    f"supported (supported: {', '.join(GATES)})"
                )
        roles = _check_layers(network)
        excluded = _padding_excluded(network)
        pools = [node for node in everything if isinstance(node, ir.Pool)]
        pool = next(
            i for i, node in enumerate(network.head) if node.kind == "global_pool"
        )

        drop_rate = _drop_rates(network)
        kinds = {}
        for block in network.blocks:
            if block.kind in kinds:
                continue
            if block.kind in from_graph:
                kinds[block.kind] = GenericKind(
                    groups[block.kind],
                    drop_rate,
                    activation,
                    bool(conv_bias),
                    ACTIVATIONS,
                )
            else:
                of_kind = [b for b in network.blocks if b.kind == block.kind]
                kinds[block.kind] = templates[block.kind].make_module(
                    vars={
                        "blocks": of_kind,
                        "network": network,
                        "drop_rate": drop_rate,
                        "activation": acts.default,
                        "per_layer": acts.per_layer,
                    }
                )

        convs = [node for node in everything if isinstance(node, ir.Conv)]
        used = {node.kind for node in everything} | {
            use for kind in kinds.values() for use in getattr(kind, "uses", ())
        }
        layers = self.env.get_template("layers.py.j2").module
        use = {
            "groups": any(c.groups > 1 for c in convs),
            "depthwise": any(c.depthwise for c in convs),
            # Depthwise convolutions with more than one filter per channel.
            "multiplier": any(c.depthwise and c.out_channels > c.groups for c in convs),
            "grouped": any(c.groups > 1 and not c.depthwise for c in convs),
            # PADDING may be switched to "symmetric" in a generated module.
            "paddings": ("symmetric", *pads.used),
            # Stem or head convolutions that name a padding other than PADDING.
            "per_layer_padding": pads.per_layer,
            "optional_norm": any(c.norm is None for c in convs),
            # Stem or head convolutions whose bias is not CONV_BIAS.
            "per_layer_bias": any(c.bias != bool(conv_bias) for c in bare),
            # Pools whose padding takes no part (PyTorch's -inf max pooling on
            # a map that can be negative; averages that do not count it).
            "exclude_padding": bool(excluded)
            or any(
                excludes_padding(node)
                for block in network.blocks
                if block.kind in from_graph
                for node in block.graph()
                if isinstance(node, ir.Pool)
            ),
            # Max pools over zeros on purpose (keras.applications' ResNetV2).
            "zero_max": any(
                p.op == "max" and p.fill == "zero" and p.pad for p in pools
            ),
            # SE layers with an activation of their own (SE_ACTIVATION).
            "se_activation": se_activation not in (None, activation),
            # Layers that name an activation other than ACTIVATION.
            "per_layer": acts.per_layer,
            "se_gate": GATES[
                uniform(network, "gate", self.name, (ir.SqueezeExcite,)) or "sigmoid"
            ],
        }
        helpers = [
            getattr(layers, macro)(use)
            if macro in ("pad", "conv", "pool", "squeeze_excitation")
            else getattr(layers, macro)()
            for macro, needed_by in HELPERS.items()
            if needed_by in used
        ]
        helpers += [kind.definitions() for kind in kinds.values()]

        source = self.env.get_template("module.py.j2").render(
            network=network,
            provenance=Provenance.of(network),
            kinds=kinds,
            helpers=[text.strip("\n") for text in helpers],
            roles=roles,
            exclude_padding=excluded,
            norm=norm,
            # Keras's momentum weighs the old statistics: 1 - PyTorch's.
            bn_momentum=float(f"{1 - norm.momentum:.12g}") if norm else None,
            padding=pads.default,
            default_padding=pads.default,
            paddings=pads.used,
            activation=ACTIVATIONS.get(activation),
            default_activation=activation,
            se_activation=ACTIVATIONS[se_activation] if use["se_activation"] else None,
            conv_bias=bool(conv_bias),
            dense=any(isinstance(node, ir.Dense) for node in everything),
            features=features(network),
            # include_top=False ends at the global pool.
            feature_head=network.head[:pool],
            pooled_head=network.head[pool:],
        )
        return {f"{network.module}.py": source}


def _drop_rates(network: ir.Network) -> Callable[[ir.Block], Code]:
    """Block i of n (all blocks counted) drops its branch with probability
    drop_path_rate * i / n: the expression, with i and n written out."""
    index = {block.name: i for i, block in enumerate(network.blocks)}
    n = len(index)

    def drop_rate(block: ir.Block) -> Code:
        return Code(f"drop_path_rate * {index[block.name]} / {n}")

    return drop_rate


def _check_layers(network: ir.Network) -> dict[str, str]:
    """What the builder can emit for the stem and head: feature maps until a
    global pool, then vectors for dropout and dense layers, and a dense
    classifier. Returns the roles of the classifier and the dropout before it
    (they take the builder's arguments)."""
    if not any(isinstance(node, ir.Dense | ir.Conv) for node in network.head):
        raise SpecError("keras backend: the head has no classifier (a dense layer)")
    classifier = network.classifier
    if not isinstance(classifier, ir.Dense):
        raise SpecError(
            f"keras backend: {classifier.name}: the classifier must be a dense "
            f"layer, found a {classifier.kind!r} layer"
        )
    for node in network.head:
        if isinstance(node, ir.Dense) and node.conv != classifier.conv:
            raise SpecError(
                f"keras backend: {node.name}: dense layers both as 1x1 "
                "convolutions and not are not supported"
            )
    maps = {"conv", "pool", "norm_act", "se"}
    for where, sequence in (("stem", network.stem), ("head", network.head)):
        pooled = False
        for node in sequence:
            if node.kind == "global_pool":
                pooled = True
            if (node.kind in maps and pooled) or (node.kind == "dense" and not pooled):
                state = "after" if pooled else "before"
                raise SpecError(
                    f"keras backend: {where} layer {node.name}: a {node.kind!r} "
                    f"layer {state} the global pool is not supported"
                )
        if pooled != (where == "head"):
            raise SpecError(
                "keras backend: global pooling in the stem is not supported"
                if pooled
                else "keras backend: the head needs a global pool before its dense layers"
            )
    roles = {classifier.name: "classifier"}
    before = network.head[: network.head.index(classifier)]
    dropouts = [node for node in before if isinstance(node, ir.Dropout)]
    if dropouts:
        roles[dropouts[-1].name] = "dropout"
    return roles


def _padding_excluded(network: ir.Network) -> set[str]:
    """The stem and head pools emitted with `exclude_padding=True` (their
    padding takes no part in any window); the others pad zeros."""
    return {
        node.name
        for where, sequence in (("stem", network.stem), ("head", network.head))
        for i, node in enumerate(sequence)
        if isinstance(node, ir.Pool) and _check_pool(node, where, sequence[:i])
    }


def _check_pool(pool: ir.Pool, where: str, before: Sequence[ir.Layer]) -> bool:
    """Whether the pool's padding must take no part in its windows: PyTorch's
    -inf padding before a max pool on a map that can be negative, or an
    average that does not count it. Zero padding serves everywhere else."""
    if pool.ceil_mode:
        raise SpecError(
            f"keras backend: {where} layer {pool.name}: ceil_mode pooling is not "
            "supported (Keras's pooling rounds the output size down)"
        )
    if pool.pad == 0:
        return False
    if pool.op == "avg":
        exclude = not pool.count_pad
    else:
        # Zero padding equals PyTorch's -inf padding on non-negative inputs:
        # where the layer before (dropout aside) ends in a ReLU.
        last = next(
            (n for n in reversed(before) if not isinstance(n, ir.Dropout)), None
        )
        exclude = pool.fill == "-inf" and not (
            isinstance(last, ir.Conv | ir.NormAct) and last.activation in NON_NEGATIVE
        )
    # pool(exclude_padding=True) is a stride-1 "same" pool, subsampled: the
    # windows of PyTorch's padding when it is kernel // 2 of an odd kernel.
    if exclude and not (pool.kernel % 2 == 1 and pool.pad == pool.kernel // 2):
        what = "max pooling with -inf" if pool.op == "max" else "average pooling with"
        raise SpecError(
            f"keras backend: {where} layer {pool.name}: {what} padding that takes "
            f"no part in the windows is supported for an odd kernel padded by "
            f"kernel // 2; found kernel {pool.kernel}, padding {pool.pad}"
        )
    return exclude


BACKEND = KerasBackend()
