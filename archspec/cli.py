"""The `archspec` command line.

Exit codes: 0 success, 1 a check failed (stale output, parity over
tolerance), 2 bad input (the message names file:line:column). No traceback
unless --debug.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from . import __version__, ir
from .errors import Diagnostics, SpecError

EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3


class CheckFailed(Exception):
    """A check ran and failed: exit 1 (the command printed why)."""


def parse_phis(text: str) -> list[float]:
    """'3' -> [3]; '0-7' -> [0, ..., 7]; '0,3,5' -> [0, 3, 5]; '2.5' -> [2.5]."""
    phis: list[float] = []
    try:
        for part in text.split(","):
            low, dash, high = part.strip().partition("-")
            if dash and low:
                first, last = int(low), int(high)
                if last < first or last - first > 64:
                    raise ValueError
                phis += range(first, last + 1)
            else:
                value = float(part)
                phis.append(int(value) if value.is_integer() else value)
    except ValueError:
        raise SpecError(
            f"--phi: expected a number (3, 2.5), a range (0-7) or a list (0,3,5); found {text!r}"
        ) from None
    return phis


def _load(path: str, diagnostics: Diagnostics):
    from .pipeline import load_spec

    loaded = load_spec(path, diagnostics)
    for warning in diagnostics.warnings:
        click.echo(warning.render(diagnostics.sources), err=True)
    return loaded


def _networks(
    path: str,
    variant: str | None = None,
    phi: str | None = None,
    formula: bool = False,
    width: float | None = None,
    resolution: int | None = None,
    size: int | None = None,
):
    """(the loaded spec, the networks of the variants the options select);
    `size` replaces each variant's input resolution (profile --size)."""
    from . import ir
    from .expand import expand
    from .pipeline import select

    loaded = _load(path, Diagnostics())
    if isinstance(loaded, ir.Network):
        given = [
            flag
            for flag, value in (
                ("--variant", variant),
                ("--phi", phi),
                ("--width", width),
                ("--resolution", resolution),
                ("--size", size),
            )
            if value is not None
        ]
        if given:
            raise SpecError(
                f"{given[0]}: {path} is an expanded network "
                f"({loaded.source.variant}); leave {given[0]} out"
            )
        return loaded, [loaded]
    phis = parse_phis(phi) if phi is not None else None
    chosen = select(
        loaded,
        variant=variant,
        phis=phis,
        formula=formula,
        width=width,
        resolution=resolution,
    )
    if size is not None:
        import dataclasses

        chosen = [dataclasses.replace(v, resolution=size) for v in chosen]
    return loaded, [expand(loaded, v) for v in chosen]


def _one_network(path: str, why: str, **options):
    """The single network of `path` the options select, for commands that take one."""
    _, networks = _networks(path, **options)
    if len(networks) != 1:
        raise SpecError(f"--variant: {why}; give a single variant")
    return networks[0]


def variant_options(func):
    """--variant, --phi, --formula, --width and --resolution: which variants."""
    for option in reversed(
        [
            click.option(
                "--variant",
                help="Variant name (b3, resnet50), a list (b0,b3), or all.",
            ),
            click.option(
                "--phi",
                help="Compound rules: scaling exponent 3, 2.5, a range 0-7 or a list 0,3,5.",
            ),
            click.option(
                "--formula",
                is_flag=True,
                help="With --phi: use alpha^phi, beta^phi, gamma^phi even where a "
                "published variant exists.",
            ),
            click.option(
                "--width",
                type=float,
                help="Width rules: any width multiplier (0.6).",
            ),
            click.option(
                "--resolution",
                type=click.IntRange(8, 4096),
                help="With --width: the input resolution.",
            ),
        ]
    ):
        func = option(func)
    return func


# What `archspec check` compares unless --backends says otherwise.
DEFAULT_PAIR = "torch,keras"


class BackendChoice(click.Choice):
    """The registered backends (archspec.backends.names()) as a choice, read
    when an option is parsed or its help shown, not when the CLI is imported
    (listing them scans the installed distributions' entry points), and read
    again each time: a backend registered in the process since counts."""

    def __init__(self) -> None:
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:
        from . import backends as registry

        return tuple(registry.names())

    @choices.setter
    def choices(self, value) -> None:  # Choice.__init__'s assignment
        pass


