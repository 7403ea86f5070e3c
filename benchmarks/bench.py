"""Benchmark the generated models against torchvision and keras.applications.

Models: EfficientNet B0-B7 (specs/b0.yaml as "generated", specs/b0_torchvision.yaml
as "generated (tv spec)") against torchvision's efficientnet_b*, and the ResNets
of specs/resnet.yaml (ResNet-50 by default) against torchvision's resnet*.
One command runs everything and writes benchmarks/results/latest.json and .md:

    .venv/bin/python benchmarks/bench.py --quick   # B0 and ResNet-50, few repeats
    .venv/bin/python benchmarks/bench.py           # B0, B3 and ResNet-50 (many minutes)
    .venv/bin/python benchmarks/bench.py --quick --variants resnet50 --skip memory,keras
    .venv/bin/python benchmarks/bench.py --device cuda   # GPU: latest_cuda.json/.md
    # PyTorch against Flax NNX and Keras on JAX only, one thread each
    # (benchmarks/results/flax/):
    OMP_NUM_THREADS=1 XLA_FLAGS="--xla_cpu_multi_thread_eigen=false \
    intra_op_parallelism_threads=1" .venv/bin/python benchmarks/bench.py --quick \
    --variants b0,resnet50,mobilenet_v2_100 --skip compile,torch,memory,keras \
    --rounds 7 --out benchmarks/results/flax

The generated modules are imported from the compiler's default layout,
generated/<backend>/<spec>/<module>.py (`archspec compile specs/<spec>.yaml
--variant V --backend B`).

Method
------
* Throughput (CPU): eval mode, float32, batch 8, the variant's resolution,
  torch.inference_mode(). All contenders of one model live in one process;
  after warm-up, every round times one forward of each contender, in an order
  rotated by one each round, so slow drift of the machine (thermal, other
  load) falls on all of them alike. Reported: the median of the rounds
  (images/s = batch / median seconds) and the spread (min-max and the
  interquartile range relative to the median).
* Weights: the ResNets take torchvision's (randomly initialised, seed 0)
  weights through archspec.references.torchvision.from_torchvision(...,
  "resnet"), so both models compute the same function on the same numbers.
  The EfficientNets keep their own initialisation, as before.
* Ratios: generated / reference throughput in the same memory format, and
  generated with prepare_for_inference() (batch norm folded) in channels_last
  / torchvision channels_last.
* Peak memory (CPU): tracemalloc does not see torch's allocator, and
  ru_maxrss carries the parent's high-water mark across fork/exec, so each
  contender runs in a fresh subprocess that builds the model and its input,
  resets the kernel's peak-RSS counter (echo 5 > /proc/self/clear_refs),
  runs three forwards and reads VmHWM from /proc/self/status. "forward peak"
  is VmHWM minus VmRSS before the first forward: the activations, workspace
  and allocator caches above everything that existed already (weights,
  input, the torch runtime). Linux only.
* torch.compile (full mode only): torchvision and the generated model,
  contiguous, compiled with the default inductor backend in a fresh process
  with inductor's caches off; the first call's time is reported as compile
  time, then rounds alternate.
* Keras (EfficientNets) runs in a subprocess (TensorFlow is never imported
  beside torch): KERAS_BACKEND=tensorflow, model.predict_on_batch (a compiled
  tf.function) for both generated/keras/b0/efficientnet_b*.py and
  keras.applications.EfficientNetB*(weights=None), alternated like the torch
  contenders. Skipped, with a printed line, where the generated Keras file is
  absent (or fails to build).
* Flax (--skip flax to leave out): the generated PyTorch model (eager,
  channels_last, inference_mode, not folded) in this process against the
  generated Flax NNX model and the generated Keras model on JAX
  (KERAS_BACKEND=jax) in one child process, all three holding the PyTorch
  model's weights (archspec.weights.torch_to_flax / torch_to_keras) and
  taking the same batch (NHWC for JAX). Flax: jax.jit of a function that
  nnx.merges the split model and calls it with train=False; Keras:
  model.predict_on_batch (a jitted predict function). The first call, which
  traces and compiles, is timed apart (compile_s) and its logits are checked
  against PyTorch's (max_rel_diff). Then the parent runs `alternate` over
  all three: a Flax or Keras turn asks the child over a pipe to time one
  call (until block_until_ready / the NumPy result) and reads the seconds
  back, so the rounds of the three interleave although JAX and PyTorch never
  compute in one process, each with its own thread pool.
* Compiler: wall time of `archspec compile` as a process (interpreter start,
  imports, writing the files), the median of several runs after an untimed
  one, with bytecode caching allowed (as for an installed package): one
  EfficientNet (specs/b0.yaml --variant b3), one ResNet (specs/resnet.yaml
  --variant resnet50), and all eight EfficientNets for each backend.
* --device cuda: channels_last, batch 256, float32 (TF32 off) and bfloat16,
  timed with CUDA events after synchronising; peak memory is
  torch.cuda.max_memory_allocated. Exits with a message where CUDA is absent.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CPU_BATCH = 8
CUDA_BATCH = 256

# The targets: (description, contender, reference, minimum ratio).
# "generated" in a key stands for every generated family of the model.
EFFICIENTNET_TARGETS = (
    ("generated >= 1.0x torchvision, contiguous", "gen", "tv", 1.0),
    ("generated >= 1.0x torchvision, channels_last", "gen_cl", "tv_cl", 1.0),
    (
        "generated folded >= 1.15x torchvision, channels_last",
        "gen_cl_folded",
        "tv_cl",
        1.15,
    ),
)
RESNET_TARGETS = (
    ("generated >= 1.0x torchvision, contiguous", "gen", "tv", 1.0),
    ("generated >= 1.0x torchvision, channels_last", "gen_cl", "tv_cl", 1.0),
    (
        "generated folded >= 1.0x torchvision, channels_last",
        "gen_cl_folded",
        "tv_cl",
        1.0,
    ),
)
# The families torchvision lacks (NASNet, PNASNet, SE-ResNet, ResNetV2,
# MobileNetV1) against timm's.
TIMM_TARGETS = (
    ("generated >= 1.0x timm, contiguous", "gen", "tv", 1.0),
    ("generated >= 1.0x timm, channels_last", "gen_cl", "tv_cl", 1.0),
)
COMPILE_ONE_LIMIT_S = 0.5
COMPILE_ALL_LIMIT_S = 2.0
# `archspec compile` runs timed: (key, spec, variant selection, backend).
COMPILE_RUNS = (
    ("one_variant_torch", "b0", "b3", "torch"),
    ("resnet50_torch", "resnet", "resnet50", "torch"),
    ("b0-b7_torch", "b0", "all", "torch"),
    ("b0-b7_keras", "b0", "all", "keras"),
)
# Those with a one-file limit: (key, what it compiles).
COMPILE_ONE_TARGETS = (
    ("one_variant_torch", "EfficientNet-B3"),
    ("resnet50_torch", "ResNet-50"),
)

FAMILY_LABELS = {
    "tv": "torchvision",
    "gen": "generated",
    "gen_tv": "generated (tv spec)",
}


# --- models ---------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """One benchmarked variant: torchvision's model and the generated ones."""

    name: str  # the report's key: "B0", "ResNet50"
    variant: str  # the specs' variant name: "b0", "resnet50"
    reference: str  # torchvision.models builder: "efficientnet_b0", "resnet50"
    families: tuple[tuple[str, str], ...]  # (family, spec file stem)
    raw_input: tuple[str, ...]  # families that take 0-255 and normalise inside
    weights: str | None  # from_torchvision scheme where gen takes tv's weights
    targets: tuple[tuple[str, str, str, float], ...]
    keras_app: str | None  # keras.applications builder, None: no Keras contender
    # Largest forward peak memory allowed, as a multiple of torchvision's (in
    # each memory format); None: not a target.
    memory_limit: float | None = None
    # Where `reference` comes from: torchvision.models or timm.create_model;
    # None: no PyTorch reference (NASNet-A Mobile: keras.applications only).
    library: str | None = "torchvision"

    def spec(self, family: str) -> str:
        return dict(self.families)[family]


