"""`archspec draw`: one variant's architecture as a picture, after the
EfficientNet paper's drawings of B0: the input, the stem, one box per stage
(block kind, kernel, expansion, channels, repeats, stride) with the feature
map it produces beside it, and the head. Box widths grow with the channels.

Everything comes from the IR (archspec.ir), so any spec, any block kind and
any variant can be drawn; kinds without a description of their own show
their name and channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from . import analysis, ir
from .errors import SpecError
from .plot import STYLE, pyplot

COLORS = {
    "input": "#f2f2f2",
    "stem": "#d9d9d9",
    "head": "#d9d9d9",
    "mbconv": "#cfe2f3",
    "basic": "#fce5cd",
    "bottleneck": "#f9cb9c",
}
OTHER_KIND = "#d9ead3"
# Layout, in inches.
WIDTH = 7.6
BOX_HEIGHT = 0.56
GAP = 0.24
NARROWEST, WIDEST = 2.6, 4.2
CENTER = 3.5


@dataclass(frozen=True)
class Box:
    name: str  # beside the box, left: "stage 3"
    kind: str  # colour
    text: str  # first line inside: the operation
    detail: str  # second line inside
    shape: str  # beside the box, right: the feature map it produces
    channels: int


def _times(k: int) -> str:
    return f"{k}\u00d7{k}"


def _shape(size: int, channels: int) -> str:
    return f"{size}\u00d7{size}\u00d7{channels}"


def _layer(layer: ir.Layer) -> str:
    if isinstance(layer, ir.Conv):
        text = f"Conv{_times(layer.kernel)}, {layer.out_channels}"
        return text + (f", /{layer.stride}" if layer.stride > 1 else "")
    if isinstance(layer, ir.Pool):
        op = "MaxPool" if layer.op == "max" else "AvgPool"
        return f"{op}{_times(layer.kernel)}" + (
            f", /{layer.stride}" if layer.stride > 1 else ""
        )
    if isinstance(layer, ir.GlobalPool):
        return f"global {layer.op} pool"
    if isinstance(layer, ir.Dense):
        return f"FC {layer.out_features}"
    if isinstance(layer, ir.Dropout):
        return f"dropout {layer.rate:g}"
    if isinstance(layer, ir.NormAct):
        return "BN" + (f" + {layer.activation}" if layer.activation else "")
    return layer.kind


def describe_block(blocks: tuple[ir.Block, ...]) -> str:
    """The operation of a stage's blocks, as the papers name it."""
    first, last = blocks[0], blocks[-1]
    se = ", SE" if getattr(first, "squeeze_channels", 0) else ""
    if first.kind == "mbconv":
        # The ratio of a block that keeps its width (rounding moves the first).
        ratio = round(last.expanded_channels / last.in_channels)
        return f"MBConv{ratio}, {_times(first.kernel)}{se}"
    if first.kind == "basic":
        return f"Basic, 3\u00d73 + 3\u00d73{se}"
    if first.kind == "bottleneck":
        expansion = first.out_channels / first.width_channels
        groups = f", groups {first.groups}" if first.groups > 1 else ""
        return (
            f"Bottleneck, 1\u00d71-3\u00d73-1\u00d71, expansion {expansion:g}"
            f"{groups}{se}"
        )
    kernel = getattr(first, "kernel", None)
    return first.kind + (f", {_times(kernel)}" if kernel else "") + se


