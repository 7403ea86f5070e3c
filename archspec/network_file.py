"""Expanded networks (`archspec expand` output) read back as IR.

An expanded file is input too, and the backends trust it as they trust what
`expand` builds: besides the IR's field types, the checks here hold it to
what expand writes (names, chaining channels, graphs that follow from the
fields).
"""

from __future__ import annotations

import builtins
import keyword
import re
from typing import Any

from . import blocks, ir
from .diagnose import check
from .errors import Diagnostics, describe, format_path
from .source import DataPath, Document
from .validate import block_kind


def validate_network(document: Document, diagnostics: Diagnostics) -> ir.Network:
    """An expanded network (`archspec expand` output) read back as IR."""
    data = dict(document.data)
    stages = data.get("stages")
    if isinstance(stages, list):
        data["stages"] = [
            _stage_with_blocks(s, i, document, diagnostics)
            for i, s in enumerate(stages)
        ]
    network = check(ir.Network, data, document, diagnostics)
    diagnostics.raise_if_errors()
    assert network is not None
    _network_checks(network, document, diagnostics)
    diagnostics.raise_if_errors()
    return network


# Names the stem's and head's layers may have: they become attributes of the
# generated PyTorch model and prefixes of Keras layer names, so nothing else.
# What generated modules define or import besides their blocks' classes and
# helpers (named after the network's kinds and class names).
GENERATED_NAMES = {
    *("torch", "nn", "F", "math", "keras", "np", "ConvBNAct", "NormAct"),
    *("PaddedConv2d", "Pool2dSame", "Cells", "SqueezeExcitation", "Preprocess"),
    *("FoldedBatchNorm", "activation_layer", "computing_layout", "layout_of"),
    *("fold_batch_norm", "shifted_padding", "drop_path", "conv_bn_act"),
    *("norm_act", "pad", "pool", "feature_model", "prepare_for_inference"),
    *("squeeze_excitation", "ACTIVATION", "ACTIVATIONS", "RESOLUTION"),
    *("PRETRAINED_CFG", "Callable", "checkpoint", "kept", "batch_norm_affine"),
    *("feature_take_indices", "DenseBlock"),
}
STEM_NAME = re.compile(r"stem(_[a-z0-9]+)*\Z")
HEAD_NAME = re.compile(r"(head(_[a-z0-9]+)*|pool|hidden|dropout|classifier)\Z")


def _network_checks(
    net: ir.Network, document: Document, diagnostics: Diagnostics
) -> None:
    """What the IR's field types cannot say: an expanded file is input too, and
    the backends trust it as they trust what `expand` builds.

    - module and class_name end in the variant's number, as expand names them
      (efficientnet_b3, EfficientNetB3, resnet50), or else (nasnet_mobile,
      NASNetMobile) are no Python keyword or builtin and nothing a generated
      module defines or imports (`torch`, `MBConv`, `F`, `pad`).
    - layer names are the structural ones (stem*, stages.S, stages.S.B, head*,
      pool, hidden, dropout, classifier), each once: weights move by them, they become
      attributes of the PyTorch model, and Keras needs them unique.
    - every stage has a block, channel counts chain from layer to layer, and
      the head ends in the dense classifier.
    """

    def error(message: str, path: DataPath) -> None:
        diagnostics.error(message, document.position(path), format_path(path))

    # Names the generated modules define or import, which a module or class
    # name without a number (nasnet_mobile, NASNetLarge) must not be.
    taken = {
        *dir(builtins),
        *keyword.kwlist,
        *GENERATED_NAMES,
        *(b.block_class() for b in net.blocks),
        *(b.kind for b in net.blocks),
    }
    for key, example in (
        ("module", "efficientnet_b3"),
        ("class_name", "EfficientNetB3"),
    ):
        value = getattr(net, key)
        if not value[-1].isdigit() and (value in taken or value.lower() in taken):
            error(
                f"expected a variant name (like {example!r}), not a Python "
                "keyword or builtin or a name the generated code defines or "
                f"imports; found {value!r}",
                (key,),
            )
    seen: set[str] = set()
    previous = net.input.channels
    for part, pattern, layers in (
        ("stem", STEM_NAME, net.stem),
        ("head", HEAD_NAME, net.head),
    ):
        if part == "head":
            previous = _stages_check(net, previous, error)
        if not layers:
            error("expected at least one layer, found none", (part,))
        for i, layer in enumerate(layers):
            at = (part, i)
            if not pattern.match(layer.name) or layer.name in seen:
                error(
                    f"expected a {part} layer name ({pattern.pattern[:-2]}) used once, "
                    f"found {layer.name!r}",
                    (*at, "name"),
                )
            seen.add(layer.name)
            for field in ("in_channels", "channels", "in_features"):
                found = getattr(layer, field, None)
                if found is not None and found != previous:
                    error(
                        f"expected {previous} (the channels of the layer before), "
                        f"found {found}",
                        (*at, field),
                    )
            previous = getattr(
                layer, "out_channels", getattr(layer, "out_features", previous)
            )
    if net.head and not isinstance(net.head[-1], ir.Dense):
        error("expected the head to end in the dense classifier", ("head",))
    pre = net.input.preprocess
    if pre and not len(pre.mean) == len(pre.std) == net.input.channels:
        error(
            f"preprocess mean and std need one value per input channel "
            f"({net.input.channels}); found {len(pre.mean)} and {len(pre.std)}",
            ("input", "preprocess"),
        )