RESNETS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
    "wide_resnet101_2",
)


# Mobile variants at width 1.0 and other torchvision models: (spec stem,
# torchvision builder, report name).
MOBILE = {
    "mobilenet_v2_100": ("mobilenet_v2", "mobilenet_v2", "MobileNetV2"),
    "mnasnet1_0": ("mnasnet", "mnasnet1_0", "MNASNet1_0"),
    "mobilenet_v3_large_100": (
        "mobilenet_v3",
        "mobilenet_v3_large",
        "MobileNetV3Large",
    ),
    "densenet121": ("densenet", "densenet121", "DenseNet121"),
    "efficientnet_v2_s": ("efficientnet_v2", "efficientnet_v2_s", "EfficientNetV2S"),
}
# The torchvision naming scheme, where it is not the spec's name.
SCHEMES = {"efficientnet_v2": "efficientnet"}
# DenseNet's growing feature map: its peak memory must not exceed torchvision's.
MEMORY_LIMITS = {"densenet121": 1.0}
# Families with no torchvision model: variant -> (spec stem, timm model or
# None, keras.applications model or None, report name, from_torchvision scheme
# of timm's weights or None: each keeps its own initialisation).
TIMM = {
    "nasnetalarge": ("nasnet", "nasnetalarge", None, "NASNetALarge", "nasnet"),
    "pnasnet5large": ("pnasnet", "pnasnet5large", None, "PNASNet5Large", "pnasnet"),
    "nasnet_mobile": ("nasnet_keras", None, "NASNetMobile", "NASNetMobile", None),
    "seresnet50": ("se_resnet", "seresnet50", None, "SEResNet50", "resnet"),
    "resnetv2_50": ("resnet_v2", "resnetv2_50", None, "ResNetV2_50", "resnetv2"),
    # timm's mobilenetv1_100 is the same network (4,231,976 parameters).
    "mobilenet_v1_100": ("mobilenet_v1", "mobilenetv1_100", None, "MobileNetV1", None),
}