SPEC = click.argument("spec", type=click.Path(dir_okay=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="archspec")
@click.option("--debug", is_flag=True, help="Show tracebacks for internal errors.")
def cli(debug: bool) -> None:
    """Compile declarative CNN architecture specs into PyTorch, Keras and Flax code."""


@cli.command()
@SPEC
def validate(spec: str) -> None:
    """Check a spec (or an expanded network) and report every problem."""
    from . import ir

    diagnostics = Diagnostics()
    loaded = _load(spec, diagnostics)
    if isinstance(loaded, ir.Network):
        click.echo(f"{spec}: ok (expanded network {loaded.module})")
    else:
        from .errors import SpecError
        from .expand import expand as expand_variant
        from .scaling import named

        variants = named(loaded)
        # Build every named variant: what depends on the scaled widths (a
        # block's add of unequal shapes, a width that is not whole) shows only
        # there. Every variant's errors are reported together.
        found = Diagnostics(sources=diagnostics.sources)
        for variant in variants.values():
            try:
                expand_variant(loaded, variant)
            except SpecError as exc:
                for item in exc.diagnostics.items:
                    found.error(item.message, item.position, item.path)
        found.raise_if_errors()
        rows = len(next(iter(loaded.rows.values()), ()))
        listed = f"{len(variants)} variants: {', '.join(variants)}"
        if loaded.spec.scaling.rule == "compound" and not loaded.published:
            listed += " by the formula; any phi with --phi"
        click.echo(
            f"{spec}: ok ({loaded.spec.name}, {rows} stages, {loaded.spec.scaling.rule} "
            f"rule, {listed})"
        )


@cli.command()
@SPEC
@variant_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write here instead of stdout.",
)
def expand(spec: str, output: str | None, **selection) -> None:
    """Write the fully explicit network of one variant as YAML (valid input again)."""
    from .expanded import dump
    from .output import write_all

    text = dump(_one_network(spec, "expand writes one network", **selection))
    if output in (None, "-"):
        click.echo(text, nl=False)
    else:
        write_all({Path(output): text})
        click.echo(f"wrote {output}", err=True)


