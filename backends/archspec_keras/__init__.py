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

A kind with no template (a kind written in a spec), or every kind with
`emit(network, generic=True)`, is written from its graph by `generic.py`
and `templates/generic.py.j2`, which has the same two macros: one helper per
block structure. docs/backends.md ("Template contract") states the macros
of both backends. The kinds such graphs call as ops (NASNet's separable
branch) get helpers of their own, written first.

A network of cells (NASNet, PNASNet: every block reads the output before it,
x, and the one before that, prev) threads both through the builder:
`x, prev = cell(x, prev, ...), x`, the first cell reading the stem's output
as both; after a stage whose next cell reads the same prev as its last
(skip_reduction), `x = cell(x, prev, ...)`.
"""

from __future__ import annotations

import re
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
    cell_wiring,
    environment,
    features,
    head,
    nodes,
    paddings,
    uniform,
)
from archspec.structure import structures
from archspec.weights import keras_name

from .generic import Writer, excludes_padding, helper_names

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
# The module's own functions (layers.py.j2's helpers, feature_model), its
# import and the builder's arguments and variables, which no helper of a
# block structure may be named.
MODULE_NAMES = (
    *("pad", "conv_bn_act", "norm_act", "pool", "squeeze_excitation", "drop_path"),
    *("feature_model", "prepare_for_inference", "FoldedBatchNorm", "keras"),
    *("include_top", "weights", "input_tensor", "input_shape"),
    *("pooling", "classes", "classifier_activation", "drop_rate"),
    *("drop_path_rate", "inputs", "sources", "x", "model"),
)
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

    @property
    def runtime(self):
        """The runtime adapter (imports Keras when used)."""
        from .runtime import KerasRuntime

        return KerasRuntime()

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
        cells, skip_reduction = cell_wiring(network, self.name)
        norm = uniform(network, "norm", self.name)
        acts = activations(network, self.name, ACTIVATIONS)
        activation, se_activation = acts.default, acts.se
        pads = paddings(network, self.name, from_graph)
        # A stem or head convolution without norm (ResNetV2's stem) may have a
        # bias of its own; the builder passes it.
        # So may the convolutions without norm of blocks written from their
        # graphs: their calls pass it.
        bare = bare_convs(network, from_graph)
        conv_bias = uniform(network, "bias", self.name, among=(ir.Conv,), besides=bare)
        everything = nodes(network)
        for node in everything:
            if isinstance(node, ir.SqueezeExcite) and node.gate not in GATES:
                raise SpecError(
                    f"keras backend: squeeze-excitation gate {node.gate!r} is not "
                    f"supported (supported: {', '.join(GATES)})"
                )
        top = head(network, self.name)
        # The classifier and the dropout before it take the builder's arguments.
        roles = {top.classifier.name: "classifier"}
        if top.dropout is not None:
            roles[top.dropout.name] = "dropout"
        excluded = _padding_excluded(network)
        pools = [node for node in everything if isinstance(node, ir.Pool)]
        pool = top.pool

        drop_rate = _drop_rates(network)
        # Each kind's template module, in the order the kinds first appear:
        # its own template, or generic.py.j2 with its blocks' structures.
        kinds = {}
        for kind, template in templates.items():
            if template is not None:
                kinds[kind] = template.make_module(
                    vars={
                        "blocks": [b for b in network.blocks if b.kind == kind],
                        "network": network,
                        "drop_rate": drop_rate,
                        "activation": acts.default,
                        "per_layer": acts.per_layer,
                    }
                )
        definitions = {kind: module.definitions() for kind, module in kinds.items()}
        # Generic helpers take names no other function of the module has.
        taken = {*MODULE_NAMES, network.module} | {
            name
            for text in definitions.values()
            for name in re.findall(r"^def (\w+)\(", text, re.M)
        }
        names = helper_names(groups, taken)
        writer = Writer(
            drop_rate,
            activation,
            bool(conv_bias),
            ACTIVATIONS,
            pads.default,
            groups,
            names,
        )
        wiring = _wiring(network, skip_reduction) if cells else {}
        generic_template = self.env.get_template("generic.py.j2")
        for kind in groups:  # the kinds written from their graphs
            kinds[kind] = generic_template.make_module(
                vars=writer.kind(groups[kind], names[kind]) | {"wiring": wiring}
            )
            definitions[kind] = kinds[kind].definitions()
        # The kinds only called inside graphs (NASNet's separable branch) have
        # helpers, written first, and no block of their own.
        called = [kind for kind in groups if kind not in templates]
        kinds = {kind: kinds[kind] for kind in templates}

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
            # Convolutions that name a padding other than PADDING (stem, head,
            # blocks written from their graphs).
            "per_layer_padding": pads.per_layer,
            "optional_norm": any(c.norm is None for c in convs),
            # Convolutions without norm whose bias is not CONV_BIAS (stem,
            # head, blocks written from their graphs).
            "per_layer_bias": any(c.bias != bool(conv_bias) for c in bare),
            # Pools whose padding takes no part (PyTorch's -inf max pooling on
            # a map that can be negative; averages that do not count it).
            "exclude_padding": bool(excluded)
            or any(
                excludes_padding(node)
                for found in groups.values()
                for s in found
                for block in s.blocks
                for node in block.graph()
                if isinstance(node, ir.Pool)
            ),
            # Max pools over zeros on purpose (keras.applications' ResNetV2).
            "zero_max": any(
                p.op == "max" and p.fill == "zero" and (p.pad or p.same) for p in pools
            ),
            # Stride-2 pools padded as TensorFlow's "same" (NASNet's).
            "same": any(p.same for p in pools),
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
        helpers += [definitions[kind] for kind in (*called, *kinds)]

        source = self.env.get_template("module.py.j2").render(
            network=network,
            provenance=Provenance.of(network),
            # In-model normalisation that differs between channels applies to
            # an input of the spec's channels only (module.py.j2).
            per_channel=_per_channel(network.input.preprocess),
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
            cells=cells,
        )
        return {f"{network.module}.py": source}


def _per_channel(preprocess) -> bool:
    """Whether the in-model normalisation differs between channels."""
    if preprocess is None:
        return False
    return len({*preprocess.mean}) > 1 or len({*preprocess.std}) > 1


def _wiring(network: ir.Network, skip_reduction: set[str]) -> dict[str, tuple]:
    """Block name -> (the assignment before its call, after it, and a comment
    above it) in a network of cells: each cell's output becomes x and its
    input prev, but where the next cell reads this cell's own prev (after a
    stage in `skip_reduction`) and after the last cell, prev stays."""
    last = network.blocks[-1].name
    wiring = {}
    for stage in network.stages:
        for i, block in enumerate(stage.blocks):
            keeps = i == len(stage.blocks) - 1 and stage.name in skip_reduction
            if keeps:
                comment = "The next cell reads this one's prev (skip_reduction)."
                wiring[block.name] = ("x = ", "", comment)
            elif block.name == last:
                wiring[block.name] = ("x = ", "", "")
            else:
                wiring[block.name] = ("x, prev = ", ", x", "")
    return wiring


def _drop_rates(network: ir.Network) -> Callable[[ir.Block], Code]:
    """Block i of n (all blocks counted) drops its branch with probability
    drop_path_rate * i / n: the expression, with i and n written out."""
    index = {block.name: i for i, block in enumerate(network.blocks)}
    n = len(index)

    def drop_rate(block: ir.Block) -> Code:
        return Code(f"drop_path_rate * {index[block.name]} / {n}")

    return drop_rate


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
