"""Layer names of keras.applications' EfficientNet for an archspec network.

keras.applications (`keras/src/applications/efficientnet.py`) names its
weighted layers `stem_conv`, `stem_bn`, `block{s}{b}_{part}` (s: 1-based
stage, b: the block's letter within its stage, "a" first), `top_conv`,
`top_bn` and `predictions`. The Keras backend names a layer after its IR
weight path with "." replaced by "_" (`stages.1.0.depthwise.conv` ->
`stages_1_0_depthwise_conv`). `layer_names` pairs the two, so weights move
between keras.applications and a generated model layer by layer::

    for ours, theirs in layer_names(network).items():
        model.get_layer(ours).set_weights(app.get_layer(theirs).get_weights())

The Normalization layer of keras.applications is left out: it is auto-named
("normalization", "normalization_1", ...) and its statistics are constants in
the generated module. Pure: imports neither keras nor TensorFlow.
"""

from __future__ import annotations

from .. import ir
from ..errors import SpecError
from ..weights import keras_name

# The part of an MBConv weight path after the block name -> keras.applications.
MBCONV_PARTS = {
    "expand.conv": "expand_conv",
    "expand.bn": "expand_bn",
    "depthwise.conv": "dwconv",
    "depthwise.bn": "bn",
    "se.reduce": "se_reduce",
    "se.expand": "se_expand",
    "project.conv": "project_conv",
    "project.bn": "project_bn",
}
CONV_PARTS = {"conv": "conv", "bn": "bn"}


def block_prefix(stage: int, index: int) -> str:
    """keras.applications' prefix of block `index` (0-based) of `stage` (0-based)."""
    if index >= 26:
        raise SpecError(
            f"keras.applications names blocks a-z; stage {stage} has {index + 1}"
        )
    return f"block{stage + 1}{chr(ord('a') + index)}"


def layer_names(network: ir.Network) -> dict[str, str]:
    """{our Keras layer name: keras.applications layer name}, in forward order.

    Covers every weight-bearing layer of `network.weights()`; raises SpecError
    for a block kind keras.applications does not have (only "mbconv").
    """
    prefixes = {
        network.stem.name: ("stem", CONV_PARTS),
        network.head.name: ("top", CONV_PARTS),
    }
    for s, stage in enumerate(network.stages):
        for b, block in enumerate(stage.blocks):
            if block.kind != "mbconv":
                raise SpecError(
                    f"{block.name}: keras.applications has no {block.kind!r} block"
                )
            prefixes[block.name] = (block_prefix(s, b), MBCONV_PARTS)
    names: dict[str, str] = {}
    for layer in network.weights():
        if layer.path == network.classifier.name:
            names[keras_name(layer.path)] = "predictions"
            continue
        owner, _, part = layer.path.rpartition(".")
        if owner not in prefixes:  # MBConv parts have two components
            owner, _, rest = owner.rpartition(".")
            part = f"{rest}.{part}"
        prefix, parts = prefixes[owner]
        names[keras_name(layer.path)] = f"{prefix}_{parts[part]}"
    return names