@cli.command()
@SPEC
@variant_options
def summary(spec: str, **selection) -> None:
    """Print depth, width, resolution, layers, parameters and FLOPs per variant
    (every variant of the spec unless options choose)."""
    from . import analysis

    _, networks = _networks(spec, **selection)
    compound = any(net.source.phi is not None for net in networks)
    base = analysis.flops(networks[0])
    first = networks[0].source.variant
    ratio = f"x{first}"
    # Columns as wide as their longest entry (mobilenet_v3_large_minimal_100).
    rows = [
        (net, " ".join(map(str, analysis.layers_per_stage(net)))) for net in networks
    ]
    v = max(17, *(len(net.source.variant) for net in networks))
    n = max(22, *(len(net.title) for net in networks))
    lw = max(24, *(len(layers) for _, layers in rows))
    rw = max(8, len(ratio))
    header = (
        f"{'variant':<{v}} {'name':<{n}} {'depth':>5} {'width':>5} {'res':>4}  "
        f"{'layers per stage':<{lw}} {'params':>11} {'FLOPs':>8} {ratio:>{rw}}"
        + (f" {'2^phi':>6}" if compound else "")
    )
    click.echo(header)
    click.echo("-" * len(header))
    for net, layers in rows:
        s = net.source
        flops = analysis.flops(net)
        doubling = (
            (f" {2**s.phi:>6.3g}" if s.phi is not None else f" {'-':>6}")
            if compound
            else ""
        )
        click.echo(
            f"{s.variant:<{v}} {net.title:<{n}} {s.depth:>5.3g} {s.width:>5.3g} "
            f"{s.resolution:>4}  {layers:<{lw}} {analysis.params(net):>11,} "
            f"{flops / 1e9:>7.3g}B {flops / base:>{rw}.2f}{doubling}"
        )


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the spec format (for editors)."""
    from .spec import Spec

    click.echo(json.dumps(Spec.model_json_schema(), indent=2))


@cli.command()
def backends() -> None:
    """List the available backends."""
    from . import backends as registry

    for name in registry.names():
        click.echo(f"{name:<8} {registry.get(name).description}")


@cli.command(name="compile")
@SPEC
@variant_options
@click.option(
    "-b", "--backend", default="torch", show_default=True, help="Code generator to use."
)
@click.option(
    "-o",
    "--output",
    help="Folder to write into (default generated/BACKEND/SPEC), a .py file for one variant, or - for stdout.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 1 with a diff if the files are stale.",
)
def compile_(
    spec: str,
    backend: str,
    output: str | None,
    check: bool,
    **selection,
) -> None:
    """Compile a spec into source code, one module per variant (all variants
    unless --variant, --phi or --width choose)."""
    from . import backends as registry
    from .output import WriteError, stale, write_all

    chosen = registry.get(backend)
    _, networks = _networks(spec, **selection)
    emitted: dict[str, str] = {}
    for net in networks:
        emitted.update(chosen.emit(net))
    if output == "-":
        click.echo("\n".join(emitted.values()), nl=False)
        return
    if output and output.endswith(".py"):
        if len(emitted) != 1:
            raise SpecError(
                f"-o {output}: {len(emitted)} files to write; give a folder"
            )
        files = {Path(output): next(iter(emitted.values()))}
    else:
        from .api import default_folder

        root = Path(output) if output else default_folder(chosen.name, spec)
        files = {root / name: text for name, text in emitted.items()}
    if check:
        diffs = stale(files)
        for diff in diffs.values():
            click.echo(diff)
        if diffs:
            names = ", ".join(map(str, diffs))
            click.echo(
                f"stale: {names}; run the same command without --check", err=True
            )
            raise CheckFailed
        click.echo(f"up to date: {len(files)} file(s)", err=True)
        return
    try:
        written = write_all(files)
    except WriteError as exc:
        done = ", ".join(map(str, exc.written)) or "none"
        raise SpecError(f"{exc} (files written before the failure: {done})") from None
    for path in files:
        click.echo(f"{'wrote' if path in written else 'unchanged'} {path}", err=True)


@cli.command()
@SPEC
@variant_options
@click.option(
    "--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "bfloat16"]),
    default="float32",
    show_default=True,
)
@click.option("--batch", type=click.IntRange(1, 1024), default=2, show_default=True)
@click.option(
    "--size",
    type=click.IntRange(16, 4096),
    help="Compare at this input size and the next odd one, instead of each "
    "variant's resolution (a quicker check of large variants).",
)
@click.option(
    "--modes",
    type=click.Choice(["first", "all", "none"]),
    default="first",
    show_default=True,
    help="Train-mode and input-gradient checks (float64, at the variant's "
    "resolution or 224 px, whichever is smaller) for the first variant only, "
    "for all, or for none (eval-mode outputs only).",
)
@click.option(
    "--backends",
    "pair",
    default=DEFAULT_PAIR,
    show_default=True,
    help="The two backends compared (the first is the reference): any two "
    "registered backends with a runtime adapter (torch,flax, keras,flax, ...).",
)
@click.option(
    "--corrupt",
    hidden=True,
    help="Swap the axes of one kernel in the second backend's weights, named "
    "by its layer (tests the checker).",
)
def check(
    spec: str,
    device: str,
    dtype: str,
    batch: int,
    modes: str,
    size: int | None,
    pair: str,
    corrupt: str | None,
    **selection,
) -> None:
    """Compile two backends, move weights between them and compare outputs.

    For each variant: logits and every stage boundary at the variant's
    resolution and at an odd size, then (see --modes) train-mode outputs with
    drop path and dropout off, and input gradients, both on float64 copies of
    the two models at most 224 px. Exit 1 over tolerance.
    """
    import tempfile

    from . import backends as registry
    from . import parity
    from .parity.sides import Sides

    names = _backend_pair(pair)
    _, networks = _networks(spec, **selection)
    parity.configure(device, keras="keras" in names)
    adapters = [registry.adapter(name) for name in names]
    without = [a.name for a in adapters if not a.float64_supported()]
    exact = dtype != "float32" or not without
    if not exact:
        click.echo(
            "training mode and input gradients: not compared (their float64 "
            f"comparison cannot run on {' and '.join(without)} here; Keras "
            "needs its TensorFlow backend)",
            err=True,
        )
    label = f"{dtype} on {device}"
    if ",".join(names) != DEFAULT_PAIR:  # name any other pair
        label = f"{names[0]} against {names[1]}, {label}"
    results: list[list[parity.Result]] = []
    with (
        tempfile.TemporaryDirectory(prefix="archspec-check-") as scratch,
        click.progressbar(
            networks,
            label=f"checking ({label})",
            file=sys.stderr,
            item_show_func=lambda n: n.title if n else "",
        ) as bar,
    ):
        for i, net in enumerate(bar):
            sides = Sides.build(
                net,
                names,
                Path(scratch),
                device=device,
                dtype=dtype,
                corrupt=parity.transpose_kernel(net, corrupt) if corrupt else None,
                size=size,
            )
            results.append(
                sides.check(
                    size or net.input.resolution,
                    batch=batch,
                    modes=exact and (modes == "all" or (modes == "first" and i == 0)),
                )
            )
            del sides
            parity.release()
    _report(results, label)


def _report(results, label: str) -> None:
    """Each variant's table, then one line per variant; exit 1 if any failed."""
    for found in results:
        _print_variant(found, label)
    click.echo(
        f"\n{'variant':<22} {'logits max rel (eval)':>30} {'train':>10} {'d/dx':>10}  result"
    )
    failed = False
    for found in results:
        evals = [r for r in found if r.mode == "eval"]
        extra = {r.mode: r for r in found if r.mode != "eval"}
        ok = all(r.ok for r in found)
        failed |= not ok
        cells = "  ".join(f"{r.size}: {r.logits.max_rel:.1e}" for r in evals)
        train = f"{extra['train'].logits.max_rel:.1e}" if "train" in extra else "-"
        grad = (
            f"{extra['input gradient'].logits.max_rel:.1e}"
            if "input gradient" in extra
            else "-"
        )
        status = (
            "ok"
            if ok
            else "FAIL: diverges at "
            + next(r.first_divergence for r in found if not r.ok)
        )
        click.echo(
            f"{found[0].network.title:<22} {cells:>30} {train:>10} {grad:>10}  {status}"
        )
    if failed:
        raise CheckFailed


