"""`archspec profile`: the measured cost of each variant on this machine.

Each variant runs in a fresh Python process (`python -m archspec.profile`),
which compiles it in memory (archspec.runtime), builds it with random weights
and times it in eval mode on one batch: a few untimed warm-up runs, then
`repeats` timed runs; latency is their median (with min and max), throughput
the batch over the median. Peak memory is what the process needs above its
state before the model was built (model, input and the forward's
activations): on CPU the kernel's resettable RSS high-water mark (VmHWM), on
CUDA torch's allocator peak. One process per variant keeps each figure free of
the variants before it.

A variant that cannot fit is a row of the table, not the end of the run:
before building, an estimate from the IR (weights plus the largest
activations) is checked against the free memory; an allocation failure while
running, or the kernel's out-of-memory killer ending the process, is reported
the same way.

What runs is the backend's runtime adapter's (`configure`, `forward`,
`release`, `versions`, and on a GPU `free_memory`, `memory_start`,
`memory_peak`), so any registered backend with one can be profiled. Flax
models, for one, are built abstractly (nnx.eval_shape, no eager
initialisation) holding random weights drawn with NumPy
(archspec.weights.random_state), and the eval-mode forward is compiled ahead
of time (jax.jit(...).lower().compile()), so neither the initialisation nor
the compilation is timed; `threads` limits XLA's CPU thread pool by pinning
the child process to that many CPUs (XLA sizes its pool from the CPUs the
process may use).

The frameworks are imported only in the child processes, never by the
compiler.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import backends, ir
from .errors import SpecError

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Tensors alive at once around the largest layer in an eval forward: its input,
# its output and a residual kept for the add (measured peaks stay below this).
ACTIVATIONS_ALIVE = 3


@dataclass(frozen=True)
class Settings:
    backend: str = "torch"
    device: str = "cpu"
    dtype: str = "float32"
    batch: int = 1
    warmup: int = 3
    repeats: int = 10
    threads: int | None = None  # CPU threads; None: the framework's default


@dataclass
class Row:
    """One variant's measurement; `status` is "ok", "does not fit" or "out of memory"."""

    variant: str
    title: str
    resolution: int
    params: int
    flops: int
    batch: int
    status: str = "ok"
    message: str = ""
    latency_ms: float | None = None  # median per batch
    latency_min_ms: float | None = None
    latency_max_ms: float | None = None
    runs: int = 0
    images_per_s: float | None = None
    peak_memory_mib: float | None = None
    times_ms: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def estimate_bytes(network: ir.Network, batch: int, dtype: str) -> int:
    """A rough upper estimate of what one eval forward needs: the weights (twice:
    eval mode folds batch norm into a fresh copy) and the largest activations."""
    size = DTYPE_BYTES[dtype]
    weights = sum(w.params for w in network.weights()) * size * 2
    largest = network.input.channels * network.input.resolution**2
    layers = [*network.stem, *network.head]
    layers += [layer for block in network.blocks for layer in block.layers()]
    for layer in layers:
        if isinstance(layer, ir.Conv):
            largest = max(
                largest,
                layer.in_channels * layer.in_size**2,
                layer.out_channels * layer.out_size**2,
            )
    return weights + ACTIVATIONS_ALIVE * largest * batch * size


