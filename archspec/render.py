"""What every backend's templates share: a strict jinja2 environment, exact
literals, ruff-style call layout and the provenance header facts.

Generated files must be `ruff format`-clean without running ruff (the compiler
depends on nothing but pydantic, jinja2, ruamel.yaml and click), so calls with
literal arguments are laid out here the way ruff lays them out: on one line if
it fits, else the arguments on one indented line, else one per line with a
trailing comma.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from . import __version__, analysis, ir
from .errors import SpecError

LINE_LENGTH = 88


def literal(value: Any) -> str:
    """An exact Python literal: repr() round-trips floats and escapes strings."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot emit the non-finite number {value!r}")
        return repr(value)
    if isinstance(value, str):
        # ruff format's quote style: double quotes unless that needs escapes.
        text = repr(value)
        return f'"{text[1:-1]}"' if text[0] == "'" and '"' not in value else text
    if isinstance(value, bool | int | None):
        return repr(value)
    if isinstance(value, tuple | list):
        items = ", ".join(literal(v) for v in value)
        return (
            f"({items},)"
            if isinstance(value, tuple) and len(value) == 1
            else (f"({items})" if isinstance(value, tuple) else f"[{items}]")
        )
    raise TypeError(f"no literal for {type(value).__name__}")


def call(
    func: str,
    *args: Any,
    indent: int = 0,
    prefix: str = "",
    trailing: str = "",
    **kwargs: Any,
) -> str:
    """`func(args, key=value)` laid out as ruff formats it, starting at `indent`.

    Positional arguments are emitted verbatim (already source text); keyword
    values become literals unless they are `Code`. `prefix` goes before the
    call on its first line (`self.stem = `, `def `), `trailing` after the
    closing parenthesis (`,`, ` -> None:`).
    """
    parts = [str(a) for a in args] + [
        f"{k}={v if isinstance(v, Code) else literal(v)}" for k, v in kwargs.items()
    ]
    pad = " " * indent
    one_line = f"{pad}{prefix}{func}({', '.join(parts)}){trailing}"
    if len(one_line) <= LINE_LENGTH:
        return one_line
    inner = " " * (indent + 4)
    hugged = f"{inner}{', '.join(parts)}"
    if len(hugged) <= LINE_LENGTH:
        return f"{pad}{prefix}{func}(\n{hugged}\n{pad}){trailing}"
    lines = "".join(f"{inner}{p},\n" for p in parts)
    return f"{pad}{prefix}{func}(\n{lines}{pad}){trailing}"


def nodes(network: ir.Network) -> list[ir.Node]:
    """Every layer of the network, blocks included, and the blocks themselves."""
    found: list[ir.Node] = list(network.stem)
    for block in network.blocks:
        found += [block, *_inside(block.layers())]
    return found + list(network.head)


def _inside(layers: Iterable[ir.Layer]) -> list[ir.Layer]:
    """Layers, each call followed by the layers of its graph."""
    found: list[ir.Layer] = []
    for layer in layers:
        found.append(layer)
        if isinstance(layer, ir.Call):
            found += _inside(layer.graph_)
    return found


def uniform(
    network: ir.Network,
    field: str,
    backend: str,
    among: tuple[type, ...] = (ir.Node,),
    besides: tuple[ir.Node, ...] = (),
) -> object:
    """The one value of `field` shared by every node (of the types `among`,
    other than the nodes `besides`, which state their own) that sets it
    (None: unset).

    Generated modules state a setting once, as a constant, where every layer
    shares it.
    """
    seen: dict[object, str] = {}
    for node in nodes(network):
        if any(node is other for other in besides):
            continue
        value = getattr(node, field, None) if isinstance(node, among) else None
        if value is not None:
            seen.setdefault(value, getattr(node, "name", "?"))
    if len(seen) > 1:
        found = "; ".join(f"{value!r} at {name}" for value, name in seen.items())
        raise SpecError(
            f"{backend} backend: every layer must share one {field} "
            f"(the generated module holds it as a constant); found {found}"
        )
    return next(iter(seen), None)


def bare_convs(
    network: ir.Network, from_graph: Iterable[str] = ()
) -> tuple[ir.Conv, ...]:
    """The convolutions without batch norm that state their own bias, which
    the module-wide one (CONV_BIAS, ConvBNAct's) need not match: the stem's
    and head's (ResNetV2's stem), and those of blocks written from their
    graphs (`from_graph`: their kinds)."""
    kinds = set(from_graph)
    inside = [
        node
        for block in network.blocks
        if block.kind in kinds
        for node in block.graph()
    ]
    return tuple(
        layer
        for layer in [*network.layers, *inside]
        if isinstance(layer, ir.Conv) and layer.norm is None
    )


