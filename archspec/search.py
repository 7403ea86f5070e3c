"""`archspec search`: the first step of EfficientNet's compound scaling.

Tan & Le fix phi = 1 and grid-search depth alpha, width beta and resolution
gamma (each >= 1, alpha * beta^2 * gamma^2 ~ 2: twice the FLOPs) for the most
accurate scaled base network; the rule then scales by alpha^phi, beta^phi,
gamma^phi. Here every (alpha, beta, gamma) on the grid builds the phi = 1
network exactly as the spec's compound rule and rounding would, and the FLOPs
that archspec counts on it select the candidates: after channel rounding and
ceil'd layer counts, alpha * beta^2 * gamma^2 is only the FLOPs ratio's first
approximation (the report shows both). The one-dimension baselines at the
same FLOPs (depth only, width only, resolution only) test the paper's other
finding: scaling one dimension alone saturates.

Every candidate, baseline and the base network is trained from scratch with
one recipe (RECIPE) for each seed, one Ray Tune trial per network and seed.
Ray starts in-process unless `--ray` names a cluster; each trial asks for one
CPU and, on a cluster with GPUs, one GPU. trials.jsonl records each trial as
it ends (a failed one too), and Tune's own experiment state lets `--resume`
continue an interrupted search without running a finished trial again.

Layers: plan (compiler only: spec -> points and their exact FLOPs) -> trials
(Ray Tune; torch imported in the workers) -> rank -> write (search.yaml,
report.md, search.svg).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ir, scaling
from .errors import SpecError
from .expand import expand
from .validate import ValidSpec

EXTRA = "pip install 'archspec[search]'"
# The training recipe, for every network of a search alike. Short runs from
# scratch: AdamW with a one-cycle schedule (10% warm-up, cosine decay) is robust
# without tuning per network; label smoothing as EfficientNet's; augmentation
# that keeps a digit a digit (translation; flips only for folder data).
RECIPE = {
    "optimizer": "AdamW",
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "schedule": "one-cycle: 10% linear warm-up, cosine to 0",
    "label_smoothing": 0.1,
    "augmentation": "random translation up to 1/8 of the size (reflect padding); "
    "horizontal flip for folder data",
    "regularization": "the spec's dropout and drop path",
    "validation": "20% of the images, fixed split (seed 0)",
    "batch_norm": "statistics re-estimated on the training images before "
    "evaluation (precise BN)",
}
VALIDATION = 0.2
# MNASNet's soft latency constraint: accuracy * (latency / target)^w.
MNAS_W = -0.07
# Grid values are rounded to this many decimals (1.15, not 1.1500000000000001).
DECIMALS = 6


@dataclass(frozen=True)
class Settings:
    spec: str
    variant: str | None
    data: str
    out: Path
    grid_step: float = 0.05
    flops: float = 2.0
    tolerance: float = 0.05
    epochs: int = 10
    batch: int = 64
    size: int | None = None  # the base network's training size
    seeds: int = 1
    objective: str = "accuracy"
    latency_target: float | None = None
    ray: str | None = None
    resume: bool = False

    def recorded(self) -> dict[str, Any]:
        """What a resumed search must share with the one it continues."""
        keep = [
            "spec",
            "variant",
            "data",
            "grid_step",
            "flops",
            "tolerance",
            "epochs",
            "batch",
            "size",
            "seeds",
            "objective",
            "latency_target",
        ]
        return {k: getattr(self, k) for k in keep}


# -- plan: the networks, from the spec alone --------------------------------

KINDS = ("base", "candidate", "depth only", "width only", "resolution only")


@dataclass(frozen=True)
class Point:
    """One network of the search: the base scaled by (alpha, beta, gamma) at phi 1."""

    kind: str
    alpha: float
    beta: float
    gamma: float
    resolution: int  # native, as the compound rule rounds it
    params: int
    flops: int
    ratio: float  # FLOPs / FLOPs(base)
    within: bool  # ratio within the tolerance of the target

    @property
    def name(self) -> str:
        if self.kind == "base":
            return "base"
        return f"a{self.alpha:g}-b{self.beta:g}-g{self.gamma:g}"

    @property
    def product(self) -> float:
        return self.alpha * self.beta**2 * self.gamma**2


@dataclass
class Plan:
    valid: ValidSpec
    base: scaling.Variant
    points: list[Point]  # the base first, then candidates, then baselines
    checked: int  # grid points whose FLOPs were counted
    same: dict[str, list[str]] = field(default_factory=dict)  # name -> aliases

    def networks(self) -> dict[str, ir.Network]:
        return {
            p.name: network(self.valid, p.alpha, p.beta, p.gamma) for p in self.points
        }


def base_variant(valid: ValidSpec, name: str | None) -> scaling.Variant:
    """The network the compound rule scales (phi 0)."""
    s = valid.spec.scaling
    file = valid.document.file
    if s.rule != "compound":
        raise SpecError(
            f"archspec search: {file} scales by the {s.rule!r} rule; search finds "
            "the alpha, beta, gamma of a compound rule (`scaling: {rule: compound, "
            "alpha: 1, beta: 1, gamma: 1}` over the base network's stage table)"
        )
    named = scaling.named(valid)
    first = next(iter(named.values()))
    zero = next((v for v in named.values() if v.phi == 0), first)
    if name is None:
        return zero
    if name not in named:
        raise SpecError(
            f"--variant: {file} has no variant {name!r} (its variants: "
            f"{', '.join(named)})"
        )
    chosen = named[name]
    if chosen.phi != 0 or (chosen.width, chosen.depth) != (1.0, 1.0):
        raise SpecError(
            f"--variant {name}: the compound rule scales the base network (phi 0, "
            f"width 1, depth 1), which is {zero.name!r} in {file}, not {name!r} "
            f"(phi {chosen.phi:g})"
        )
    return chosen


def variant(
    valid: ValidSpec, alpha: float, beta: float, gamma: float
) -> scaling.Variant:
    """phi = 1 of a compound rule with these coefficients: what `formula`
    builds from a spec whose rule holds them (search.yaml's phi1)."""
    return dataclasses.replace(
        scaling.formula(valid, 1),
        depth=alpha,
        width=beta,
        resolution=math.floor(valid.spec.input.resolution * gamma + 0.5),
    )


def network(valid: ValidSpec, alpha: float, beta: float, gamma: float) -> ir.Network:
    if (alpha, beta, gamma) == (1.0, 1.0, 1.0):
        return expand(valid, scaling.formula(valid, 0))
    return expand(valid, variant(valid, alpha, beta, gamma))


def _values(step: float, top: float) -> list[float]:
    count = int((top - 1.0) / step + 1e-9)
    return [round(1.0 + k * step, DECIMALS) for k in range(count + 1)]


def plan(valid: ValidSpec, settings: Settings) -> Plan:
    """The base, the candidates within the FLOPs tolerance, and the three
    one-dimension baselines closest to the FLOPs target."""
    base = base_variant(valid, settings.variant)
    base_net = expand(valid, scaling.formula(valid, 0))
    base_flops = base_net.flops()
    target, tol, step = settings.flops, settings.tolerance, settings.grid_step
    low, high = target * (1 - tol), target * (1 + tol)
    counted: dict[tuple[float, float, float], tuple[int, int, int]] = {}
    seen: dict[str, Point] = {}  # network structure -> the first point with it
    same: dict[str, list[str]] = {}

    def count(a: float, b: float, g: float) -> tuple[int, int, int]:
        if (a, b, g) not in counted:
            net = network(valid, a, b, g)
            counted[(a, b, g)] = (
                net.flops(),
                sum(w.params for w in net.weights()),
                net.input.resolution,
            )
        return counted[(a, b, g)]

    def point(kind: str, a: float, b: float, g: float) -> Point:
        flops, params, resolution = count(a, b, g)
        ratio = flops / base_flops
        return Point(
            kind, a, b, g, resolution, params, flops, ratio, low <= ratio <= high
        )

    # Width and resolution act on FLOPs squared, depth linearly; the rounding
    # (layers ceil'd, channels to the divisor) moves a network's FLOPs from
    # alpha * beta^2 * gamma^2 by well under this factor.
    slack = 1.6
    alphas = _values(step, high * slack)
    squares = _values(step, math.sqrt(high * slack))
    candidates = []
    for a in alphas:
        for b in squares:
            for g in squares:
                if sum(v > 1.0 for v in (a, b, g)) < 2:
                    continue  # the base, or a one-dimension baseline
                if not low / slack <= a * b * b * g * g <= high * slack:
                    continue
                p = point("candidate", a, b, g)
                if not p.within:
                    continue
                # Rounding maps nearby coefficients to one network (ceil(1.1 x
                # 1) = ceil(1.2 x 1)): train it once.
                shape = _structure(network(valid, a, b, g))
                if shape in seen:
                    same.setdefault(seen[shape].name, []).append(p.name)
                    continue
                seen[shape] = p
                candidates.append(p)
    if not candidates:
        raise SpecError(
            f"--grid-step {step:g}: no (alpha, beta, gamma) on the grid scales "
            f"{valid.document.file}'s base network to {target:g}x its FLOPs within "
            f"--tolerance {tol:g} (checked {len(counted)} networks); try a finer "
            "--grid-step or a larger --tolerance"
        )
    baselines = []
    for kind, axis in (("depth only", 0), ("width only", 1), ("resolution only", 2)):
        best = None
        for v in _values(step, high * slack if axis == 0 else math.sqrt(high * slack)):
            if v == 1.0:
                continue
            coefficients = [1.0, 1.0, 1.0]
            coefficients[axis] = v
            p = point(kind, *coefficients)
            if best is None or abs(p.ratio - target) < abs(best.ratio - target):
                best = p
            if p.ratio > high:
                break
        if best is not None:
            baselines.append(best)
    zero = Point(
        "base",
        1.0,
        1.0,
        1.0,
        base_net.input.resolution,
        sum(w.params for w in base_net.weights()),
        base_flops,
        1.0,
        False,
    )
    candidates.sort(key=lambda p: (p.alpha, p.beta, p.gamma))
    return Plan(valid, base, [zero, *candidates, *baselines], len(counted), same)


def _structure(net: ir.Network) -> str:
    """The network without its name and provenance."""
    return json.dumps(
        [net.input.resolution]
        + [x.model_dump(mode="json") for x in (*net.stem, *net.stages, *net.head)]
    )


# -- trials ------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    point: Point
    seed: int

    @property
    def key(self) -> str:
        return f"{self.point.name}-s{self.seed}"


def trials(p: Plan, settings: Settings) -> list[Trial]:
    return [Trial(point, seed) for point in p.points for seed in range(settings.seeds)]


def train_size(settings: Settings, base_resolution: int, point: Point) -> int:
    """The candidate's resolution, relative to the base's training size."""
    size = settings.size or base_resolution
    return max(8, math.floor(size * point.gamma + 0.5))


def input_kind(net: ir.Network) -> dict[str, Any]:
    """How uint8 pixels become this model's input: raw 0-255 where the model
    preprocesses them itself, else the spec's mean and std (on 0-1), else 0-1."""
    if net.input.preprocess is not None:
        return {"scale": 1.0, "mean": None, "std": None}
    data = net.input.data
    if data is not None and data.mean is not None and data.std is not None:
        return {"scale": 1 / 255, "mean": list(data.mean), "std": list(data.std)}
    return {"scale": 1 / 255, "mean": None, "std": None}


def jobs(p: Plan, settings: Settings, classes: int) -> dict[str, dict[str, Any]]:
    """What each trial's worker needs: the generated PyTorch source (workers
    need torch, not the spec file) and the recipe's settings."""
    from . import backends

    nets = p.networks()
    failing = set(filter(None, os.environ.get("ARCHSPEC_SEARCH_FAIL", "").split(",")))
    out = {}
    for trial in trials(p, settings):
        net = nets[trial.point.name]
        ((_, source),) = backends.get("torch").emit(net).items()
        out[trial.key] = {
            "source": source,
            "class_name": net.class_name,
            "classes": classes,
            "size": train_size(settings, p.points[0].resolution, trial.point),
            "seed": trial.seed,
            "epochs": settings.epochs,
            "batch": settings.batch,
            "input": input_kind(net),
            # Fault injection for the failure-handling test: a trial named in
            # ARCHSPEC_SEARCH_FAIL raises instead of training.
            "fail": trial.key in failing,
        }
    return out


def train(job: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Train one network from scratch and measure its held-out top-1 (in a
    Ray worker: torch is imported here, not by the compiler)."""
    import torch
    import torch.nn.functional as F

    from .runtime import load_source

    if job["fail"]:
        raise RuntimeError("failure injected by ARCHSPEC_SEARCH_FAIL")
    start, started = time.perf_counter(), time.time()
    torch.set_num_threads(1)
    torch.manual_seed(job["seed"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    module = load_source(
        job["source"], f"_archspec_search_{len(sys.modules)}", "<search>"
    )
    model = getattr(module, job["class_name"])(num_classes=job["classes"])
    model = model.to(device)
    size, spec_input = job["size"], job["input"]

    def prepare(pixels: Any) -> Any:
        x = torch.from_numpy(pixels).to(device).permute(0, 3, 1, 2).float()
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        x = x * spec_input["scale"]
        if spec_input["mean"] is not None:
            mean = torch.tensor(spec_input["mean"], device=device).view(1, -1, 1, 1)
            std = torch.tensor(spec_input["std"], device=device).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x.contiguous()

    x_train, y_train = prepare(data["x_train"]), torch.from_numpy(data["y_train"])
    x_val, y_val = prepare(data["x_val"]), torch.from_numpy(data["y_val"])
    y_train, y_val = y_train.to(device), y_val.to(device)
    batch = min(job["batch"], len(x_train))
    steps_per_epoch = len(x_train) // batch
    steps = steps_per_epoch * job["epochs"]
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"]
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=RECIPE["lr"], total_steps=steps, pct_start=0.1
    )
    generator = torch.Generator().manual_seed(job["seed"])
    pad = max(1, size // 8)
    model.train()
    loss = torch.tensor(0.0)
    for step in range(steps):
        if step % steps_per_epoch == 0:
            order = torch.randperm(len(x_train), generator=generator)
        idx = order[(step % steps_per_epoch) * batch :][:batch]
        x = _augment(x_train[idx], pad, data["flip"], generator)
        loss = F.cross_entropy(
            model(x), y_train[idx], label_smoothing=RECIPE["label_smoothing"]
        )
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"diverged: the loss is {loss.item()} at step {step}"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    _precise_batch_norm(model, x_train)
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x_val), 256):
            correct += int(
                (model(x_val[i : i + 256]).argmax(1) == y_val[i : i + 256]).sum()
            )
    return {
        "accuracy": correct / len(x_val),
        "loss": float(loss.detach()),
        "steps": steps,
        "train_seconds": time.perf_counter() - start,
        "device": device,
        # Wall-clock span, to see which trials ran at once.
        "started": started,
        "ended": time.time(),
    }


def _precise_batch_norm(model: Any, x: Any) -> None:
    """Re-estimate every batch norm's statistics on the training images (equal
    weight per batch) and leave the model in eval mode. A short run from
    scratch leaves running averages far from the trained weights' statistics
    (momentum 0.01 keeps 51% of the initial ones after 66 steps): evaluated
    with them, a well-trained network scores at chance."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average
    # The whole model in training mode (as pycls's precise BN): blocks choose
    # batch statistics by their own mode, not their norms'.
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), 256):
            model(x[i : i + 256])
    model.eval()


