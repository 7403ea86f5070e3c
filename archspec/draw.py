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
from typing import Any

from . import analysis, ir
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