def _backend_pair(text: str) -> tuple[str, str]:
    from . import backends as registry

    names = tuple(n.strip() for n in text.split(","))
    known = registry.names()
    if len(names) != 2 or names[0] == names[1] or not all(n in known for n in names):
        raise SpecError(
            f"--backends: expected two different backends of {', '.join(known)} "
            f"separated by a comma; found {text!r}"
        )
    return names  # type: ignore[return-value]


def _print_variant(found, label: str) -> None:
    net = found[0].network
    click.echo(f"\n{net.title} ({net.module}), {label}")
    heads = [f"{r.size}px {MODE_HEADS.get(r.mode, r.mode)}" for r in found]
    click.echo(f"  {'where':<20}" + "".join(f"  {head:>24}" for head in heads))
    click.echo(
        f"  {'':<20}" + "".join(f"  {'max abs':>11} {'max rel':>12}" for _ in found)
    )
    wheres = list(dict.fromkeys(row.where for r in found for row in r.rows))
    for where in wheres:
        cells = ""
        for r in found:
            row = next((c for c in r.rows if c.where == where), None)
            cells += (
                f"  {row.max_abs:>11.2e} {row.max_rel:>12.2e}" if row else f"  {'':>24}"
            )
        click.echo(f"  {where:<20}{cells}")
    # Each column's bound on its logits' relative error.
    click.echo(
        f"  {'tolerance':<20}"
        + "".join(f"  {'':>11} {r.tolerance:>12.2e}" for r in found)
    )


# Input gradients are taken through float64 copies of both models.
MODE_HEADS = {"input gradient": "d/dx (float64)"}