def model(text: str) -> Model:
    """b0..b7 (or 0..7, B0), resnet50, ResNet50, mobilenet_v2_100, ... -> the Model."""
    t = text.strip().lower().replace("wideresnet", "wide_resnet")
    if t.isdigit():
        t = f"b{t}"
    if re.fullmatch(r"b[0-7]", t):
        return Model(
            name=t.upper(),
            variant=t,
            reference=f"efficientnet_{t}",
            families=(("gen", "b0"), ("gen_tv", "b0_torchvision")),
            raw_input=("gen",),
            weights=None,
            targets=EFFICIENTNET_TARGETS,
            keras_app=f"EfficientNet{t.upper()}",
        )
    if t in RESNETS:
        return Model(
            name=t.replace("wide_resnet", "WideResNet").replace("resnet", "ResNet"),
            variant=t,
            reference=t,
            families=(("gen", "resnet"),),
            raw_input=(),
            weights="resnet",
            targets=RESNET_TARGETS,
            keras_app=None,
        )
    t = next((v for v, (*_, name, _) in TIMM.items() if name.lower() == t), t)
    if t in TIMM:
        spec, timm_name, keras_app, name, scheme = TIMM[t]
        return Model(
            name=name,
            variant=t,
            reference=timm_name or "",
            families=(("gen", spec),),
            raw_input=(),
            weights=scheme,
            targets=TIMM_TARGETS,
            keras_app=keras_app,
            library="timm" if timm_name else None,
        )
    # The report names them too ("MobileNetV2"): either finds the model.
    t = next((v for v, (*_, name) in MOBILE.items() if name.lower() == t), t)
    if t in MOBILE:
        spec, reference, name = MOBILE[t]
        return Model(
            name=name,
            variant=t,
            reference=reference,
            families=(("gen", spec),),
            raw_input=(),
            weights=SCHEMES.get(spec, spec),
            targets=RESNET_TARGETS,
            keras_app=None,
            memory_limit=MEMORY_LIMITS.get(t),
        )
    raise SystemExit(
        f"bench.py: unknown model {text!r}; expected b0..b7 (or 0..7) or one of "
        + ", ".join((*RESNETS, *MOBILE, *TIMM))
    )


@functools.cache
def _network(spec: str, variant: str):
    from archspec.pipeline import load_spec, network

    return network(load_spec(ROOT / "specs" / f"{spec}.yaml"), variant=variant)


def generated_path(backend: str, spec: str, variant: str) -> Path:
    """Where `archspec compile specs/SPEC.yaml --variant V --backend B` writes."""
    return ROOT / "generated" / backend / spec / f"{_network(spec, variant).module}.py"


def _generated(model: Model, family: str):
    """(the generated torch module, its model class) of one family."""
    spec = model.spec(family)
    path = generated_path("torch", spec, model.variant)
    if not path.exists():
        raise SystemExit(
            f"bench.py: {path.relative_to(ROOT)} does not exist; run `archspec compile "
            f"specs/{spec}.yaml --variant {model.variant} --backend torch`"
        )
    module = importlib.import_module(f"generated.torch.{spec}.{path.stem}")
    (cls,) = (name for name in module.__all__ if name != "RESOLUTION")
    return module, getattr(module, cls)


# --- timing helpers -------------------------------------------------------------


def summarise(times: list[float], batch: int) -> dict:
    """Median, spread and throughput of per-call wall times in seconds."""
    times = sorted(times)
    median = statistics.median(times)
    if len(times) >= 4:
        q1, _, q3 = statistics.quantiles(times, n=4)
    else:
        q1, q3 = times[0], times[-1]
    return {
        "n": len(times),
        "median_s": median,
        "min_s": times[0],
        "max_s": times[-1],
        "iqr_rel": (q3 - q1) / median,
        "images_per_s": batch / median,
    }


def alternate(
    calls: dict, warmup: int, rounds: int, clock=None
) -> dict[str, list[float]]:
    """Time each callable once per round, rotating the order every round."""
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            if clock is None:
                start = time.perf_counter()
                calls[name]()
                times[name].append(time.perf_counter() - start)
            else:
                times[name].append(clock(calls[name]))
    return times


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise KeyError(field)


def reset_peak_rss() -> None:
    """Reset VmHWM (peak RSS) to the current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """This process's RSS high-water mark (VmHWM; resettable, unlike ru_maxrss)."""
    try:
        return _status_mb("VmHWM")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# --- torch contenders -------------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    key: str  # e.g. "gen_tv_cl_folded"
    family: str  # tv (the reference) | gen | gen_tv
    channels_last: bool
    folded: bool
    library: str = "torchvision"  # the reference's

    @property
    def label(self) -> str:
        text = self.library if self.family == "tv" else FAMILY_LABELS[self.family]
        text += ", channels_last" if self.channels_last else ", contiguous"
        return text + (", prepare_for_inference()" if self.folded else "")


def contenders(model: Model, cuda: bool) -> list[Contender]:
    out = []
    for family in ("tv", *(family for family, _ in model.families)):
        for channels_last in (False, True) if not cuda else (True,):
            for folded in (
                (False, True) if family != "tv" and channels_last else (False,)
            ):
                key = (
                    family
                    + ("_cl" if channels_last else "")
                    + ("_folded" if folded else "")
                )
                out.append(
                    Contender(key, family, channels_last, folded, model.library or "")
                )
    return out


def _reference(model: Model):
    """torchvision's (or timm's) model, initialised from seed 0 (the same
    weights every call)."""
    import torch

    torch.manual_seed(0)
    if model.library == "timm":
        import timm

        return timm.create_model(model.reference)
    import torchvision

    return getattr(torchvision.models, model.reference)(weights=None)


def build_torch(contender: Contender, model: Model):
    """The eval-mode model and its resolution (folded if the contender says so)."""
    if contender.family == "tv":
        net = _reference(model)
        resolution = _network(model.spec(model.families[0][0]), model.variant)
        resolution = resolution.input.resolution
    else:
        module, cls = _generated(model, contender.family)
        resolution = module.RESOLUTION
        net = cls()
        if model.weights:
            from archspec.references.torchvision import from_torchvision

            network = _network(model.spec(contender.family), model.variant)
            state = from_torchvision(
                network, _reference(model).state_dict(), model.weights
            )
            net.load_state_dict(state)
    net.eval()
    if contender.folded:
        net.prepare_for_inference()
    return net, resolution