def free_bytes(device: str, backend: str = "torch") -> int | None:
    """Memory available to a new allocation (None where it cannot be read):
    on a GPU as the backend's runtime adapter sees it, else the system's."""
    if device == "cuda":
        return backends.adapter(backend).free_memory(device)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _rss_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak memory above the state at `start()`: on a GPU, what the backend's
    runtime adapter measures (torch's allocator; None for the others); on
    the CPU, the process's RSS."""

    def __init__(self, device: str, backend: str):
        self.device = device
        self.adapter = backends.adapter(backend)
        self.base = 0

    def start(self) -> None:
        gc.collect()
        if self.device == "cuda":
            self.base = self.adapter.memory_start(self.device) or 0
            return
        # Reset VmHWM (peak RSS) to the current RSS (Linux >= 4.0).
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
        self.base = _rss_kib("VmRSS") or 0

    def peak_mib(self) -> float | None:
        if self.device == "cuda":
            peak = self.adapter.memory_peak(self.device)
            return None if peak is None else (peak - self.base) / 2**20
        peak = _rss_kib("VmHWM")
        return None if peak is None else (peak - self.base) / 1024


def _out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = f"{type(exc).__name__} {exc}".lower()
    return any(
        marker in text
        for marker in ("out of memory", "not enough memory", "resourceexhausted")
    )


def configure(settings: Settings) -> None:
    """Check the device exists and pin the framework to it (its runtime
    adapter's `configure`)."""
    backends.adapter(settings.backend).configure(settings.device, settings.threads)


def _row(network: ir.Network, settings: Settings) -> Row:
    return Row(
        variant=network.source.variant,
        title=network.title,
        resolution=network.input.resolution,
        params=sum(w.params for w in network.weights()),
        flops=network.flops(),
        batch=settings.batch,
    )


def fits(network: ir.Network, settings: Settings) -> Row | None:
    """A "does not fit" row when the estimate exceeds the free memory, else None."""
    needed = estimate_bytes(network, settings.batch, settings.dtype)
    free = free_bytes(settings.device) if settings.device == "cpu" else None
    if free is None or needed <= free:
        return None
    row = _row(network, settings)
    row.status = "does not fit"
    row.message = (
        f"needs about {needed / 2**30:.1f} GiB at batch {settings.batch}, "
        f"{free / 2**30:.1f} GiB free on {settings.device}"
    )
    return row


def measure(network: ir.Network, settings: Settings, folder: Path) -> Row:
    """Build one variant in this process and time it (or say why it could not run)."""
    row = _row(network, settings)
    if settings.device == "cuda":
        needed = estimate_bytes(network, settings.batch, settings.dtype)
        free = free_bytes(settings.device, settings.backend)
        if free is not None and needed > free:
            row.status = "does not fit"
            row.message = (
                f"needs about {needed / 2**30:.1f} GiB at batch {settings.batch}, "
                f"{free / 2**30:.1f} GiB free on cuda"
            )
            return row
    memory = PeakMemory(settings.device, settings.backend)
    adapter = backends.adapter(settings.backend)
    forward = None
    try:
        memory.start()
        forward = adapter.forward(
            network,
            folder,
            device=settings.device,
            dtype=settings.dtype,
            batch=settings.batch,
        )
        for _ in range(settings.warmup):
            forward()
        times = []
        for _ in range(settings.repeats):
            start = time.perf_counter()
            forward()
            times.append(time.perf_counter() - start)
    except Exception as exc:
        if not _out_of_memory(exc):
            raise
        row.status = "out of memory"
        row.message = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        return row
    finally:
        del forward
        gc.collect()
        adapter.release(settings.device)
    median = statistics.median(times)
    row.runs = len(times)
    row.times_ms = [t * 1e3 for t in times]
    row.latency_ms = median * 1e3
    row.latency_min_ms = min(times) * 1e3
    row.latency_max_ms = max(times) * 1e3
    row.images_per_s = settings.batch / median
    row.peak_memory_mib = memory.peak_mib()
    return row


def run(networks: list[ir.Network], settings: Settings) -> Iterator[Row]:
    """Measure each network in a process of its own (a generator, for a
    progress display). A fresh process makes the peak memory of one variant
    independent of the ones before it, and a variant that the kernel's
    out-of-memory killer ends is a row, not the end of the run."""
    with tempfile.TemporaryDirectory(prefix="archspec-profile-") as scratch:
        for network in networks:
            yield fits(network, settings) or _in_child(network, settings, Path(scratch))


MACHINE: dict = {}  # filled by the first child: what the figures were measured on


def _in_child(network: ir.Network, settings: Settings, folder: Path) -> Row:
    from .expanded import dump

    path = folder / f"{network.module}.yaml"
    path.write_text(dump(network))
    env = dict(os.environ, PYDANTIC_DISABLE_PLUGINS="__all__")
    if settings.threads:
        n = str(settings.threads)
        env.update(
            OMP_NUM_THREADS=n, TF_NUM_INTRAOP_THREADS=n, TF_NUM_INTEROP_THREADS="1"
        )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "archspec.profile",
            str(path),
            json.dumps(asdict(settings)),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode == 0:
        found = json.loads(done.stdout.splitlines()[-1])
        MACHINE.update(found["machine"])
        return Row(**found["row"])
    if done.returncode == -signal.SIGKILL:
        row = _row(network, settings)
        row.status = "out of memory"
        row.message = "killed by the system (SIGKILL), most likely out of memory"
        return row
    lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
    if done.returncode == 2:  # a SpecError: bad input, such as a missing device
        raise SpecError(lines[-1].removeprefix("error: "))
    raise RuntimeError(f"profiling {network.source.variant} failed: {lines[-1]}")


def _child(path: str, settings_json: str) -> int:
    from .pipeline import load_spec

    settings = Settings(**json.loads(settings_json))
    network = load_spec(path)
    try:
        configure(settings)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="archspec-profile-") as scratch:
        row = measure(network, settings, Path(scratch))
    print(json.dumps({"row": asdict(row), "machine": machine(settings)}))
    return 0