def _augment(x: Any, pad: int, flip: bool, generator: Any) -> Any:
    """Random translation by up to `pad` pixels (reflect), and flips if asked."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    out = torch.stack(
        [
            padded[i, :, top : top + h, left : left + w]
            for i, (top, left) in enumerate(zip(dy, dx, strict=True))
        ]
    )
    if flip:
        flips = torch.rand(n, generator=generator) < 0.5
        out[flips] = out[flips].flip(-1)
    return out


def dataset(settings: Settings, sizes: list[int]) -> dict[str, Any]:
    """The images at the largest training size (each trial resizes to its
    own), split train/validation with a fixed seed."""
    import numpy as np

    from . import images

    found = images.load(settings.data, max(sizes), "--data")
    n = len(found.labels)
    order = np.random.default_rng(0).permutation(n)
    held = max(len(found.classes), int(n * VALIDATION))
    if n - held < settings.batch // 4 or held < 1:
        raise SpecError(
            f"--data {settings.data}: {n} images are too few to train and hold "
            f"out {VALIDATION:.0%} for validation"
        )
    val, train_idx = order[:held], order[held:]
    return {
        "x_train": found.pixels[train_idx],
        "y_train": found.labels[train_idx],
        "x_val": found.pixels[val],
        "y_val": found.labels[val],
        "classes": found.classes,
        # A flipped digit is another glyph; folder data are photographs.
        "flip": settings.data != "digits",
    }


def require() -> None:
    """Ray Tune, PyTorch and matplotlib installed, or exit 2 naming the extra
    (found, not imported: Ray reads its settings when imported)."""
    import importlib.util

    for module in ("ray", "torch", "matplotlib"):
        if importlib.util.find_spec(module) is None:
            raise SpecError(
                f"archspec search needs {module}, which is not installed: {EXTRA}"
            )


def _ray_trials(address: str | None) -> Any:
    """archspec.trials (which imports Ray), with Ray's environment set first."""
    token = os.environ.get(
        "RAY_AUTH_TOKEN_PATH", str(Path.home() / ".ray" / "auth_token")
    )
    has_token = bool(os.environ.get("RAY_AUTH_TOKEN")) or Path(token).is_file()
    if address and "RAY_AUTH_MODE" not in os.environ and has_token:
        # Ray 2.60 sends the token that `ray start` clusters require (from
        # ~/.ray/auth_token) for address "auto", but for an explicit address
        # only in token mode, which it reads as it is imported.
        os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from . import trials
    except ImportError as exc:
        raise SpecError(
            f"archspec search needs Ray Tune ({exc}), which is not installed: {EXTRA}"
        ) from None
    return trials