@cli.command(name="profile")
@SPEC
@variant_options
@click.option(
    "-b",
    "--backend",
    type=BackendChoice(),
    default="torch",
    show_default=True,
)
@click.option(
    "--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "bfloat16", "float16"]),
    default="float32",
    show_default=True,
)
@click.option("--batch", type=click.IntRange(1, 1 << 16), default=1, show_default=True)
@click.option(
    "--size",
    type=click.IntRange(16, 4096),
    help="Measure at this input size instead of each variant's resolution.",
)
@click.option("--warmup", type=click.IntRange(0, 1000), default=3, show_default=True)
@click.option(
    "--repeats",
    type=click.IntRange(1, 10000),
    default=10,
    show_default=True,
    help="Timed runs; the latency is their median.",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 1024),
    help="CPU threads for the framework (default: its own choice).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    help="Write the results as JSON.",
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False),
    help="Write the results as CSV.",
)
@click.option(
    "--markdown",
    "markdown_path",
    type=click.Path(dir_okay=False),
    help="Write the table as Markdown.",
)
def profile_(
    spec: str,
    backend: str,
    device: str,
    dtype: str,
    batch: int,
    size: int | None,
    warmup: int,
    repeats: int,
    threads: int | None,
    json_path: str | None,
    csv_path: str | None,
    markdown_path: str | None,
    **selection,
) -> None:
    """Measure each variant on this machine: latency per batch (median of the
    timed runs after warm-up, with min-max), images/s and peak memory."""
    from . import backends as registry
    from . import profile
    from .output import WriteError, write_all

    registry.adapter(backend)  # what measures it: the backend's runtime adapter
    _, networks = _networks(spec, size=size, **selection)
    settings = profile.Settings(backend, device, dtype, batch, warmup, repeats, threads)
    rows = []
    with click.progressbar(
        profile.run(networks, settings),
        length=len(networks),
        label=f"profiling ({backend}, {dtype} on {device}, batch {batch})",
        file=sys.stderr,
    ) as bar:
        for row in bar:
            rows.append(row)
    click.echo(profile.table(rows))
    files = {}
    if json_path:
        document = profile.report(spec, settings, rows)
        files[Path(json_path)] = json.dumps(document, indent=2) + "\n"
    if csv_path:
        files[Path(csv_path)] = profile.csv_text(rows)
    if markdown_path:
        files[Path(markdown_path)] = profile.markdown(rows)
    try:
        write_all(files)
    except WriteError as exc:
        raise SpecError(str(exc)) from None
    for path in files:
        click.echo(f"wrote {path}", err=True)


@cli.command(name="plot")
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--x",
    "x",
    type=click.Choice(["flops", "params", "latency"]),
    default="flops",
    show_default=True,
)
@click.option(
    "--y",
    "y",
    type=click.Choice(["accuracy", "params", "flops", "latency"]),
    default="accuracy",
    show_default=True,
)
@click.option(
    "--profile",
    "profiles",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="JSON written by `archspec profile --json` (for latency); repeatable.",
)
@click.option("-o", "--output", required=True, help="The figure: FILE.svg or FILE.png.")
def plot_(
    specs: tuple[str, ...], x: str, y: str, profiles: tuple[str, ...], output: str
) -> None:
    """Compare families in one figure: every variant a labelled point (log axes
    for parameters, FLOPs and latency; accuracy is each spec's published top1)."""
    from . import plot

    out = plot.check_output(output)
    if x == y:
        raise SpecError(f"--x and --y are both {x}; choose two different quantities")
    measured = plot.load_profiles(list(profiles))
    families = [
        plot.family(spec, _load(spec, Diagnostics()), measured) for spec in specs
    ]
    figure, notes = plot.figure(families, x, y)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    plot.save(figure, out)
    click.echo(f"wrote {out}", err=True)