def boxes(network: ir.Network) -> list[Box]:
    res, channels = network.input.resolution, network.input.channels
    found = [Box("input", "input", "image", "", _shape(res, channels), channels)]
    stem_out = next(
        (layer for layer in reversed(network.stem) if hasattr(layer, "out_size")),
        None,
    )
    if network.stem:
        stem_channels = max(
            getattr(layer, "out_channels", getattr(layer, "channels", 0))
            for layer in network.stem
        )
        found.append(
            Box(
                "stem",
                "stem",
                " \u2192 ".join(_layer(layer) for layer in network.stem),
                "",
                _shape(stem_out.out_size, stem_channels) if stem_out else "",
                stem_channels,
            )
        )
    for i, stage in enumerate(network.stages, start=1):
        first, last = stage.blocks[0], stage.blocks[-1]
        repeats = len(stage.blocks)
        detail = f"\u00d7{repeats}, {last.out_channels} channels"
        if first.stride > 1:
            detail += f", first /{first.stride}"
        elif last.stride > 1:  # Keras's ResNetV2 strides on a stack's last block
            detail += f", last /{last.stride}"
        found.append(
            Box(
                f"stage {i}",
                first.kind,
                describe_block(stage.blocks),
                detail,
                _shape(last.out_size, last.out_channels),
                last.out_channels,
            )
        )
    head = [layer for layer in network.head if not isinstance(layer, ir.Dropout)]
    classifier = network.classifier
    classes = (
        classifier.out_features
        if isinstance(classifier, ir.Dense)
        else classifier.out_channels
    )
    head_channels = max(
        (layer.out_channels for layer in head if isinstance(layer, ir.Conv)),
        default=network.blocks[-1].out_channels if network.blocks else channels,
    )
    found.append(
        Box(
            "head",
            "head",
            " \u2192 ".join(_layer(layer) for layer in head),
            f"dropout {network.dropout:g}" if network.dropout else "",
            f"{classes} classes",
            head_channels,
        )
    )
    return found


def figure(network: ir.Network) -> Any:
    plt = pyplot()
    drawn = boxes(network)
    height = 0.75 + len(drawn) * (BOX_HEIGHT + GAP)
    widest = max(b.channels for b in drawn)
    narrowest = min(b.channels for b in drawn)
    span = math.log(widest / narrowest) if widest > narrowest else 1.0
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(WIDTH, height))
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(0, WIDTH)
        ax.set_ylim(0, height)
        ax.axis("off")
        params, flops = analysis.params(network), analysis.flops(network)
        ax.text(
            WIDTH / 2,
            height - 0.3,
            f"{network.title}: {params / 1e6:.1f}M parameters, "
            f"{flops / 1e9:.2f}B FLOPs at {_times(network.input.resolution)}",
            ha="center",
            va="center",
            fontsize=10,
            fontweight="bold",
        )
        top = height - 0.6
        for i, box in enumerate(drawn):
            w = (
                NARROWEST
                + (WIDEST - NARROWEST) * math.log(box.channels / narrowest) / span
            )
            y = top - BOX_HEIGHT
            ax.add_patch(
                plt.matplotlib.patches.FancyBboxPatch(
                    (CENTER - w / 2, y),
                    w,
                    BOX_HEIGHT,
                    boxstyle="round,pad=0,rounding_size=0.06",
                    facecolor=COLORS.get(box.kind, OTHER_KIND),
                    edgecolor="#404040",
                    linewidth=0.8,
                )
            )
            lines = [box.text, box.detail] if box.detail else [box.text]
            ax.text(
                CENTER,
                y + BOX_HEIGHT / 2,
                "\n".join(lines),
                ha="center",
                va="center",
                fontsize=8,
                linespacing=1.4,
            )
            ax.text(0.15, y + BOX_HEIGHT / 2, box.name, va="center", fontsize=8)
            ax.text(
                CENTER + WIDEST / 2 + 0.15,
                y + BOX_HEIGHT / 2,
                box.shape,
                va="center",
                fontsize=8,
                color="#404040",
            )
            if i + 1 < len(drawn):
                ax.annotate(
                    "",
                    xy=(CENTER, y - GAP),
                    xytext=(CENTER, y),
                    arrowprops={"arrowstyle": "->", "color": "#404040", "lw": 0.8},
                )
            top = y - GAP
    return fig


# One block as its graph ---------------------------------------------------
#
# `archspec draw --block KIND`: the first block of a kind as the dataflow
# graph it is, after the NASNet paper's Figure 4 (the normal and reduction
# cells): the block's inputs at the top, one node per IR node, arrows from
# each input to its readers, the output at the bottom. The layout is a small
# layered ("Sugiyama") drawing: each node sits one row below the lowest of
# its inputs (its longest path from the inputs), an edge that spans rows
# runs through a point on each row it crosses, each row's order is chosen to
# cross few edges, and nodes move towards the nodes they connect to as far
# as their neighbours on the row let them. No randomness: the same block
# gives the same picture.