@dataclass(frozen=True)
class Activations:
    """The activations of a network, as a generated module states them.

    `default` (the module's ACTIVATION) is the most common one among convs,
    norms, dense layers and blocks; where more than one is `used`, layers and
    blocks that differ name theirs. SE layers have their own, `se` (ReLU
    inside SE-ResNet's and MobileNetV3's), which must be uniform.
    """

    default: str | None
    used: tuple[str, ...]
    se: str | None

    @property
    def per_layer(self) -> bool:
        return len(self.used) > 1


def activations(
    network: ir.Network, backend: str, supported: Iterable[str] | None = None
) -> Activations:
    """The network's activations; with `supported` (the backend's), each
    one used must be among them."""
    # A block kind need not have an activation of its own (a plugin's).
    found = [
        node.activation
        for node in nodes(network)
        if isinstance(node, ir.Conv | ir.Block | ir.NormAct | ir.Dense)
        and getattr(node, "activation", None)
    ]
    counts = Counter(found)  # most_common keeps first-seen order among ties
    default = counts.most_common(1)[0][0] if counts else None
    for block in network.blocks:
        own = getattr(block, "activation", None)
        if own and not type(block).per_layer_activation and own != default:
            raise SpecError(
                f"{backend} backend: {block.kind} blocks take the network's "
                f"activation ({default}); {block.name} has {block.activation}"
            )
    se = uniform(network, "activation", backend, (ir.SqueezeExcite,))
    if supported is not None:
        known = list(supported)
        for value in (*counts, se):
            if value is not None and value not in known:
                raise SpecError(
                    f"{backend} backend: activation {value!r} is not supported "
                    f"(supported: {', '.join(known)})"
                )
    return Activations(default, tuple(sorted(counts)), se)


@dataclass(frozen=True)
class Head:
    """The head as every backend builds it (checked by `head`): feature maps
    up to a global pool, then vectors through dropout and dense layers to a
    dense classifier."""

    classifier: ir.Dense
    # The last dropout before the classifier: the model's drop_rate argument.
    dropout: ir.Dropout | None
    # The global pool's index in network.head: the features end before it.
    pool: int


def head(network: ir.Network, backend: str) -> Head:
    """What every backend needs of the stem and the head: a global pool in
    the head only, maps (convolutions, pools, norms) before it and dense
    layers after it, the last a dense classifier, and dense layers either
    all 1x1 convolutions on the pooled map or none."""

    def refuse(message: str) -> SpecError:
        return SpecError(f"{backend} backend: {message}")

    if not any(isinstance(node, ir.Dense | ir.Conv) for node in network.head):
        raise refuse("the head has no classifier (a dense layer)")
    classifier = network.classifier
    if not isinstance(classifier, ir.Dense):
        raise refuse(
            f"{classifier.name}: the classifier must be a dense layer, found a "
            f"{classifier.kind!r} layer"
        )
    for node in network.head:
        if isinstance(node, ir.Dense) and node.conv != classifier.conv:
            raise refuse(
                f"{node.name}: dense layers both as 1x1 convolutions and not are "
                "not supported"
            )
    maps = {"conv", "pool", "norm_act", "se"}
    for where, sequence in (("stem", network.stem), ("head", network.head)):
        pooled = False
        for node in sequence:
            if node.kind == "global_pool":
                pooled = True
            if (node.kind in maps and pooled) or (node.kind == "dense" and not pooled):
                state = "after" if pooled else "before"
                raise refuse(
                    f"{where} layer {node.name}: a {node.kind!r} layer {state} the "
                    "global pool is not supported"
                )
        if pooled != (where == "head"):
            raise refuse(
                "global pooling in the stem is not supported"
                if pooled
                else "the head needs a global pool before its dense layers"
            )
    pool = next(i for i, node in enumerate(network.head) if node.kind == "global_pool")
    before = network.head[: network.head.index(classifier)]
    dropouts = [node for node in before if isinstance(node, ir.Dropout)]
    return Head(classifier, dropouts[-1] if dropouts else None, pool)


@dataclass(frozen=True)
class Paddings:
    """The convolutions' padding rules: `default` (the module's PADDING) is
    the most common; where more than one is `used`, the convolutions that
    differ name theirs (Keras's MobileNet: a "same" stem, "same_even" blocks)."""

    default: str | None
    used: tuple[str, ...]

    @property
    def per_layer(self) -> bool:
        return len(self.used) > 1


def paddings(
    network: ir.Network, backend: str, from_graph: Iterable[str] = ()
) -> Paddings:
    """The network's padding rules. Convolutions in blocks of the kinds
    `from_graph` (written from their graphs by a backend that states each
    one's rule where it differs) may have a rule of their own; in other
    blocks, a strided one must have the default."""
    # Only strided convolutions with a kernel above 1 pad differently.
    counts = Counter(
        node.padding
        for node in nodes(network)
        if isinstance(node, ir.Conv)
        and node.kernel > 1
        and (node.stride > 1 or node.padding == "valid")
    )
    if not counts:  # nothing strided: any rule gives the same, say the spec's
        counts = Counter(n.padding for n in nodes(network) if isinstance(n, ir.Conv))
    default = counts.most_common(1)[0][0] if counts else None
    # Block templates emit their convolutions with the module's rule: only
    # stem and head layers may name another.
    own = set(from_graph)
    for block in network.blocks:
        if block.kind in own:
            continue
        for layer in block.layers():
            strided = (
                isinstance(layer, ir.Conv) and layer.stride > 1 and layer.kernel > 1
            )
            if strided and layer.padding != default:
                raise SpecError(
                    f"{backend} backend: {block.name}.{layer.name} pads "
                    f"{layer.padding!r}, the network's blocks {default!r}: only "
                    "stem and head layers may have a padding rule of their own"
                )
    return Paddings(default, tuple(sorted(counts)))