def recorded(path: Path) -> dict[str, dict]:
    """trials.jsonl: trial key -> its record (the last, if written twice)."""
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            out[record["trial"]] = record
    return out


def describe(record: dict) -> str:
    """One trial's record as a progress line."""
    what = record["trial"].rsplit("-s", 1)[0]
    head = f"{what} ({record['kind']}) seed {record['seed']}"
    if record["status"] != "ok":
        return f"{head}: failed: {record.get('error', '')}"
    return f"{head}: top-1 {record['accuracy']:.3f} in {record['train_seconds']:.0f} s"


# -- rank ----------------------------------------------------------------------


@dataclass
class Outcome:
    """A network's trials, seeds together."""

    point: Point
    accuracies: list[float]
    seconds: list[float]
    errors: list[str]
    latency_ms: float | None = None

    @property
    def ok(self) -> bool:
        return bool(self.accuracies)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.accuracies) if self.accuracies else None

    @property
    def spread(self) -> float | None:
        """Sample standard deviation over seeds (None for one seed)."""
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else None

    @property
    def status(self) -> str:
        if not self.errors:
            return "ok"
        runs = len(self.errors) + len(self.accuracies)
        return f"failed ({len(self.errors)} of {runs} seeds): {self.errors[0]}"

    def score(self, settings: Settings) -> float | None:
        if self.mean is None:
            return None
        if settings.objective == "mnas":
            return self.mean * (self.latency_ms / settings.latency_target) ** MNAS_W
        return self.mean