CELL_COLORS = {
    "input": "#f2f2f2",
    "conv": "#cfe2f3",
    "pool": "#fce5cd",
    "add": "#fff2cc",
    "concat": "#d9ead3",
}
CELL_OTHER = "#ead1dc"
INPUT_LABELS = {
    ir.BLOCK_INPUT: r"$h_i$ (x)",
    ir.BLOCK_PREV: r"$h_{i-1}$ (prev)",
}
OUTPUT_LABEL = r"$h_{i+1}$ (output)"
# The output's name in a layout: no node's name (those are identifiers).
OUTPUT = "(output)"
# Layout, in inches.
ROW = 0.78  # row to row
NODE_HEIGHT = 0.34
ROUND = 0.34  # the diameter of a "+" node
CHAR = 0.068  # the width of a character of an 8-point label, about
NODE_GAP = 0.2  # between two nodes on a row
PASS_GAP = 0.12  # between an edge passing a row and its neighbours
MARGIN = 0.3
TITLE = 0.75  # the title's band at the top


@dataclass(frozen=True)
class CellNode:
    name: str  # the IR node's name; "x", "prev" or OUTPUT; an edge's point
    label: str  # "" for the point of an edge that passes a row
    color: str
    round: bool  # a circle ("+"), not a box
    row: int  # 0: the block's inputs
    x: float  # the centre
    y: float
    width: float
    height: float

    @property
    def passing(self) -> bool:
        return not self.label


@dataclass(frozen=True)
class CellEdge:
    source: str
    target: str
    points: tuple[tuple[float, float], ...]  # from the source to the target


@dataclass(frozen=True)
class CellLayout:
    nodes: dict[str, CellNode]  # every node, and the points of long edges
    edges: tuple[CellEdge, ...]  # one per (input, reader) pair, and to OUTPUT
    width: float
    height: float


def find_block(network: ir.Network, kind: str) -> ir.Block:
    """The network's first block of `kind`; failing that its first call of
    that op (NASNet's `sep_conv`), as a block."""
    from .structure import calls

    for block in network.blocks:
        if block.kind == kind:
            return block
    called = calls(network.blocks)
    for block in called:
        if block.kind == kind:
            return block
    kinds = list(dict.fromkeys(b.kind for b in [*network.blocks, *called]))
    raise SpecError(
        f"--block {kind}: {network.title} has no block of that kind; "
        f"its kinds: {', '.join(kinds) or 'none'}"
    )


def _stride(layer: ir.Layer) -> str:
    stride = getattr(layer, "stride", 1)
    in_size, out_size = getattr(layer, "in_size", 0), getattr(layer, "out_size", 0)
    if stride == 1 and out_size and out_size < in_size:  # a call's inner stride
        stride = in_size // out_size
    return f" /{stride}" if stride > 1 else ""


def node_label(layer: ir.Layer) -> tuple[str, str, bool]:
    """(label, colour key, round) of one node: "sep 5x5 /2", "max 3x3", "+"."""
    if isinstance(layer, ir.Call):
        convs = [node for node in layer.graph_ if isinstance(node, ir.Conv)]
        grouped = next((conv for conv in convs if conv.groups > 1), None)
        kernels = {conv.kernel for conv in convs}
        op = layer.op
        if grouped is not None:
            kernel = grouped.kernel
            op = op.removesuffix("_conv")  # sep_conv: "sep", as the paper
        else:
            kernel = kernels.pop() if len(kernels) == 1 else None
        text = op.replace("_", " ") + (f" {_times(kernel)}" if kernel else "")
        return text + _stride(layer), "conv", False
    if isinstance(layer, ir.Conv):
        op = "dw" if layer.depthwise else "conv"
        return f"{op} {_times(layer.kernel)}{_stride(layer)}", "conv", False
    if isinstance(layer, ir.Pool):
        return f"{layer.op} {_times(layer.kernel)}{_stride(layer)}", "pool", False
    if isinstance(layer, ir.Add):
        return "+", "add", True
    if isinstance(layer, ir.Multiply):
        return "\u00d7", "add", True
    if isinstance(layer, ir.Concat):
        return "concat", "concat", False
    if isinstance(layer, ir.SqueezeExcite):
        return "SE", "other", False
    if isinstance(layer, ir.Act):
        return layer.activation, "other", False
    if isinstance(layer, ir.Pad):
        return "pad", "other", False
    return _layer(layer).replace("_", " "), "other", False