def make_input(
    c: Contender, model: Model, resolution: int, batch: int, device="cpu", dtype=None
):
    """Random images: normalised, or 0-255 for the families that normalise inside."""
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, resolution, resolution, generator=gen)
    if c.family in model.raw_input:
        x = (x * 0.25 + 0.5).clamp(0, 1) * 255
    x = x.to(device=device, dtype=dtype or torch.float32)
    if c.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def forward_call(net, x) -> Callable[[], None]:
    """One eval-mode forward without autograd: what every contender is timed on."""
    import torch

    def call() -> None:
        with torch.inference_mode():
            net(x)

    return call


def summaries(times: dict[str, list[float]], meta: dict, batch: int) -> dict:
    """Each contender's facts (label, resolution, ...) and its timing summary."""
    return {key: {**meta[key], **summarise(t, batch)} for key, t in times.items()}


def bench_torch_cpu(model: Model, warmup: int, rounds: int) -> dict:
    import torch

    calls, meta = {}, {}
    for c in contenders(model, cuda=False):
        net, resolution = build_torch(c, model)
        if c.channels_last:
            net = net.to(memory_format=torch.channels_last)
        calls[c.key] = forward_call(net, make_input(c, model, resolution, CPU_BATCH))
        meta[c.key] = {"label": c.label, "resolution": resolution}
    return summaries(alternate(calls, warmup, rounds), meta, CPU_BATCH)