def outcomes(
    p: Plan, records: dict[str, dict], latencies: dict[str, float]
) -> list[Outcome]:
    found = []
    for point in p.points:
        mine = [
            r for r in records.values() if r["trial"].rsplit("-s", 1)[0] == point.name
        ]
        found.append(
            Outcome(
                point,
                [r["accuracy"] for r in mine if r["status"] == "ok"],
                [r["train_seconds"] for r in mine if r["status"] == "ok"],
                [r["error"] for r in mine if r["status"] != "ok"],
                latencies.get(point.name),
            )
        )
    return found


def ranked(found: list[Outcome], settings: Settings) -> list[Outcome]:
    """Best first by the objective; fewer FLOPs first among equals; failed last."""
    return sorted(
        found,
        key=lambda o: (
            o.score(settings) is None,
            -(o.score(settings) or 0.0),
            o.point.flops,
            o.point.name,
        ),
    )


# -- write -----------------------------------------------------------------------


def search_yaml(settings: Settings, valid: ValidSpec, winner: Point) -> str:
    """A spec that extends SPEC with the found coefficients."""
    base = os.path.relpath(Path(settings.spec).resolve(), settings.out.resolve())
    spec = valid.spec
    lines = [
        f"# The compound rule `archspec search` found for {Path(settings.spec).name}:",
        f"# the most {'accurate' if settings.objective == 'accuracy' else 'MNAS-objective'}"
        f" phi = 1 network at {settings.flops:g}x the base's FLOPs",
        f"# (FLOPs ratio {winner.ratio:.3f}; alpha * beta^2 * gamma^2 = {winner.product:.3f}).",
        "# Every candidate, the baselines and the recipe: report.md beside this file.",
        f"extends: {base}",
        "scaling:",
        "  rule: compound",
        f"  alpha: {winner.alpha:g}",
        f"  beta: {winner.beta:g}",
        f"  gamma: {winner.gamma:g}",
    ]
    if spec.scaling.published:
        lines += [
            "  # The base's hand-rounded variants were scaled by its own rule: this",
            "  # rule names phi 0-7 by the formula (phi0 ... phi7).",
            "  published: null",
        ]
    if spec.per_variant:
        lines += [
            "# The base's per-variant settings name its published variants.",
            "per_variant: []",
        ]
    return "\n".join(lines) + "\n"


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def report_md(
    settings: Settings, p: Plan, best: list[Outcome], data: dict[str, Any]
) -> str:
    mnas = settings.objective == "mnas"
    winner = next(o for o in best if o.point.kind == "candidate" and o.ok)
    spec_name = Path(settings.spec).name
    train_n, val_n = len(data["y_train"]), len(data["y_val"])
    lines = [
        f"# archspec search: {spec_name}",
        "",
        f"Base network `{p.base.name}` ({p.points[0].params:,} parameters, "
        f"{p.points[0].flops / 1e6:,.1f} MFLOPs at {p.points[0].resolution} px). "
        f"Grid step {settings.grid_step:g}; candidates: every (alpha, beta, gamma) "
        f">= 1 whose phi = 1 network has {settings.flops:g}x the base's FLOPs "
        f"within {settings.tolerance:.0%} (archspec's count; {p.checked} grid "
        f"networks counted, {sum(o.point.kind == 'candidate' for o in best)} "
        "trained).",
        "",
        f"**Found: alpha {winner.point.alpha:g}, beta {winner.point.beta:g}, "
        f"gamma {winner.point.gamma:g}** (top-1 {winner.mean:.3f}"
        + (f", score {winner.score(settings):.4f}" if mnas else "")
        + "): search.yaml.",
        "",
        f"Data: {data['source']}, {len(data['classes'])} classes, {train_n} training "
        f"and {val_n} validation images; the base trained at "
        f"{train_size(settings, p.points[0].resolution, p.points[0])} px, each "
        "network at that size times its gamma. "
        f"{settings.epochs} epochs, batch {settings.batch}, {settings.seeds} "
        f"seed{'s' if settings.seeds > 1 else ''} per network.",
        "",
        "| rank | network | kind | alpha | beta | gamma | FLOPs ratio | a·b²·g² | params "
        "| res | train px | top-1 | spread |"
        + (" latency ms | score |" if mnas else "")
        + " train s | status |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        + ("---:|---:|" if mnas else "")
        + "---:|---|",
    ]
    for rank, o in enumerate(best, 1):
        pt = o.point
        seconds = statistics.fmean(o.seconds) if o.seconds else None
        name = pt.name + (
            f" (= {', '.join(p.same[pt.name])})" if pt.name in p.same else ""
        )
        lines.append(
            f"| {rank if o.ok else '-'} | {name} | {pt.kind} | {pt.alpha:g} | "
            f"{pt.beta:g} | {pt.gamma:g} | {pt.ratio:.3f} | {pt.product:.3f} | "
            f"{pt.params:,} | {pt.resolution} | "
            f"{train_size(settings, p.points[0].resolution, pt)} | "
            f"{_number(o.mean, '.3f')} | {_number(o.spread, '.3f')} |"
            + (
                f" {_number(o.latency_ms, '.2f')} | {_number(o.score(settings), '.4f')} |"
                if mnas
                else ""
            )
            + f" {_number(seconds, '.0f')} | {o.status} |"
        )
    off = [
        o.point for o in best if o.point.kind.endswith("only") and not o.point.within
    ]
    lines += [
        "",
        "FLOPs ratio: the phi = 1 network's multiply-adds over the base's at their "
        "native resolutions, as `archspec summary` counts them; alpha * beta^2 * "
        "gamma^2 is that ratio before channels, layers and resolution are rounded. "
        "spread: the sample standard deviation over seeds. Networks that rounding "
        "makes identical are trained once (the others in parentheses).",
    ]
    if off:
        lines += [
            "",
            "Off the FLOPs target (the grid's closest): "
            + ", ".join(f"{pt.kind} {pt.ratio:.3f}" for pt in off)
            + ".",
        ]
    if mnas:
        lines += [
            "",
            f"Objective: MNASNet's accuracy * (latency / {settings.latency_target:g} "
            f"ms)^{MNAS_W:g}, latency of the phi = 1 network at its native size, "
            "batch 1, PyTorch on this machine's CPU, as `archspec profile` measures it.",
        ]
    lines += ["", "## Recipe", ""]
    lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in RECIPE.items()]
    lines += [
        f"- epochs {settings.epochs}, batch {settings.batch}, "
        + (f"seeds 0-{settings.seeds - 1}" if settings.seeds > 1 else "seed 0"),
        "",
        "A few epochs on a small dataset rank candidates only roughly: the spread "
        "over seeds says how far to trust a difference.",
    ]
    return "\n".join(lines) + "\n"


