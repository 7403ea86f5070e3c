"""`archspec plot`: families against each other, as the EfficientNet paper's
Figure 1 (accuracy against FLOPs), on any pair of parameters, FLOPs, published
accuracy and measured latency (from `archspec profile --json`).

matplotlib is an optional extra (`pip install 'archspec[plot]'`), imported only
when a figure is drawn. Figures are deterministic: SVG ids come from a fixed
salt, text stays text (searchable, and no font outlines), and no date is
written, so a checked-in figure changes only when its content does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import analysis, ir, scaling
from .errors import SpecError
from .expand import expand

LABELS = {
    "flops": "FLOPs (billions of multiply-adds)",
    "params": "parameters (millions)",
    "latency": "latency per batch (ms)",
    "accuracy": "ImageNet top-1 accuracy (%, published)",
}
SCALE = {"flops": 1e-9, "params": 1e-6, "latency": 1.0, "accuracy": 1.0}
FORMATS = (".svg", ".png")
STYLE = {
    "svg.hashsalt": "archspec",  # fixed ids: the same figure gives the same file
    "svg.fonttype": "none",  # text as <text>, not glyph outlines
    "font.size": 9,
}


def pyplot() -> Any:
    """matplotlib.pyplot on a file-only backend, or a clear error naming the extra."""
    try:
        import matplotlib
    except ImportError:
        raise SpecError(
            "drawing figures needs matplotlib, which is not installed; "
            "install the `plot` extra: pip install 'archspec[plot]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def check_output(path: str) -> Path:
    out = Path(path)
    if out.suffix.lower() not in FORMATS:
        raise SpecError(
            f"-o {path}: expected a file ending in .svg or .png, found {out.suffix or 'no suffix'!r}"
        )
    return out


def save(figure: Any, path: Path) -> None:
    """Write the figure atomically (nothing half-written on failure)."""
    import io

    from .output import WriteError, write_all

    if path.suffix.lower() == ".png":
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=150, metadata={"Software": None})
    else:
        buffer = io.StringIO()
        with pyplot().rc_context(STYLE):
            figure.savefig(buffer, format="svg", metadata={"Date": None})
    pyplot().close(figure)
    try:
        write_all({path: buffer.getvalue()})
    except WriteError as exc:
        raise SpecError(str(exc)) from None


@dataclass(frozen=True)
class Point:
    variant: str
    params: int
    flops: int
    accuracy: float | None = None
    latency: float | None = None

    def value(self, metric: str) -> float | None:
        raw = getattr(self, metric)
        return None if raw is None else raw * SCALE[metric]


@dataclass(frozen=True)
class Family:
    spec: str
    title: str
    points: tuple[Point, ...]


def load_profiles(paths: list[str]) -> list[dict]:
    profiles = []
    for path in paths:
        try:
            document = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise SpecError(
                f"--profile {path}: cannot read it as JSON ({exc})"
            ) from None
        if not (
            isinstance(document, dict)
            and document.get("format") == "archspec.profile/1"
        ):
            raise SpecError(
                f"--profile {path}: expected the JSON that `archspec profile --json` "
                "writes (format archspec.profile/1)"
            )
        profiles.append(document)
    return profiles


def _latencies(spec: str, profiles: list[dict]) -> dict[str, float]:
    """Measured latency (ms) per variant, from the profiles of this spec."""
    found: dict[str, float] = {}
    for document in profiles:
        measured = Path(document["spec"])
        # Paths are as given to `profile`: relative ones may be from elsewhere.
        same = measured.resolve() == Path(spec).resolve() or (
            not measured.exists() and measured.name == Path(spec).name
        )
        if not same:
            continue
        for row in document["variants"]:
            if row.get("status") == "ok" and row.get("latency_ms"):
                found[row["variant"]] = row["latency_ms"]
    return found


def family(spec: str, loaded: Any, profiles: list[dict]) -> Family:
    """Every variant a spec names (or the one network of an expanded file)."""
    latencies = _latencies(spec, profiles)
    if isinstance(loaded, ir.Network):
        networks = [(loaded, None)]
        title = loaded.title
    else:
        title = loaded.spec.title or loaded.spec.class_name
        networks = [(expand(loaded, v), v.top1) for v in scaling.named(loaded).values()]
    points = tuple(
        Point(
            variant=net.source.variant,
            params=analysis.params(net),
            flops=analysis.flops(net),
            accuracy=top1,
            latency=latencies.get(net.source.variant),
        )
        for net, top1 in networks
    )
    return Family(spec, title, points)


def figure(families: list[Family], x: str, y: str) -> tuple[Any, list[str]]:
    """The figure, and a note for each family or variant left out (no value)."""
    plt = pyplot()
    notes: list[str] = []
    titles = [f.title for f in families]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 5.5))
        for axis, metric in (("x", x), ("y", y)):
            if metric != "accuracy":
                getattr(ax, f"set_{axis}scale")("log")
        plotted = 0
        labels: list[tuple[str, float, float, str]] = []
        for fam in families:
            points = [p for p in fam.points if None not in (p.value(x), p.value(y))]
            missing = [p.variant for p in fam.points if p not in points]
            label = fam.title
            if titles.count(fam.title) > 1:
                label += f" ({Path(fam.spec).name})"
            if not points:
                notes.append(f"{fam.spec}: left out, no variant has {_needs(x, y)}")
                continue
            if missing:
                notes.append(
                    f"{fam.spec}: {', '.join(missing)} left out (this plot needs "
                    f"{_needs(x, y)})"
                )
            points.sort(key=lambda p: (p.value(x), p.value(y)))
            xs = [p.value(x) for p in points]
            ys = [p.value(y) for p in points]
            (line,) = ax.plot(xs, ys, marker="o", markersize=4, label=label)
            labels += [
                (p.variant, px, py, line.get_color())
                for p, px, py in zip(points, xs, ys, strict=True)
            ]
            plotted += len(points)
        if not plotted:
            plt.close(fig)
            raise SpecError(
                f"nothing to plot: no variant of the given specs has {_needs(x, y)}"
            )
        from matplotlib.ticker import FuncFormatter

        _place_labels(ax, labels)
        for axis, metric in (("x", x), ("y", y)):
            if metric != "accuracy":
                # 0.5, 2, 10 rather than 10^-1 on a log axis.
                getattr(ax, f"{axis}axis").set_major_formatter(
                    FuncFormatter(lambda v, _: f"{v:g}")
                )
        ax.set_xlabel(LABELS[x])
        ax.set_ylabel(LABELS[y])
        ax.set_title(f"{_short(y)} against {_short(x)}")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="best")
        fig.tight_layout()
    return fig, notes


# Where a point's label may go, in points from the point, tried in order.
OFFSETS = (
    (4, 4, "left"),
    (4, -10, "left"),
    (-4, 4, "right"),
    (-4, -10, "right"),
    (4, 12, "left"),
    (4, -18, "left"),
    (-4, 12, "right"),
    (-4, -18, "right"),
)


def _place_labels(ax: Any, labels: list[tuple[str, float, float, str]]) -> None:
    """Label every point, each where it overlaps no label placed before it
    (first free offset; the first one if none is free)."""
    ax.autoscale_view()
    scale = ax.figure.dpi / 72  # points to pixels
    placed: list[tuple[float, float, float, float]] = []
    for text, x, y, color in labels:
        px, py = ax.transData.transform((x, y))
        width, height = 0.62 * 7 * len(text) * scale, 9 * scale
        choice = OFFSETS[0]
        for offset in OFFSETS:
            dx, dy, align = offset
            left = px + dx * scale - (width if align == "right" else 0)
            box = (left, py + dy * scale, left + width, py + dy * scale + height)
            if not any(_overlap(box, other) for other in placed):
                choice = offset
                break
        dx, dy, align = choice
        left = px + dx * scale - (width if align == "right" else 0)
        placed.append((left, py + dy * scale, left + width, py + dy * scale + height))
        ax.annotate(
            text,
            (x, y),
            textcoords="offset points",
            xytext=(dx, dy),
            ha=align,
            fontsize=7,
            color=color,
        )


def _overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _needs(x: str, y: str) -> str:
    words = {
        "accuracy": "a published top1",
        "latency": "a measured latency (--profile)",
    }
    wanted = [words[m] for m in dict.fromkeys((x, y)) if m in words]
    return " and ".join(wanted) or "values"


def _short(metric: str) -> str:
    return {
        "flops": "FLOPs",
        "params": "parameters",
        "latency": "latency",
        "accuracy": "ImageNet top-1",
    }[metric]