def _text_width(label: str) -> float:
    # Mathtext's markup takes no room: "$h_{i-1}$" reads "hi-1".
    plain = label.translate({ord(c): None for c in "${}_"})
    return len(plain) * CHAR


def _crossings(upper: list[str], lower: list[str], succ: dict) -> int:
    at = {name: i for i, name in enumerate(lower)}
    edges = [(i, at[t]) for i, s in enumerate(upper) for t in succ[s]]
    return sum(
        1
        for n, (a, b) in enumerate(edges)
        for c, d in edges[n + 1 :]
        if (a - c) * (b - d) < 0
    )


def _order(rows: list[list[str]], pred: dict, succ: dict) -> list[list[str]]:
    """Each row's order: barycentre sweeps down and up, keeping the order
    that crosses fewest edges (the first found of equals)."""

    def total(order):
        return sum(_crossings(a, b, succ) for a, b in pairwise(order))

    def sweep(order, rows_range, neighbours, other):
        order = [list(row) for row in order]
        for r in rows_range:
            at = {name: i for i, name in enumerate(order[other(r)])}
            keys = {}
            for i, name in enumerate(order[r]):
                near = [at[n] for n in neighbours[name]]
                keys[name] = sum(near) / len(near) if near else i
            order[r].sort(key=lambda name: keys[name])  # stable
        return order

    best = [list(row) for row in rows]
    best_total = total(best)
    current = best
    last = len(rows) - 1
    for _ in range(8):
        for rows_range, neighbours, other in (
            (range(1, last + 1), pred, lambda r: r - 1),
            (range(last - 1, -1, -1), succ, lambda r: r + 1),
        ):
            current = _transpose(sweep(current, rows_range, neighbours, other), succ)
            found = total(current)
            if found < best_total:
                best, best_total = current, found
    return best


def _transpose(order: list[list[str]], succ: dict) -> list[list[str]]:
    """Swap neighbours on a row while that crosses fewer edges."""
    order = [list(row) for row in order]

    def around(r):
        above = _crossings(order[r - 1], order[r], succ) if r else 0
        below = _crossings(order[r], order[r + 1], succ) if r + 1 < len(order) else 0
        return above + below

    better = True
    while better:
        better = False
        for r, names in enumerate(order):
            for i in range(len(names) - 1):
                before = around(r)
                names[i], names[i + 1] = names[i + 1], names[i]
                if around(r) < before:
                    better = True
                else:
                    names[i], names[i + 1] = names[i + 1], names[i]
    return order


def _project(desired: list[float], gaps: list[float]) -> list[float]:
    """The positions nearest `desired` (least squares) that keep the row's
    order with at least `gaps[i]` between centres i and i + 1: isotonic
    regression (pool adjacent violators) on the positions less the gaps."""
    offsets = [0.0]
    for gap in gaps:
        offsets.append(offsets[-1] + gap)
    pools: list[list[float]] = []  # [sum, count]
    for want, offset in zip(desired, offsets, strict=True):
        pools.append([want - offset, 1])
        while len(pools) > 1 and (
            pools[-2][0] / pools[-2][1] > pools[-1][0] / pools[-1][1]
        ):
            total, count = pools.pop()
            pools[-1][0] += total
            pools[-1][1] += count
    placed = []
    for total, count in pools:
        placed += [total / count] * int(count)
    return [y + offset for y, offset in zip(placed, offsets, strict=True)]