@cli.command(name="draw")
@SPEC
@variant_options
@click.option(
    "-o", "--output", required=True, help="The picture: FILE.svg or FILE.png."
)
@click.option(
    "--block",
    "block",
    metavar="KIND",
    help="Draw the graph of the variant's first block of this kind "
    "(normal_cell, reduction_cell, bottleneck, ...) instead of the network.",
)
def draw_(spec: str, output: str, block: str | None, **selection) -> None:
    """Draw one variant's architecture: stem, one box per stage (block kind,
    kernel, expansion, channels, repeats, feature-map size) and head; or,
    with --block, one block's graph (as the NASNet paper draws its cells)."""
    from . import draw, plot

    out = plot.check_output(output)
    net = _one_network(spec, "draw shows one network", **selection)
    if block is None:
        figure = draw.figure(net)
    else:
        figure = draw.cell_figure(net, draw.find_block(net, block))
    plot.save(figure, out)
    click.echo(f"wrote {out}", err=True)


def _batch(text: str) -> int | None:
    if text == "dynamic":
        return None
    if text.isdigit() and 1 <= int(text) <= 1024:
        return int(text)
    raise click.BadParameter(
        f"expected a batch size 1-1024 or `dynamic`, found {text!r}"
    )


@cli.command(name="export")
@SPEC
@variant_options
@click.option(
    "--weights",
    "weights_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="The generated model's weights: a PyTorch state dict (.pt, .safetensors), "
    "a Keras .weights.h5 or a Flax .safetensors (told apart by its metadata).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "tflite", "saved_model", "torch_export"]),
    required=True,
)
@click.option(
    "--int8",
    is_flag=True,
    help="TFLite only: full-integer quantisation (int8 ops, input and output).",
)
@click.option(
    "--calibration",
    help="With --int8: an ImageFolder directory (CLASS/IMAGE) or `digits`.",
)
@click.option(
    "--batch",
    default="1",
    show_default=True,
    help="The exported batch size, or `dynamic` (any; checked at 1 and 3).",
)
@click.option(
    "--size", type=click.IntRange(16, 4096), help="Input size (default: the variant's)."
)
@click.option(
    "-o",
    "--output",
    "output_path",
    required=True,
    type=click.Path(),
    help="The file (or SavedModel folder) to write.",
)
def export_(
    spec: str,
    weights_path: str,
    fmt: str,
    int8: bool,
    calibration: str | None,
    batch: str,
    size: int | None,
    output_path: str,
    **selection,
) -> None:
    """Export a generated model with its weights and run the file in its runtime.

    ONNX and torch.export from the PyTorch model; SavedModel and TFLite from the
    Keras model (NHWC: no TRANSPOSE ops). The exported file answers a fixed
    batch like the model it came from, or exit 1 and nothing is written:
    float formats within a max relative error of 1e-4 (or eight times what a
    one-ulp change of the input does to the model, if more), int8 TFLite
    keeping the top-1 class of 90% of held-out calibration images.

    Example: archspec export specs/mobilenet_v2.yaml --variant mobilenet_v2_100 --weights mnv2.safetensors --format tflite -o mnv2.tflite
    """
    from . import export

    net = _one_network(spec, "an exported file holds one variant", **selection)
    result = export.export(
        net,
        Path(weights_path),
        fmt,
        Path(output_path),
        batch=_batch(batch),
        size=size,
        int8=int8,
        calibration=calibration,
    )
    runtimes = {
        "onnx": "onnxruntime",
        "torch_export": "torch.export.load",
        "saved_model": "tf.saved_model.load",
        "tflite": "the LiteRT interpreter",
    }
    batches = " and ".join(map(str, result.batches))
    click.echo(
        f"{net.title} as {fmt}{' int8' if int8 else ''}, run in {runtimes[fmt]} "
        f"at batch {batches}: logits max rel error {result.error:.1e}"
        + (f" (bound {result.bound:.0e})" if result.bound is not None else "")
    )
    if result.agreement is not None:
        click.echo(
            f"top-1 kept on {result.held_out} held-out calibration images: "
            f"{result.agreement:.1%} (bound {export.INT8_AGREEMENT:.0%})"
        )
    if fmt == "tflite":
        ops = ", ".join(f"{k} {v}" for k, v in sorted(result.ops.items()))
        click.echo(f"ops: {ops}; TRANSPOSE {result.ops.get('TRANSPOSE', 0)}")
    if not result.ok:
        click.echo(f"not written: {output_path} is outside the bound", err=True)
        if result.bound == export.MAX_BOUND:
            click.echo(
                "the model itself is that sensitive to float32 rounding (random "
                "weights at a small --size?): export it at a larger --size or "
                "with trained weights",
                err=True,
            )
        raise CheckFailed
    click.echo(f"wrote {output_path}", err=True)