def machine(settings: Settings) -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "python": platform.python_version(),
    }
    info.update(backends.adapter(settings.backend).versions(settings.device))
    return info


def report(spec: str, settings: Settings, rows: list[Row]) -> dict:
    """The JSON document `--json` writes."""
    return {
        "format": "archspec.profile/1",
        "spec": spec,
        "settings": asdict(settings),
        "machine": MACHINE,
        "variants": [asdict(row) for row in rows],
    }


CSV_FIELDS = (
    "variant",
    "title",
    "resolution",
    "params",
    "flops",
    "batch",
    "status",
    "images_per_s",
    "latency_ms",
    "latency_min_ms",
    "latency_max_ms",
    "runs",
    "peak_memory_mib",
    "message",
)


def csv_text(rows: list[Row]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(asdict(row))
    return out.getvalue()


def table(rows: list[Row]) -> str:
    """The table `archspec profile` prints."""
    header = (
        f"{'variant':<18} {'res':>4} {'params':>12} {'FLOPs':>8} {'images/s':>10} "
        f"{'latency ms (min-max)':>24} {'memory MiB':>11}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        start = (
            f"{r.variant:<18} {r.resolution:>4} {r.params:>12,} {r.flops / 1e9:>7.3g}B"
        )
        if not r.ok:
            lines.append(f"{start} {r.status.upper()}: {r.message}")
            continue
        spread = f"{r.latency_ms:.1f} ({r.latency_min_ms:.1f}-{r.latency_max_ms:.1f})"
        memory = "-" if r.peak_memory_mib is None else f"{r.peak_memory_mib:,.0f}"
        lines.append(f"{start} {r.images_per_s:>10.1f} {spread:>24} {memory:>11}")
    return "\n".join(lines)


def markdown(rows: list[Row]) -> str:
    """The table as Markdown (`--markdown`), for READMEs and reports."""
    lines = [
        "| variant | resolution | params | FLOPs | images/s | latency ms, median (min-max) | peak memory MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        start = f"| {r.variant} | {r.resolution} | {r.params / 1e6:.1f}M | {r.flops / 1e9:.2f}B |"
        if not r.ok:
            lines.append(f"{start} {r.status}: {r.message} | | |")
            continue
        memory = "-" if r.peak_memory_mib is None else f"{r.peak_memory_mib:,.0f}"
        lines.append(
            f"{start} {r.images_per_s:.1f} | {r.latency_ms:.1f} "
            f"({r.latency_min_ms:.1f}-{r.latency_max_ms:.1f}) | {memory} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(_child(*sys.argv[1:]))