def cell_wiring(network: ir.Network, backend: str) -> tuple[bool, set[str]]:
    """Whether the network is a stack of cells (every block reads the two
    outputs before it: NASNet), and the stages after whose last block the
    next reads that block's own `prev` (skip_reduction). Backends thread
    (x, prev) from cell to cell; a wiring they cannot is an error."""
    blocks = network.blocks
    reading = [getattr(b, "prev", None) is not None for b in blocks]
    if not any(reading):
        return False, set()
    if not all(reading):
        raise SpecError(
            f"{backend} backend: a network of cells (blocks reading prev) and "
            "other blocks is not supported yet"
        )
    skip: set[str] = set()
    source = prev = network.stem[-1].name  # what x and prev hold
    for s, stage in enumerate(network.stages):
        for b, block in enumerate(stage.blocks):
            if block.prev != prev:
                raise SpecError(
                    f"{backend} backend: {block.name} reads {block.prev} as prev; "
                    f"cells read the output two back ({prev})"
                )
            nxt = (
                network.stages[s + 1].blocks[0]
                if b == len(stage.blocks) - 1 and s + 1 < len(network.stages)
                else None
            )
            if nxt is not None and nxt.prev == block.prev and block.prev != source:
                skip.add(stage.name)  # hands its own prev on
            else:
                prev = source
            source = block.name
    return True, skip


@dataclass(frozen=True)
class Feature:
    """One stage group's output, as the generated models list it
    (`feature_info`): the stage that ends the group, its channels, and its
    reduction (input size / map size)."""

    stage: int
    channels: int
    reduction: int


def features(network: ir.Network) -> list[Feature]:
    """The last stage at each reduction, in order: the multi-scale maps of a
    detection or segmentation backbone (timm's `feature_info`)."""
    reduction = math.prod(getattr(layer, "stride", 1) for layer in network.stem)
    ends: dict[int, Feature] = {}
    for i, stage in enumerate(network.stages):
        reduction *= math.prod(block.stride for block in stage.blocks)
        ends[reduction] = Feature(i, stage.blocks[-1].out_channels, reduction)
    return list(ends.values())


class Code(str):
    """Source text passed through `call` unquoted (a name, an expression)."""


class _BytecodeCache(jinja2.FileSystemBytecodeCache):
    """Jinja's per-user cache of compiled templates, keyed by their source's
    checksum: compiling the templates is a tenth of a compile's time. A cache
    that cannot be written is skipped, never an error."""

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with contextlib.suppress(OSError):
            super().dump_bytecode(bucket)


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    try:
        # The default folder is private to the user (jinja checks its owner
        # and mode), so no one else can plant compiled code in it.
        return _BytecodeCache()
    except (OSError, RuntimeError):
        return None


def environment(templates: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates),
        bytecode_cache=_bytecode_cache(),
        undefined=jinja2.StrictUndefined,  # a missing value fails the build, not the model
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["literal"] = literal
    env.filters["tuple"] = tuple
    env.globals["call"] = call
    env.globals["Code"] = Code
    return env


@dataclass(frozen=True)
class Provenance:
    """The facts a generated header records (never a timestamp)."""

    version: str
    spec: str
    variant: str  # as the command line selects it: "--variant resnet50", "--phi 2.5"
    rule: str
    width: str
    depth: str
    resolution: int
    dropout: str
    params: str
    flops: str

    @classmethod
    def of(cls, network: ir.Network) -> Provenance:
        s = network.source
        return cls(
            version=__version__,
            spec=s.spec,
            variant=selector(s),
            rule=RULES[s.rule],
            width=f"{s.width:.6g}",
            depth=f"{s.depth:.6g}",
            resolution=s.resolution,
            dropout=f"{s.dropout:g}",
            params=f"{analysis.params(network):,}",
            flops=f"{analysis.flops(network) / 1e9:.3f}",
        )


def selector(source: ir.Source) -> str:
    """The command-line options that select this variant again."""
    if source.rule == "formula":
        return f"--phi {source.phi:g} --formula"
    if not source.listed:
        return f"--width {source.width:g} --resolution {source.resolution}"
    return f"--variant {source.variant}"


RULES = {
    "compound": "published coefficients",
    "formula": "compound-scaling formula",
    "table": "variant table",
    "width": "width multiplier",
}