def figure(settings: Settings, best: list[Outcome]) -> Any:
    """Top-1 against FLOPs: candidates, the one-dimension baselines, the base."""
    from . import plot

    plt = plot.pyplot()
    styles = {
        "candidate": ("tab:blue", "o"),
        "depth only": ("tab:orange", "s"),
        "width only": ("tab:green", "^"),
        "resolution only": ("tab:red", "D"),
        "base": ("black", "*"),
    }
    winner = next(o for o in best if o.point.kind == "candidate" and o.ok)
    labels = []
    with plt.rc_context(plot.STYLE):
        fig, ax = plt.subplots(figsize=(8, 5.5))
        for kind, (color, marker) in styles.items():
            mine = [o for o in best if o.point.kind == kind and o.ok]
            if not mine:
                continue
            xs = [o.point.flops / 1e6 for o in mine]
            ys = [100 * o.mean for o in mine]
            errs = [100 * (o.spread or 0.0) for o in mine]
            ax.errorbar(
                xs,
                ys,
                yerr=errs,
                fmt=marker,
                color=color,
                label=kind,
                markersize=6 if kind != "base" else 10,
                capsize=2,
                linestyle="none",
            )
            for o, x, y in zip(mine, xs, ys, strict=True):
                if kind != "candidate":
                    labels.append(
                        (kind if kind == "base" else kind.split()[0], x, y, color)
                    )
                elif o is winner:
                    labels.append(
                        (
                            f"a{o.point.alpha:g} b{o.point.beta:g} g{o.point.gamma:g}",
                            x,
                            y,
                            color,
                        )
                    )
        plot._place_labels(ax, labels)
        ax.set_xlabel("FLOPs (millions of multiply-adds, native resolution)")
        ax.set_ylabel("top-1 (%) on the held-out split")
        ax.set_title(
            f"{Path(settings.spec).name}: phi = 1 at {settings.flops:g}x FLOPs "
            f"({settings.data}, {settings.epochs} epochs)"
        )
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best")
        fig.tight_layout()
    return fig