def compiled_child(model: Model, warmup: int, rounds: int) -> dict:
    """Runs in a fresh process: torchvision and the generated model (contiguous,
    eval) under torch.compile's default inductor backend, alternated."""
    # Cold compiles for both: inductor's on-disk caches would favour whichever
    # model was compiled on this machine before.
    os.environ["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"
    import torch

    calls, meta = {}, {}
    for c in contenders(model, cuda=False):
        if c.family not in ("tv", "gen") or c.channels_last or c.folded:
            continue
        net, resolution = build_torch(c, model)
        call = forward_call(
            torch.compile(net), make_input(c, model, resolution, CPU_BATCH)
        )
        start = time.perf_counter()
        call()  # the first call compiles
        calls[c.key] = call
        meta[c.key] = {
            "label": c.label.replace("contiguous", "torch.compile"),
            "resolution": resolution,
            "compile_s": time.perf_counter() - start,
        }
    return summaries(alternate(calls, warmup, rounds), meta, CPU_BATCH)


def memory_child(key: str, model: Model) -> dict:
    """Runs in a fresh process: peak RSS of three forwards over the RSS before."""
    import torch

    c = next(c for c in contenders(model, cuda=False) if c.key == key)
    net, resolution = build_torch(c, model)
    if c.channels_last:
        net = net.to(memory_format=torch.channels_last)
    x = make_input(c, model, resolution, CPU_BATCH)
    peak_build = peak_rss_mb()
    reset_peak_rss()
    before = _status_mb("VmRSS")
    with torch.inference_mode():
        for _ in range(3):
            net(x)
    after = peak_rss_mb()
    return {
        "rss_before_mb": before,
        "peak_rss_build_mb": peak_build,
        "peak_rss_forward_mb": after,
        "forward_peak_mb": after - before,
    }


def bench_torch_memory(model: Model) -> dict:
    out = {}
    for c in contenders(model, cuda=False):
        out[c.key] = _child(
            ["--child", "memory", "--key", c.key, "--variant", model.variant]
        )
    return out


def bench_torch_cuda(model: Model, warmup: int, rounds: int) -> dict:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    by_dtype = {}
    for dtype in (torch.float32, torch.bfloat16):
        calls, meta = {}, {}
        for c in contenders(model, cuda=True):
            net, resolution = build_torch(c, model)
            net = net.to("cuda", dtype=dtype, memory_format=torch.channels_last)
            x = make_input(c, model, resolution, CUDA_BATCH, device="cuda", dtype=dtype)
            calls[c.key] = forward_call(net, x)
            meta[c.key] = {"label": c.label, "resolution": resolution}

        def clock(fn):
            start, end = (
                torch.cuda.Event(enable_timing=True),
                torch.cuda.Event(enable_timing=True),
            )
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000

        times = alternate(calls, warmup, rounds, clock=clock)
        name = str(dtype).removeprefix("torch.")
        by_dtype[name] = summaries(times, meta, CUDA_BATCH)
        for key, call in calls.items():  # peak memory, one contender at a time
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            call()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
            by_dtype[name][key]["forward_peak_mb"] = peak / 2**20
        del calls
        torch.cuda.empty_cache()
    return by_dtype


# --- keras (subprocess) ---------------------------------------------------------


def keras_source(model: Model) -> Path | None:
    """The generated Keras file of the model's first family (None: no Keras
    contender for this model)."""
    if model.keras_app is None:
        return None
    return generated_path("keras", model.spec(model.families[0][0]), model.variant)


def keras_child(model: Model, warmup: int, rounds: int) -> dict:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    path = keras_source(model)
    spec = path.parent.name
    module = importlib.import_module(f"generated.keras.{spec}.{path.stem}")
    gen = getattr(module, path.stem)()
    resolution = gen.input_shape[1]
    ref = getattr(keras.applications, model.keras_app)(weights=None)
    x = np.random.default_rng(0).uniform(0, 255, (CPU_BATCH, resolution, resolution, 3))
    x = x.astype("float32")
    calls = {
        "keras_gen": lambda: gen.predict_on_batch(x),
        "keras_app": lambda: ref.predict_on_batch(x),
    }
    labels = {"keras_gen": "generated Keras", "keras_app": "keras.applications"}
    times = alternate(calls, warmup, rounds)
    out = {
        key: {"label": labels[key], "resolution": resolution, **summarise(t, CPU_BATCH)}
        for key, t in times.items()
    }
    out["versions"] = {"tensorflow": tf.__version__, "keras": keras.__version__}
    return out


def _child(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _variant_child(kind: str, model: Model, warmup: int, rounds: int) -> dict:
    args = {
        "--child": kind,
        "--variant": model.variant,
        "--warmup": warmup,
        "--rounds": rounds,
    }
    return _child([str(part) for pair in args.items() for part in pair])


# --- flax and keras on jax (subprocess) -------------------------------------------


def jax_child(model: Model, data: Path) -> None:
    """Runs in a fresh process: the generated Flax and Keras (on JAX) models
    with the arrays of `data` (the PyTorch model's state dict, its input and
    logits). Prints each model's first call (compile) and the versions as
    one JSON line, then times one call per contender name read from stdin."""
    os.environ["KERAS_BACKEND"] = "jax"
    import flax
    import jax
    import keras
    import numpy as np
    from archspec_flax.runtime import _concrete_rngs
    from flax import nnx

    from archspec.runtime import set_flax_arrays
    from archspec.weights import torch_to_flax, torch_to_keras

    spec = model.spec("gen")
    network = _network(spec, model.variant)
    state = dict(np.load(data))
    x, logits = state.pop("__input__").transpose(0, 2, 3, 1), state.pop("__logits__")
    x = jax.device_put(np.ascontiguousarray(x))
    generated = f"generated.{{}}.{spec}.{network.module}"
    flax_cls = getattr(
        importlib.import_module(generated.format("flax")), network.class_name
    )
    net = nnx.eval_shape(flax_cls)  # no random initial weights drawn
    set_flax_arrays(net, torch_to_flax(network, state))
    _concrete_rngs(net)
    graph, params = nnx.split(net)
    forward = jax.jit(lambda params, x: nnx.merge(graph, params)(x, train=False))
    builder = getattr(
        importlib.import_module(generated.format("keras")), network.module
    )
    keras_model = builder()
    for name, arrays in torch_to_keras(network, state).items():
        keras_model.get_layer(name).set_weights(arrays)
    calls = {
        "flax": lambda: forward(params, x).block_until_ready(),
        "keras_jax": lambda: keras_model.predict_on_batch(x),
    }
    first = {}
    for key, call in calls.items():
        start = time.perf_counter()
        out = np.asarray(call())
        first[key] = {
            "compile_s": time.perf_counter() - start,
            # Relative: random-init MobileNetV2's logits are ~1e-9.
            "max_rel_diff": float(np.abs(out - logits).max() / np.abs(logits).max()),
        }
    versions = {"jax": jax.__version__, "flax": flax.__version__}
    versions["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    print(json.dumps({**first, "versions": {**versions, "keras": keras.__version__}}))
    sys.stdout.flush()
    for line in sys.stdin:
        start = time.perf_counter()
        calls[line.strip()]()
        print(time.perf_counter() - start, flush=True)


def flax_source(model: Model) -> Path:
    return generated_path("flax", model.spec("gen"), model.variant)


def bench_flax(model: Model, warmup: int, rounds: int) -> dict:
    """The generated PyTorch model here and the jax child's contenders,
    alternated round by round across the two processes."""
    import numpy as np
    import torch

    c = Contender("gen_cl", "gen", channels_last=True, folded=False)
    net, resolution = build_torch(c, model)
    net = net.to(memory_format=torch.channels_last)
    x = make_input(c, model, resolution, CPU_BATCH)
    with torch.inference_mode():
        logits = net(x)
    arrays = {k: v.numpy() for k, v in net.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "state.npz"
        np.savez(data, __input__=x.numpy(), __logits__=logits.numpy(), **arrays)
        args = ["--child", "jax", "--variant", model.variant, "--data", str(data)]
        child = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

        def answer() -> str:
            line = child.stdout.readline()
            if not line:
                raise RuntimeError(f"the JAX child exited ({child.wait()})")
            return line

        def remote(key: str) -> Callable[[], float]:
            def call() -> float:
                child.stdin.write(key + "\n")
                child.stdin.flush()
                return float(answer())

            return call

        torch_call = forward_call(net, x)

        def local() -> float:
            start = time.perf_counter()
            torch_call()
            return time.perf_counter() - start

        try:
            first = json.loads(answer())
            calls = {
                "torch": local,
                "flax": remote("flax"),
                "keras_jax": remote("keras_jax"),
            }
            times = alternate(calls, warmup, rounds, clock=lambda call: call())
        finally:
            child.stdin.close()
            child.wait()
    labels = {
        "torch": "generated PyTorch, eager, channels_last",
        "flax": "generated Flax NNX, jax.jit",
        "keras_jax": "generated Keras on JAX, predict_on_batch",
    }
    out = {
        key: {
            "label": labels[key],
            "resolution": resolution,
            **first.get(key, {}),
            **summarise(t, CPU_BATCH),
        }
        for key, t in times.items()
    }
    out["versions"] = first["versions"]
    return out


# --- compiler -------------------------------------------------------------------


def archspec_command() -> list[str]:
    script = Path(sys.executable).parent / "archspec"
    return [str(script)] if script.exists() else [sys.executable, "-m", "archspec"]


def time_process(cmd: list[str], runs: int) -> dict:
    # As an installed package runs: pip writes its .pyc files at install time,
    # so bytecode caching is allowed here even where the environment turns it
    # off, and one untimed run fills the caches first.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, env=env)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
    return summarise(times, 1)


def bench_compile(runs: int) -> dict:
    """Each of COMPILE_RUNS as a process, into a folder of its own (-o)."""
    archspec = archspec_command()
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, spec, variant, backend in COMPILE_RUNS:
            args = [
                "compile",
                f"specs/{spec}.yaml",
                "--variant",
                variant,
                "--backend",
                backend,
                "-o",
                str(Path(tmp) / key),
            ]
            command = " ".join(["archspec", *args[:-1], "TMP"])
            try:
                out[key] = {
                    **time_process([*archspec, *args], runs),
                    "command": command,
                }
            except subprocess.CalledProcessError as exc:
                why = (exc.stderr or b"").decode(errors="replace").strip()
                why = why.splitlines()[-1] if why else f"exit {exc.returncode}"
                print(
                    f"archspec compile: {command} failed, not timed: {why}",
                    file=sys.stderr,
                )
                out.setdefault("failed", {})[key] = {"command": command, "error": why}
    if "b0-b7_torch" in out and "b0-b7_keras" in out:
        out["all_16_files_s"] = (
            out["b0-b7_torch"]["median_s"] + out["b0-b7_keras"]["median_s"]
        )
    return out


# --- report ---------------------------------------------------------------------


def ratio(results: dict, a: str, b: str) -> float:
    return results[a]["images_per_s"] / results[b]["images_per_s"]


def targets(report: dict) -> list[dict]:
    rows = []
    for name, torch_results in report.get("torch", {}).items():
        m = model(name)
        for text, a, b, minimum in m.targets:
            for fam, _ in m.families:
                key = a.replace("gen", fam, 1)
                if key not in torch_results or b not in torch_results:
                    continue
                r = ratio(torch_results, key, b)
                label = text.replace("generated", FAMILY_LABELS[fam], 1)
                rows.append(
                    {
                        "target": f"{name}: {label}",
                        "value": r,
                        "unit": "x",
                        "met": r >= minimum,
                    }
                )
    # On a GPU: plain eval (no prepare_for_inference()) at least as fast as the
    # reference, channels_last, in each dtype (issue 28).
    for name, by_dtype in report.get("cuda", {}).items():
        for dtype, res in by_dtype.items():
            for fam, _ in model(name).families:
                r = ratio(res, f"{fam}_cl", "tv_cl")
                label = FAMILY_LABELS[fam]
                rows.append(
                    {
                        "target": f"{name}: {label} >= 1.0x {model(name).library}, "
                        f"CUDA {dtype}, eval",
                        "value": r,
                        "unit": "x",
                        "met": r >= 1.0,
                    }
                )
    for name, memory in report.get("torch_memory", {}).items():
        limit = model(name).memory_limit
        for layout in ("", "_cl") if limit is not None else ():
            r = memory[f"gen{layout}"]["forward_peak_mb"] / max(
                memory[f"tv{layout}"]["forward_peak_mb"], 1e-9
            )
            fmt = "channels_last" if layout else "contiguous"
            rows.append(
                {
                    "target": f"{name}: generated forward peak memory <= "
                    f"{limit:g}x torchvision, {fmt}",
                    "value": r,
                    "unit": "x",
                    "met": r <= limit,
                }
            )
    for name, keras_results in report.get("keras", {}).items():
        r = ratio(keras_results, "keras_gen", "keras_app")
        rows.append(
            {
                "target": f"{name}: generated Keras >= 1.0x keras.applications",
                "value": r,
                "unit": "x",
                "met": r >= 1.0,
            }
        )
    comp = report.get("compile")
    if comp:
        for key, what in COMPILE_ONE_TARGETS:
            if key not in comp:
                continue
            one = comp[key]["median_s"]
            rows.append(
                {
                    "target": f"compile one variant ({what}) < {COMPILE_ONE_LIMIT_S} s",
                    "value": one,
                    "unit": " s",
                    "met": one < COMPILE_ONE_LIMIT_S,
                }
            )
        if "all_16_files_s" in comp:
            total = comp["all_16_files_s"]
            rows.append(
                {
                    "target": f"compile all 16 EfficientNet files < {COMPILE_ALL_LIMIT_S} s",
                    "value": total,
                    "unit": " s",
                    "met": total < COMPILE_ALL_LIMIT_S,
                }
            )
    return rows


def markdown(report: dict) -> str:
    m = report["machine"]
    v = report["versions"]
    lines = [
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, torch threads {v.get('torch_threads')}; "
        f"Python {m['python']}; torch {v.get('torch')}, torchvision {v.get('torchvision')}"
        + (f", TensorFlow {v['tensorflow']}" if "tensorflow" in v else "")
        + (f", Keras {v['keras']}" if "keras" in v else "")
        + (f", JAX {v['jax']}, Flax {v['flax']}" if "jax" in v else "")
        + (f", XLA_FLAGS {v['xla_flags']!r}" if v.get("xla_flags") else "")
        + (f"; GPU {m['gpu']}" if "gpu" in m else "")
        + f". Run {report['date']}, mode {report['mode']}.",
        "",
    ]
    if "torch" in report:
        lines += [
            f"PyTorch, CPU, float32, eval, batch {CPU_BATCH}, median of {report['rounds']} alternated rounds "
            "(spread: min-max of the rounds; forward peak: VmHWM over VmRSS across 3 forwards, one process per contender)",
            "",
            "| model | contender | images/s | vs reference (same format) | spread | forward peak MB |",
            "|---|---|---|---|---|---|",
        ]
        for variant, res in report["torch"].items():
            mem = report.get("torch_memory", {}).get(variant, {})
            for key, r in res.items():
                ref = "tv_cl" if "_cl" in key else "tv"
                peak = mem.get(key, {}).get("forward_peak_mb")
                lines.append(
                    f"| {variant} ({r['resolution']}) | {r['label']} | {r['images_per_s']:.1f} | "
                    f"{ratio(res, key, ref):.2f}x | {r['min_s'] * 1e3:.0f}-{r['max_s'] * 1e3:.0f} ms | "
                    + (f"{peak:.0f}" if peak is not None else "-")
                    + " |"
                )
        lines.append("")
    if "compiled" in report:
        lines += [
            f"PyTorch under torch.compile (inductor), CPU, float32, eval, contiguous, batch {CPU_BATCH}, "
            f"median of {report['rounds']} alternated rounds in a fresh process",
            "",
            "| model | contender | compile s | images/s | vs torchvision compiled | spread |",
            "|---|---|---|---|---|---|",
        ]
        for variant, res in report["compiled"].items():
            for key, r in res.items():
                lines.append(
                    f"| {variant} ({r['resolution']}) | {r['label']} | {r['compile_s']:.0f} | "
                    f"{r['images_per_s']:.1f} | {ratio(res, key, 'tv'):.2f}x | "
                    f"{r['min_s'] * 1e3:.0f}-{r['max_s'] * 1e3:.0f} ms |"
                )
        lines.append("")
    if "cuda" in report:
        lines += [
            f"PyTorch, CUDA, channels_last, eval, batch {CUDA_BATCH} (TF32 off for float32)",
            "",
            "| model | dtype | contender | images/s | vs reference | spread | forward peak MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for variant, by_dtype in report["cuda"].items():
            for dtype, res in by_dtype.items():
                for key, r in res.items():
                    lines.append(
                        f"| {variant} | {dtype} | {r['label']} | {r['images_per_s']:.0f} | "
                        f"{ratio(res, key, 'tv_cl'):.2f}x | {r['min_s'] * 1e3:.1f}-{r['max_s'] * 1e3:.1f} ms | "
                        f"{r['forward_peak_mb']:.0f} |"
                    )
        lines.append("")
    if "keras" in report:
        lines += [
            f"Keras {v.get('keras')} on TensorFlow {v.get('tensorflow')}, CPU, float32, batch {CPU_BATCH}, "
            "predict_on_batch, alternated",
            "",
            "| model | contender | images/s | vs keras.applications | spread |",
            "|---|---|---|---|---|",
        ]
        for variant, res in report["keras"].items():
            for key in ("keras_gen", "keras_app"):
                r = res[key]
                lines.append(
                    f"| {variant} ({r['resolution']}) | {r['label']} | {r['images_per_s']:.1f} | "
                    f"{ratio(res, key, 'keras_app'):.2f}x | {r['min_s'] * 1e3:.0f}-{r['max_s'] * 1e3:.0f} ms |"
                )
        lines.append("")
    if "flax" in report:
        lines += [
            f"Generated PyTorch (eager) against generated Flax NNX (jax.jit) and generated Keras on JAX "
            f"(predict_on_batch), CPU, float32, eval, batch {CPU_BATCH}, NHWC / channels_last, "
            f"median of {report['rounds']} rounds alternated across the torch and JAX processes; "
            "first call: trace and compile plus one forward; diff: max |logits - PyTorch's| / max |PyTorch's|",
            "",
            "| model | contender | images/s | Flax / this | first call s | diff | spread |",
            "|---|---|---|---|---|---|---|",
        ]
        for variant, res in report["flax"].items():
            for key in ("torch", "flax", "keras_jax"):
                r = res[key]
                first = f"{r['compile_s']:.1f}" if "compile_s" in r else "-"
                diff = f"{r['max_rel_diff']:.0e}" if "max_rel_diff" in r else "-"
                lines.append(
                    f"| {variant} ({r['resolution']}) | {r['label']} | {r['images_per_s']:.1f} | "
                    f"{ratio(res, 'flax', key):.2f}x | {first} | {diff} | "
                    f"{r['min_s'] * 1e3:.0f}-{r['max_s'] * 1e3:.0f} ms |"
                )
        lines.append("")
    if "compile" in report:
        c = report["compile"]
        timed = [key for key, *_ in COMPILE_RUNS if key in c]
        runs = c[timed[0]]["n"] if timed else 0
        lines += [
            f"`archspec compile` as a process, wall time, median of {runs} runs",
            "",
            "| command | files | median s | spread s |",
            "|---|---|---|---|",
        ]
        for key, _, variant, _ in COMPILE_RUNS:
            if key in c:
                r = c[key]
                lines.append(
                    f"| `{r['command']}` | {8 if variant == 'all' else 1} | "
                    f"{r['median_s']:.2f} | {r['min_s']:.2f}-{r['max_s']:.2f} |"
                )
            elif key in c.get("failed", {}):
                f = c["failed"][key]
                lines.append(f"| `{f['command']}` | - | failed: {f['error']} | |")
        if "all_16_files_s" in c:
            lines.append(
                f"| all 16 EfficientNet files (sum of the two `all`) | 16 | {c['all_16_files_s']:.2f} | |"
            )
        lines.append("")
    if report.get("skipped"):
        lines += ["Skipped:", ""]
        lines += [f"* {why}" for why in report["skipped"]]
        lines.append("")
    rows = targets(report)
    if rows:
        lines += ["| target | measured | met |", "|---|---|---|"]
        for row in rows:
            lines.append(
                f"| {row['target']} | {row['value']:.3f}{row['unit']} | {'yes' if row['met'] else 'NO'} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="B0 and ResNet-50 only, few rounds, no torch.compile",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--variants",
        default=None,
        help="comma list of models: b0..b7 (or 0..7), "
        + ", ".join((*RESNETS, *MOBILE))
        + "; default b0,b3,resnet50,mobilenet_v2_100 (quick: b0,resnet50)",
    )
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--skip",
        default="",
        help="comma list of torch,memory,compiled,keras,flax,compile",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--render", type=Path, help="only rewrite the .md of this results .json"
    )
    # Internal: the subprocesses this script starts.
    parser.add_argument(
        "--child",
        choices=["memory", "keras", "compiled", "jax"],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--variant", type=model, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.render:
        report = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(markdown(report))
        return 0
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    rounds = args.rounds or (4 if args.quick else 21)
    if args.child == "memory":
        print(json.dumps(memory_child(args.key, args.variant)))
        return 0
    if args.child == "compiled":
        print(json.dumps(compiled_child(args.variant, warmup, rounds)))
        return 0
    if args.child == "keras":
        print(json.dumps(keras_child(args.variant, warmup, rounds)))
        return 0
    if args.child == "jax":
        jax_child(args.variant, args.data)
        return 0

    # torch and torchvision first; TensorFlow only ever in a subprocess.
    import torch
    import torchvision

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "bench.py --device cuda: no CUDA device is available to torch "
            f"{torch.__version__} on this machine; nothing measured.",
            file=sys.stderr,
        )
        return 2

    models = [
        model(v)
        for v in (
            args.variants
            or ("b0,resnet50" if args.quick else "b0,b3,resnet50,mobilenet_v2_100")
        ).split(",")
    ]
    skip = set(filter(None, args.skip.split(",")))
    if args.quick:
        skip.add("compiled")  # inductor takes over a minute per model here
    report: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "mode": ("quick" if args.quick else "full") + f", {args.device}",
        "machine": machine(),
        "versions": {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "rounds": rounds,
        "warmup": warmup,
    }
    if args.device == "cuda":
        report["machine"]["gpu"] = torch.cuda.get_device_name()
        report["cuda"] = {}
        for m in models:
            if not m.library:
                why = f"cuda {m.name}: skipped, no PyTorch reference to compare with"
                print(why, file=sys.stderr)
                report.setdefault("skipped", []).append(why)
                continue
            print(f"cuda {m.name} ...", file=sys.stderr)
            report["cuda"][m.name] = bench_torch_cuda(m, warmup + 3, rounds)
            # After each model: a lease that ends mid-run keeps what was measured.
            write(report, args.out / "latest_cuda")
        name = "latest_cuda"
    else:
        # The compiler first: a fresh process on a machine not yet heated and
        # loaded by minutes of model benchmarks.
        if "compile" not in skip:
            print("archspec compile ...", file=sys.stderr)
            report["compile"] = bench_compile(3 if args.quick else 11)
        for m in models:
            if "torch" not in skip and m.library:
                print(f"torch {m.name} ...", file=sys.stderr)
                report.setdefault("torch", {})[m.name] = bench_torch_cpu(
                    m, warmup, rounds
                )
            if "memory" not in skip and m.library:
                print(f"torch memory {m.name} ...", file=sys.stderr)
                report.setdefault("torch_memory", {})[m.name] = bench_torch_memory(m)
            if "compiled" not in skip and m.library:
                print(f"torch.compile {m.name} ...", file=sys.stderr)
                report.setdefault("compiled", {})[m.name] = _variant_child(
                    "compiled", m, warmup, rounds
                )
            if "flax" not in skip and m.library:
                if not flax_source(m).exists():
                    why = (
                        f"flax {m.name}: skipped, {flax_source(m).relative_to(ROOT)} "
                        "does not exist"
                    )
                    print(why, file=sys.stderr)
                    report.setdefault("skipped", []).append(why)
                else:
                    print(f"flax {m.name} ...", file=sys.stderr)
                    try:
                        res = bench_flax(m, warmup, rounds)
                        report["versions"].update(res.pop("versions"))
                        report.setdefault("flax", {})[m.name] = res
                    except RuntimeError as exc:
                        why = f"flax {m.name}: skipped, {exc}"
                        print(why, file=sys.stderr)
                        report.setdefault("skipped", []).append(why)
            if "keras" not in skip and m.keras_app is not None:
                source = keras_source(m)
                if not source.exists():
                    why = (
                        f"keras {m.name}: skipped, {source.relative_to(ROOT)} does not exist "
                        f"(`archspec compile specs/{source.parent.name}.yaml --variant "
                        f"{m.variant} --backend keras` writes it)"
                    )
                    print(why, file=sys.stderr)
                    report.setdefault("skipped", []).append(why)
                    continue
                print(f"keras {m.name} ...", file=sys.stderr)
                try:
                    res = _variant_child("keras", m, warmup, rounds)
                except RuntimeError as exc:
                    last = str(exc).strip().splitlines()[-1]
                    why = f"keras {m.name}: skipped, the Keras child failed: {last}"
                    print(f"{why}\n{exc}", file=sys.stderr)
                    report.setdefault("skipped", []).append(why)
                    continue
                report["versions"].update(res.pop("versions"))
                report.setdefault("keras", {})[m.name] = res
        name = "latest"
    print(write(report, args.out / name))
    return 0


def write(report: dict, path: Path) -> str:
    """The report as path.json and path.md (its targets updated); the table."""
    report["targets"] = targets(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    path.with_suffix(".md").write_text(table)
    return table


if __name__ == "__main__":
    sys.exit(main())