def _stages_check(net: ir.Network, previous: int, error) -> int:
    """Stage and block names, channels chaining through the blocks."""
    if not net.stages:
        error("expected at least one stage, found none", ("stages",))
    for i, stage in enumerate(net.stages):
        if stage.name != f"stages.{i}":
            error(
                f"expected the layer name 'stages.{i}', found {stage.name!r}",
                ("stages", i, "name"),
            )
        if not stage.blocks:
            error("expected at least one block, found none", ("stages", i, "blocks"))
        for j, block in enumerate(stage.blocks):
            at = ("stages", i, "blocks", j)
            if block.name != f"stages.{i}.{j}":
                error(
                    f"expected the layer name 'stages.{i}.{j}', found {block.name!r}",
                    (*at, "name"),
                )
            if block.in_channels != previous:
                error(
                    f"expected {previous} (the channels of the layer before), "
                    f"found {block.in_channels}",
                    (*at, "in_channels"),
                )
            for index, message in block.check():
                where = (*at, "graph") if index is None else (*at, "graph", index)
                error(f"{block.kind} block: {message}", where)
            previous = block.out_channels
    return previous


def _stage_with_blocks(
    stage: Any, i: int, document: Document, diagnostics: Diagnostics
) -> Any:
    if not isinstance(stage, dict) or not isinstance(stage.get("blocks"), list):
        return stage
    built = []
    for j, block in enumerate(stage["blocks"]):
        at = ("stages", i, "blocks", j)
        value = block.get("kind") if isinstance(block, dict) else None
        if isinstance(value, str) and "graph" in block and blocks.get(value) is None:
            # A kind the spec defined (`blocks:`): its graph is all there is.
            built.append(check(ir.GraphBlock, block, document, diagnostics, at=at))
            continue
        kind = block_kind(value, (*at, "kind"), document, diagnostics)
        if kind is not None:
            built.append(_block(kind, block, at, document, diagnostics))
    # On errors, let the stage validate without blocks so other fields still report.
    ok = all(b is not None for b in built) and len(built) == len(stage["blocks"])
    return {**stage, "blocks": built if ok else []}


def _block(
    kind: blocks.BlockKind,
    data: dict,
    at: DataPath,
    document: Document,
    diagnostics: Diagnostics,
) -> ir.Block | None:
    """One block of an expanded network. A kind that computes its graph from
    its fields shows it in the file (`archspec expand`): the graph read back
    must be the one the fields give, or the file says one thing and the
    model would do another."""
    computed = not issubclass(kind.ir, ir.GraphBlock)
    shown = data.get("graph") if computed else None
    if computed:
        data = {k: v for k, v in data.items() if k != "graph"}
    block = check(kind.ir, data, document, diagnostics, at=at)
    if block is None or shown is None:
        return block
    expected = block.model_dump(mode="json")["graph"]
    if not isinstance(shown, list) or len(shown) != len(expected):
        diagnostics.error(
            f"the graph of a {kind.name!r} block follows from its fields: "
            f"expected {len(expected)} nodes, found "
            f"{len(shown) if isinstance(shown, list) else describe(shown)}",
            document.position((*at, "graph")),
            format_path((*at, "graph")),
        )
        return block
    for i, (node, want) in enumerate(zip(shown, expected, strict=True)):
        if node != want:
            where = (*at, "graph", i)
            diagnostics.error(
                f"the graph of a {kind.name!r} block follows from its fields; "
                f"node {i} should be {want}, found {node}",
                document.position(where),
                format_path(where),
            )
            break
    return block