def cell_layout(block: ir.Block, title: str = "") -> CellLayout:
    """Where each node of the block's graph goes, and the path of each edge
    (the picture wide enough for `title`, in bold 10 points, too)."""
    from .structure import explicit

    nodes = explicit(block)
    inputs = {n.name: list(dict.fromkeys(n.inputs)) for n in nodes}
    used = {i for names in inputs.values() for i in names}
    terminals = [t for t in (ir.BLOCK_INPUT, ir.BLOCK_PREV) if t in used]
    labels: dict[str, tuple[str, str, bool]] = {
        t: (INPUT_LABELS[t], "input", False) for t in terminals
    }
    for node in nodes:
        labels[node.name] = node_label(node.layer)
    labels[OUTPUT] = (OUTPUT_LABEL, "input", False)
    inputs[OUTPUT] = [nodes[-1].name]

    # Rows: the longest path from the inputs; the output on a row of its own.
    row = {t: 0 for t in terminals}
    for node in nodes:
        row[node.name] = 1 + max(row[i] for i in inputs[node.name])
    row[OUTPUT] = 1 + max(row[n.name] for n in nodes)

    # Edges, with a point on every row that a long one passes.
    pred: dict[str, list[str]] = {name: [] for name in row}
    succ: dict[str, list[str]] = {name: [] for name in row}
    routes: list[tuple[str, str, list[str]]] = []
    for target in [*(n.name for n in nodes), OUTPUT]:
        for source in inputs[target]:
            chain = [source]
            for r in range(row[source] + 1, row[target]):
                point = f"{source}->{target}@{r}"
                row[point] = r
                pred[point], succ[point] = [], []
                chain.append(point)
            chain.append(target)
            for a, b in pairwise(chain):
                succ[a].append(b)
                pred[b].append(a)
            routes.append((source, target, chain))

    # Each row in the graph's order first (points after their source), then
    # barycentre sweeps.
    rank = {name: i for i, name in enumerate([*terminals, *(n.name for n in nodes)])}
    rank[OUTPUT] = len(rank)
    rows: list[list[str]] = [[] for _ in range(row[OUTPUT] + 1)]
    for name in sorted(row, key=lambda n: (rank.get(n.split("->")[0], 0), n)):
        rows[row[name]].append(name)
    rows = _order(rows, pred, succ)

    def width(name: str) -> float:
        if name not in labels:
            return 0.0
        text, _, is_round = labels[name]
        return ROUND if is_round else max(0.5, _text_width(text) + 0.3)

    def gap(a: str, b: str) -> float:
        between = NODE_GAP if a in labels and b in labels else PASS_GAP
        return (width(a) + width(b)) / 2 + between

    # Positions: packed left to right, then each row drawn towards its
    # neighbours below (going up) and above (going down), in turn.
    x: dict[str, float] = {}
    for names in rows:
        at = 0.0
        for i, name in enumerate(names):
            at += gap(names[i - 1], name) if i else 0.0
            x[name] = at
    for _ in range(12):
        for sweep, near in (
            (range(len(rows) - 2, -1, -1), succ),
            (range(1, len(rows)), pred),  # last: each node under its inputs
        ):
            for r in sweep:
                names = rows[r]
                desired = [
                    sum(x[n] for n in near[name]) / len(near[name])
                    if near[name]
                    else x[name]
                    for name in names
                ]
                gaps = [gap(a, b) for a, b in pairwise(names)]
                for name, placed in zip(names, _project(desired, gaps), strict=True):
                    x[name] = placed
    left = min(x[n] - width(n) / 2 for n in x)
    right = max(x[n] + width(n) / 2 for n in x)
    title_width = _text_width(title) * 1.45  # bold 10 points: wider than 8
    fig_width = max(right - left + 2 * MARGIN, title_width + 2 * MARGIN, 4.0)
    shift = (fig_width - (right - left)) / 2 - left
    height = TITLE + MARGIN + (len(rows) - 1) * ROW + NODE_HEIGHT

    placed: dict[str, CellNode] = {}
    for name, r in row.items():
        text, color, is_round = labels.get(name, ("", "", False))
        placed[name] = CellNode(
            name,
            text,
            CELL_COLORS.get(color, CELL_OTHER) if text else "",
            is_round,
            r,
            round(x[name] + shift, 4),
            round(height - TITLE - NODE_HEIGHT / 2 - r * ROW, 4),
            width(name),
            (ROUND if is_round else NODE_HEIGHT) if text else 0.0,
        )
    edges = tuple(
        CellEdge(
            source, target, _route([placed[name] for name in chain], succ, pred, placed)
        )
        for source, target, chain in routes
    )
    return CellLayout(placed, edges, round(fig_width, 4), round(height, 4))


