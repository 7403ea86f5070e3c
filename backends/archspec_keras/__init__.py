"""The Keras 3 backend: one readable functional-model module per variant.

The generated module imports nothing but `keras` and uses only its public API,
so it runs on the TensorFlow, JAX and torch backends. It holds the network-wide
constants (BN_EPSILON, BN_MOMENTUM, PADDING, ACTIVATION, the input
preprocessing), one helper function per layer kind, and a builder named after
the module (`efficientnet_b3(num_classes=1000, dropout=0.3, ...)`) that calls a
helper for every block with literal arguments taken from the IR.

Layer naming: a Keras layer's name is the IR's dotted weight path with "." replaced
by "_": `stem.conv` -> `stem_conv`, `stages.0.0.depthwise.conv` ->
`stages_0_0_depthwise_conv`, `head.bn` -> `head_bn`, `classifier` ->
`classifier`. Layers without weights take the same prefix and a suffix of
their own (`stem_act`, `stages_1_1_add`, `classifier_pool`). Weights therefore
move between backends, and to keras.applications through
`archspec.references.keras_applications`, by name.

Templates live in `templates/`: `module.py.j2` (the file), `conv.py.j2` (stem
and head, plus the padding helper every kind uses) and one
`blocks/{kind}.py.j2` per block kind, each defining two macros: `definitions()`
(its helper functions) and `build(block)` (the call in the builder). A new
block kind brings its template there and needs no change here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jinja2

from archspec import ir
from archspec.errors import SpecError
from archspec.render import Provenance, environment, uniform
from archspec.weights import keras_name

TEMPLATES = Path(__file__).parent / "templates"

# IR activation -> Keras activation name. Only what has been checked against a
# reference implementation is listed.
ACTIVATIONS = {"silu": "silu"}


class KerasBackend:
    name = "keras"
    description = "Keras 3 functional models (TensorFlow, JAX and torch backends)"

    def __init__(self, templates: Sequence[Path] = (TEMPLATES,)):
        """`templates`: folders searched in order; put a folder with
        `blocks/{kind}.py.j2` before TEMPLATES to add (or override) a kind."""
        self.env = environment(list(templates))  # FileSystemLoader takes a list
        self.env.filters["keras_name"] = keras_name

    def _kind(self, kind: str):
        try:
            return self.env.get_template(f"blocks/{kind}.py.j2").module
        except jinja2.TemplateNotFound:
            raise SpecError(
                f"keras backend: no template for block kind {kind!r} "
                f"(expected templates/blocks/{kind}.py.j2)"
            ) from None

    def emit(self, network: ir.Network) -> dict[str, str]:
        norm = uniform(network, "norm", self.name)
        padding = uniform(network, "padding", self.name)
        activation = uniform(network, "activation", self.name)
        if activation not in ACTIVATIONS:
            raise SpecError(
                f"keras backend: activation {activation!r} is not supported "
                f"(supported: {', '.join(ACTIVATIONS)})"
            )
        kinds = {kind: self._kind(kind) for kind in {b.kind: 0 for b in network.blocks}}
        source = self.env.get_template("module.py.j2").render(
            network=network,
            provenance=Provenance.of(network),
            kinds=kinds,
            norm=norm,
            # Keras's momentum weighs the old statistics: 1 - PyTorch's.
            bn_momentum=float(f"{1 - norm.momentum:.12g}"),
            padding=padding,
            activation=ACTIVATIONS[activation],
        )
        return {f"{network.module}.py": source}


BACKEND = KerasBackend()