# -- the command ---------------------------------------------------------------


def run(settings: Settings, echo) -> Path:
    """The whole search; returns the path of search.yaml."""
    from . import pipeline, plot
    from .output import WriteError, write_all

    require()
    if settings.objective == "mnas" and not settings.latency_target:
        raise SpecError("--objective mnas needs --latency-target MS")
    loaded = pipeline.load_spec(settings.spec)
    if isinstance(loaded, ir.Network):
        raise SpecError(
            f"{settings.spec}: an expanded network has no scaling rule to search; "
            "give the spec it came from"
        )
    out = settings.out
    state = out / "search.json"
    if settings.resume:
        if not state.is_file():
            raise SpecError(
                f"--resume: {out} holds no search to resume (no {state.name})"
            )
        before = json.loads(state.read_text())["settings"]
        now = json.loads(json.dumps(settings.recorded()))
        changed = [k for k in now if before.get(k) != now[k]]
        if changed:
            raise SpecError(
                f"--resume: the search in {out} ran with "
                + ", ".join(f"{k.replace('_', '-')} {before.get(k)!r}" for k in changed)
                + "; resume it with the same options"
            )
    elif state.exists():
        raise SpecError(
            f"-o {out}: already holds a search; --resume continues it, or choose "
            "another folder"
        )
    p = plan(loaded, settings)
    echo(
        f"{sum(pt.kind == 'candidate' for pt in p.points)} candidates within {settings.tolerance:.0%} of "
        f"{settings.flops:g}x FLOPs ({p.checked} grid networks counted), "
        f"{sum(pt.kind.endswith('only') for pt in p.points)} baselines and the base; {settings.seeds} seed(s) each"
    )
    base_size = p.points[0].resolution
    sizes = [train_size(settings, base_size, pt) for pt in p.points]
    data = dataset(settings, sizes)
    latencies = _latencies(p) if settings.objective == "mnas" else {}
    work = jobs(p, settings, len(data["classes"]))
    meta = {}
    for trial in trials(p, settings):
        pt = trial.point
        meta[trial.key] = {
            "kind": pt.kind,
            "alpha": pt.alpha,
            "beta": pt.beta,
            "gamma": pt.gamma,
            "seed": trial.seed,
            "flops_ratio": pt.ratio,
            "product": pt.product,
            "params": pt.params,
            "resolution": pt.resolution,
            "train_size": train_size(settings, base_size, pt),
        }
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not settings.resume:
            write_all(
                {state: json.dumps({"settings": settings.recorded()}, indent=1) + "\n"}
            )
    except (OSError, WriteError) as exc:
        raise SpecError(f"-o {out}: {exc}") from None

    _ray_trials(settings.ray).run(settings, work, meta, data, echo)
    records = recorded(out / "trials.jsonl")
    missing = [key for key in work if key not in records]
    if missing:
        echo(
            f"interrupted: {len(work) - len(missing)} of {len(work)} trials ended "
            f"(recorded in {out / 'trials.jsonl'}); --resume continues"
        )
        raise Interrupted
    best = ranked(outcomes(p, records, latencies), settings)
    if not any(o.ok and o.point.kind == "candidate" for o in best):
        raise Interrupted("every candidate failed: see trials.jsonl")
    winner = next(o for o in best if o.point.kind == "candidate" and o.ok).point
    data["source"] = settings.data
    fig = figure(settings, best)
    plot.save(fig, out / "search.svg")
    files = {
        out / "search.yaml": search_yaml(settings, loaded, winner),
        out / "report.md": report_md(settings, p, best, data),
    }
    try:
        write_all(files)
    except WriteError as exc:
        raise SpecError(str(exc)) from None
    return out / "search.yaml"


class Interrupted(Exception):
    """The search ended without a result (exit 1)."""


def _latencies(p: Plan) -> dict[str, float]:
    """Each network's CPU latency at batch 1, as `archspec profile` measures it."""
    import tempfile

    from . import profile

    settings = profile.Settings()
    profile.configure(settings)
    out = {}
    with tempfile.TemporaryDirectory(prefix="archspec-search-") as folder:
        for name, net in p.networks().items():
            row = profile.measure(net, settings, Path(folder))
            out[name] = row.latency_ms
    return out