@cli.command(name="search")
@SPEC
@click.option(
    "--variant",
    help="The base network the compound rule scales (phi 0; default: the spec's).",
)
@click.option(
    "--data",
    required=True,
    help="An ImageFolder directory (CLASS/IMAGE) or `digits` (scikit-learn's).",
)
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="The folder for search.yaml, report.md, search.svg and trials.jsonl.",
)
@click.option(
    "--grid-step", type=click.FloatRange(0.005, 1.0), default=0.05, show_default=True
)
@click.option(
    "--flops",
    type=click.FloatRange(1.05, 16.0),
    default=2.0,
    show_default=True,
    help="The FLOPs target of phi = 1, as a multiple of the base's.",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(0.001, 0.5),
    default=0.05,
    show_default=True,
    help="Relative: candidates within flops * (1 +- tolerance).",
)
@click.option("--epochs", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--batch", type=click.IntRange(2, 4096), default=64, show_default=True)
@click.option(
    "--size",
    type=click.IntRange(8, 4096),
    help="The base network's training size; each candidate trains at size * gamma "
    "(default: 32 for digits, else the base's resolution).",
)
@click.option("--seeds", type=click.IntRange(1, 100), default=1, show_default=True)
@click.option(
    "--objective",
    type=click.Choice(["accuracy", "mnas"]),
    default="accuracy",
    show_default=True,
    help="mnas: accuracy * (latency / target)^-0.07 (MNASNet).",
)
@click.option(
    "--latency-target",
    type=click.FloatRange(min=0, min_open=True),
    help="With --objective mnas: the target CPU latency, in ms.",
)
@click.option("--ray", "ray_address", help="A running Ray cluster: auto or ADDRESS.")
@click.option("--resume", is_flag=True, help="Continue the search in the -o folder.")
def search_(
    spec: str,
    variant: str | None,
    data: str,
    out: str,
    grid_step: float,
    flops: float,
    tolerance: float,
    epochs: int,
    batch: int,
    size: int | None,
    seeds: int,
    objective: str,
    latency_target: float | None,
    ray_address: str | None,
    resume: bool,
) -> None:
    """Find a compound rule's alpha, beta, gamma by EfficientNet's grid search.

    Every (alpha, beta, gamma) on the grid whose phi = 1 network has --flops
    times the base's FLOPs (archspec's count, within --tolerance) is trained
    from scratch, with the one-dimension baselines and the base, as trials on
    Ray (started here unless --ray names a cluster). Writes OUT/search.yaml
    (a spec with the found rule), report.md, search.svg and trials.jsonl.

    Example: archspec search specs/b0.yaml --variant b0 --data digits -o b0-search
    """
    from . import search

    settings = search.Settings(
        spec=spec,
        variant=variant,
        data=data,
        out=Path(out),
        grid_step=grid_step,
        flops=flops,
        tolerance=tolerance,
        epochs=epochs,
        batch=batch,
        size=size or (32 if data == "digits" else None),
        seeds=seeds,
        objective=objective,
        latency_target=latency_target,
        ray=ray_address,
        resume=resume,
    )
    try:
        written = search.run(settings, lambda text: click.echo(text, err=True))
    except search.Interrupted as exc:
        if str(exc):
            click.echo(str(exc), err=True)
        raise CheckFailed from None
    click.echo(f"wrote {written} (report.md, search.svg, trials.jsonl beside it)")


@cli.group()
def weights() -> None:
    """Move trained weights between the generated models (PyTorch, Keras, Flax)."""


def spec_option(help: str):
    return click.option(
        "--spec", "spec", required=True, type=click.Path(dir_okay=False), help=help
    )


@weights.command()
@spec_option("The spec the models were compiled from.")
@variant_options
@click.option("--from", "source", type=BackendChoice(), required=True)
@click.argument("input_path", type=click.Path(dir_okay=False, exists=True))
@click.option("--to", "target", type=BackendChoice(), required=True)
@click.argument("output_path", type=click.Path(dir_okay=False))
def convert(
    spec: str,
    source: str,
    input_path: str,
    target: str,
    output_path: str,
    **selection,
) -> None:
    """Convert INPUT_PATH (a torch state dict, .pt or .safetensors; Keras
    .weights.h5; Flax .safetensors, keyed by nnx.state's paths) to
    OUTPUT_PATH (a torch state dict is written as safetensors when its name
    ends in .safetensors).

    Example: archspec weights convert --spec specs/b0.yaml --variant b3 --from torch b3.pt --to keras b3.weights.h5
    """
    from .convert import convert_weights

    net = _one_network(spec, "weights belong to one variant", **selection)
    if source == target:
        raise SpecError(f"--from and --to are both {source}; nothing to convert")
    count = convert_weights(net, source, Path(input_path), target, Path(output_path))
    click.echo(f"wrote {output_path}: {count} tensors of {net.title}", err=True)


@weights.command(name="import")
@spec_option("The spec whose generated model takes the weights.")
@variant_options
@click.option(
    "--from",
    "reference",
    type=click.Choice(["torchvision", "timm", "keras.applications"]),
    required=True,
    help="The implementation that wrote INPUT_PATH.",
)
@click.argument("input_path", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "-b",
    "--backend",
    type=BackendChoice(),
    default="torch",
    show_default=True,
    help="The generated model the output is for.",
)
@click.option(
    "-o",
    "--output",
    "output_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="A state dict (torch: .safetensors, else torch.save's format), a "
    ".weights.h5 file (keras) or a .safetensors file (flax).",
)
def import_(
    spec: str,
    reference: str,
    input_path: str,
    backend: str,
    output_path: str,
    **selection,
) -> None:
    """Import a reference implementation's weights (INPUT_PATH) for a generated model.

    INPUT_PATH is what the reference writes: torch.save(model.state_dict()) or
    a .safetensors file (the model hubs' format) for torchvision and timm;
    for keras.applications, model.save_weights("x.weights.h5") or the legacy
    .h5 files weights="imagenet" downloads (matched by layer order, as Keras
    loads them). The output loads with
    model.load_state_dict(torch.load(OUT)) or model.load_weights(OUT)
    (Flax: archspec.runtime.set_flax_arrays(model,
    safetensors.numpy.load_file(OUT))).

    Example: archspec weights import --spec specs/resnet.yaml --variant resnet50 --from torchvision resnet50.pt -o resnet50.pt
    """
    from .convert import import_weights

    net = _one_network(spec, "weights belong to one variant", **selection)
    loaded = _load(spec, Diagnostics())
    schemes = {} if isinstance(loaded, ir.Network) else loaded.spec.references
    scheme = schemes.get(reference)
    if scheme is None:
        named = ", ".join(k for k, v in schemes.items() if v) or "none"
        raise SpecError(
            f"--from {reference}: {spec} names no {reference} counterpart in its "
            f"`references` (it names: {named})"
        )
    count = import_weights(
        net, reference, scheme, Path(input_path), backend, Path(output_path)
    )
    click.echo(
        f"wrote {output_path}: {count} tensors of {net.title} from {reference}",
        err=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    # Pydantic scans every installed distribution for plugins (observability
    # hooks) as its first model is built: ~20 ms of a compile, for nothing
    # archspec uses.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="archspec", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return EXIT_BAD_INPUT if exc.exit_code == 2 else exc.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return EXIT_BAD_INPUT
    except SpecError as exc:
        click.echo(exc.render(), err=True)
        return EXIT_BAD_INPUT
    except CheckFailed:
        return EXIT_CHECK_FAILED
    except Exception as exc:
        if debug:
            raise
        click.echo(
            f"archspec: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            err=True,
        )
        return EXIT_INTERNAL
    return 0


if __name__ == "__main__":
    sys.exit(main())