def _port(node: CellNode, toward: str, ends: list[str], placed, below: bool):
    """Where an edge leaves (below) or enters (above) a node: the edges of a
    node spread along its side in the order of the nodes at their other end."""
    if node.passing:
        return (node.x, node.y)
    ends = sorted(ends, key=lambda n: (placed[n].x, n))
    spread = min(0.16 * (len(ends) - 1), node.width * (0.5 if node.round else 0.7))
    dx = (ends.index(toward) / (len(ends) - 1) - 0.5) * spread if len(ends) > 1 else 0.0
    if node.round:
        dy = math.sqrt(max((node.width / 2) ** 2 - dx**2, 0.0))
    else:
        dy = node.height / 2
    return (node.x + dx, node.y - dy if below else node.y + dy)


def _route(
    chain: list[CellNode], succ, pred, placed
) -> tuple[tuple[float, float], ...]:
    start, end = chain[0], chain[-1]
    first = _port(start, chain[1].name, succ[start.name], placed, below=True)
    last = _port(end, chain[-2].name, pred[end.name], placed, below=False)
    middle = [(node.x, node.y) for node in chain[1:-1]]
    return tuple((round(a, 4), round(b, 4)) for a, b in [first, *middle, last])


def cell_figure(network: ir.Network, block: ir.Block) -> Any:
    """The block's graph, as the NASNet paper draws its cells (Figure 4)."""
    plt = pyplot()
    patches = plt.matplotlib.patches
    path = plt.matplotlib.path.Path
    heading = f"{network.title}: {block.kind} ({block.name})"
    size = f"{_times(block.in_size)} \u2192 {_times(block.out_size)}"
    detail = f"{block.in_channels} \u2192 {block.out_channels} channels, {size}"
    layout = cell_layout(block, heading)
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(layout.width, layout.height))
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(0, layout.width)
        ax.set_ylim(0, layout.height)
        ax.axis("off")
        ax.text(
            layout.width / 2,
            layout.height - 0.25,
            heading,
            ha="center",
            va="center",
            fontsize=10,
            fontweight="bold",
        )
        ax.text(
            layout.width / 2,
            layout.height - 0.48,
            detail,
            ha="center",
            va="center",
            fontsize=8,
            color="#404040",
        )
        for edge in layout.edges:
            verts = [edge.points[0]]
            for (x0, y0), (x1, y1) in pairwise(edge.points):
                bend = (y0 - y1) / 2
                verts += [(x0, y0 - bend), (x1, y1 + bend), (x1, y1)]
            codes = [path.MOVETO] + [path.CURVE4] * (len(verts) - 1)
            ax.add_patch(
                patches.FancyArrowPatch(
                    path=path(verts, codes),
                    arrowstyle="-|>,head_length=0.5,head_width=0.22",
                    mutation_scale=10,
                    color="#404040",
                    linewidth=0.8,
                    shrinkA=0,
                    shrinkB=0,
                )
            )
        for node in layout.nodes.values():
            if node.passing:
                continue
            if node.round:
                shape = patches.Circle((node.x, node.y), node.width / 2)
            else:
                shape = patches.FancyBboxPatch(
                    (node.x - node.width / 2, node.y - node.height / 2),
                    node.width,
                    node.height,
                    boxstyle="round,pad=0,rounding_size=0.06",
                )
            shape.set(facecolor=node.color, edgecolor="#404040", linewidth=0.8)
            ax.add_patch(shape)
            ax.text(
                node.x,
                node.y,
                node.label,
                ha="center",
                va="center_baseline",
                fontsize=11 if node.round else 8,
            )
    return fig
