"""What the tests share, in one place: paths, the CLI run as a user runs it,
one variant of every family, generated code and how "equal" is measured, the
Keras helpers and the training data. Test files import from here, never from
each other.

Nothing here imports torch, TensorFlow or Keras (or numpy) when this module is
imported: the functions that need them import them, after the test module has
loaded torch before TensorFlow (the other way round segfaults)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

from archspec import ir, pipeline
from archspec.expand import expand
from archspec.pipeline import load_spec, network
from archspec.runtime import import_generated  # noqa: F401  (for the tests)

# Paths -------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
B0 = SPECS / "b0.yaml"
B0_TV = SPECS / "b0_torchvision.yaml"
RESNET = SPECS / "resnet.yaml"
RESNET_KERAS = SPECS / "resnet_keras.yaml"
SE_RESNET = SPECS / "se_resnet.yaml"
MOBILENET_V2 = SPECS / "mobilenet_v2.yaml"
MOBILENET_V2_KERAS = SPECS / "mobilenet_v2_keras.yaml"
MNASNET = SPECS / "mnasnet.yaml"
MOBILENET_V1 = SPECS / "mobilenet_v1.yaml"
MOBILENET_V3 = SPECS / "mobilenet_v3.yaml"
MOBILENET_V3_KERAS = SPECS / "mobilenet_v3_keras.yaml"

# REFERENCE.md figures ------------------------------------------------------------

# REFERENCE.md, "Figures to match exactly": EfficientNet B0-B7's parameters.
PARAMS = [
    5_288_548,
    7_794_184,
    9_109_994,
    12_233_232,
    19_341_616,
    30_389_784,
    43_040_704,
    66_347_960,
]

# Fuzzing -------------------------------------------------------------------------

# Hypothesis draws the same examples every run (derandomize); the counts keep
# the suite within its budget. ARCHSPEC_EXAMPLES=4 draws four times as many.
EXAMPLES_SCALE = float(os.environ.get("ARCHSPEC_EXAMPLES", "1"))


def examples(n: int) -> int:
    """n examples, scaled by ARCHSPEC_EXAMPLES."""
    return max(1, round(n * EXAMPLES_SCALE))


# The CLI -------------------------------------------------------------------------


def run_archspec(
    *args: str, cwd: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "archspec", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def run_here(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`archspec ARGS` in this process, as archspec.cli.main runs it for
    `python -m archspec` (from `cwd` if given): a process per command would
    import TensorFlow again (10-20 s of each check). run_archspec keeps the
    CLI's own process covered."""
    import contextlib
    import io

    from archspec.cli import main

    out, err = io.StringIO(), io.StringIO()
    before = os.getcwd()
    os.chdir(cwd or before)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(
        ["archspec", *args], code, out.getvalue(), err.getvalue()
    )


def check_here(*args: str) -> subprocess.CompletedProcess:
    """`archspec check ARGS` in this process, from the project's root."""
    return run_here("check", *args, cwd=ROOT)


# Families ------------------------------------------------------------------------

# One variant of every family spec, for the tests that exercise what every
# generated model offers (fine-tuning, export, training): the variant with the
# fewest FLOPs, so a spec added to specs/ is covered without listing it here.

_cache: dict = {}


def smallest(spec) -> str:
    """The variant of `spec` with the fewest multiply-adds."""
    if spec not in _cache:
        loaded = pipeline.load_spec(spec)
        nets = [expand(loaded, v) for v in pipeline.select(loaded)]
        _cache[spec] = min(nets, key=lambda net: net.flops()).source.variant
    return _cache[spec]


# Specs whose only variants are large (NASNet-A Large, PNASNet-5 Large: 24
# billion multiply-adds at 331 px, 88 million parameters) have tests of their
# own (test_nasnet.py); the every-family tests take their small sibling,
# specs/nasnet_keras.yaml's NASNet-A Mobile, whose generated code takes the
# same paths (cells, ops as classes, same-padded pools).
LARGE_ONLY = {"nasnet", "pnasnet"}
# EfficientNet-Lite generates b0.yaml's code paths (MBConv, TensorFlow "same"
# padding) with ReLU6 and no squeeze-excitation: its own file
# (test_efficientnet_lite.py) covers it, and the every-family tests' budget
# goes to families whose generated code differs.
SAME_PATHS_AS_B0 = {"efficientnet_lite"}
FAMILIES = sorted(
    s for s in SPECS.glob("*.yaml") if s.stem not in LARGE_ONLY | SAME_PATHS_AS_B0
)
IDS = [spec.stem for spec in FAMILIES]


def torch_before_tensorflow() -> None:
    """torch (and triton) before TensorFlow in a test process that may use
    both: torch's CUDA build segfaults loading triton after TensorFlow."""
    import importlib
    import importlib.util
    import os

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    for first in ("torch", "triton", "torchvision"):
        if importlib.util.find_spec(first) is not None:
            importlib.import_module(first)


# Generated code ------------------------------------------------------------------

# Helpers for tests that run generated code: compile a variant and import it.

_loaded: dict = {}


def variant(spec: Path, phi: float | str) -> ir.Network:
    """One network of a spec: by phi (compound rules) or by variant name."""
    if spec not in _loaded:
        _loaded[spec] = load_spec(spec)
    if isinstance(phi, str):
        return network(_loaded[spec], variant=phi)
    return network(_loaded[spec], phi)


def relative_error(a, b) -> float:
    """max |a - b| / max |b|, in float64."""
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max())


# "Equal", in two parts, both measured against the reference run in float64
# (the truth). The function: run in float64 too, the generated model is the
# truth to float64 rounding, which the network amplifies at most as much as it
# amplifies float32's (so 1e-6 of the reference's float32 error: float64's
# epsilon is 2e-9 of float32's), while a wrong padding or weight is off by
# 1e-3 and more. The arithmetic: in float32, the generated model is about as
# far from the truth as the reference's own float32 output is (within 4x: two
# summation orders' errors have been measured 2.6x apart on one machine).
ROUNDING_FACTOR, ROUNDING_FLOOR = 4.0, 1e-6
FLOAT64_FACTOR, FLOAT64_FLOOR = 1e-6, 1e-12


def assert_rounding(ours_32, ours_64, theirs_32, truth) -> None:
    """Outputs of one input: ours in float32 and float64, the reference's in
    float32, and the reference's in float64 (the truth)."""
    assert ours_32.shape == ours_64.shape == truth.shape
    own = relative_error(theirs_32, truth)
    # A network that amplifies float32 rounding this much (random weights
    # calibrated on too few pixels) would make any comparison pass.
    assert own < 1e-3, ("the reference is ill-conditioned", own)
    exact = relative_error(ours_64, truth)
    assert exact <= FLOAT64_FACTOR * own + FLOAT64_FLOOR, ("float64", exact, own)
    error = relative_error(ours_32, truth)
    assert error <= ROUNDING_FACTOR * own + ROUNDING_FLOOR, ("float32", error, own)


def assert_float32_rounding(ours, reference, x) -> None:
    """`ours` computes `reference`'s function on x, exactly in float64 and to
    float32 rounding in float32; both models are left in float32 (pass copies
    if their weights must stay untouched)."""
    import copy

    import torch

    with torch.no_grad():
        ours_32, theirs_32 = ours.eval()(x), reference.eval()(x)
        truth = copy.deepcopy(reference).double()(x.double())
        ours_64 = copy.deepcopy(ours).double()(x.double())
    assert_rounding(ours_32, ours_64, theirs_32, truth)
    # The weights carry signal: two inputs give clearly different logits.
    assert relative_error(truth[0], truth[1]) > 1e-2


def timm_weights_imported(
    spec: Path,
    name: str,
    size: int,
    folder: Path,
    *,
    timm_name: str | None = None,
    suffix: str = ".pt",
):
    """timm's `timm_name` (default: the variant's `name`) with calibrated random
    weights, and its state dict as `archspec weights import --from timm` writes
    it for the spec's variant (the command run as a process, and checked to
    succeed). suffix ".safetensors": both files in the format timm's hub ships."""
    import timm
    import torch
    from safetensors.torch import load_file, save_file

    from archspec.parity import randomize

    theirs = timm.create_model(timm_name or name)
    randomize(theirs, size, seed=1)
    given, out = folder / f"theirs{suffix}", folder / f"ours{suffix}"
    if suffix == ".safetensors":
        save_file(theirs.state_dict(), given)
    else:
        torch.save(theirs.state_dict(), given)
    result = run_archspec(
        "weights", "import", "--spec", str(spec), "--variant", name,
        "--from", "timm", str(given), "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    state = (
        load_file(out)
        if suffix == ".safetensors"
        else torch.load(out, weights_only=True)
    )
    return theirs.eval(), state


# Keras ---------------------------------------------------------------------------

TOLERANCE = 1e-5  # max|ours - reference| / max|reference|


def import_keras():
    """Keras for a test module, as tests/test_keras_backend.py sets it up: on
    TensorFlow (unless KERAS_BACKEND says otherwise), after torch and triton;
    skips the module where Keras is missing."""
    import pytest

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    torch_before_tensorflow()
    return pytest.importorskip("keras")


def emit(net: ir.Network, folder: Path) -> Path:
    from archspec_keras import BACKEND

    ((name, source),) = BACKEND.emit(net).items()
    path = folder / name
    path.write_text(source, encoding="utf-8")
    return path


def load_module(path: Path):
    """Import a generated file under a unique module name."""
    spec = importlib.util.spec_from_file_location(
        f"_generated_{path.stem}_{time.monotonic_ns()}", path
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trainable(model) -> int:
    import numpy as np

    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def numpy(x):
    import keras

    return keras.ops.convert_to_numpy(x)


def array_relative_error(a, b) -> float:
    """max |a - b| / max |b| of numpy arrays (relative_error is torch's)."""
    import numpy as np

    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def images(rng, n: int, size: int):
    """n RGB images in [0, 255]: a colour of their own, a coarse random pattern
    and pixel noise. (Pure noise images have near-identical statistics, so a
    pooled network output hardly depends on which one it sees.)"""
    import numpy as np

    colour = rng.uniform(40, 215, (n, 1, 1, 3))
    coarse = rng.normal(0, 30, (n, 8, 8, 3))
    coarse = np.repeat(np.repeat(coarse, -(-size // 8), 1), -(-size // 8), 2)
    x = colour + coarse[:, :size, :size] + rng.normal(0, 10, (n, size, size, 3))
    return np.clip(x, 0, 255).astype("float32")


def draw_norms(model, rng, *, statistics: bool) -> None:
    """A Keras model's BN scales (0.5-1.5), shifts and biases (N(0, 0.1)) drawn
    at random, and with `statistics` its BN moving variances and means so."""
    scales = ("gamma", "moving_variance") if statistics else ("gamma",)
    shifts = ("beta", "bias", "moving_mean") if statistics else ("beta", "bias")
    for w in model.weights:
        if w.path.endswith(scales):
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype(w.dtype))
        elif w.path.endswith(shifts):
            w.assign(rng.normal(0.0, 0.1, w.shape).astype(w.dtype))


def calibrate(model, rng, x, widen: float = 0.0) -> None:
    """Random weights whose signal survives 50 blocks (archspec.parity's idea).

    Biases, BN scales and shifts are drawn at random; the BN moving statistics
    are the batch statistics of `x` (one training-mode pass, momentum 0), then
    perturbed, as random as the rest. Statistics drawn blindly make the logits
    of a deep network vanish or blow up, and the comparison prove nothing.
    `widen` raises every variance by that share of its mean over channels (a
    channel that hardly varies over a few small images amplifies rounding).
    """
    import keras
    import numpy as np

    norms = [n for n in model.layers if isinstance(n, keras.layers.BatchNormalization)]
    draw_norms(model, rng, statistics=False)
    momentum = [n.momentum for n in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, value in zip(norms, momentum, strict=True):
        layer.momentum = value
        mean, variance = (numpy(v) for v in (layer.moving_mean, layer.moving_variance))
        variance = variance + widen * variance.mean()
        shape = mean.shape
        layer.moving_mean.assign(
            mean + 0.1 * np.sqrt(variance) * rng.normal(size=shape)
        )
        layer.moving_variance.assign(variance * rng.uniform(0.8, 1.25, shape))


# Training data -------------------------------------------------------------------

# A real dataset small enough for CI: scikit-learn's handwritten digits
# (1,797 8x8 grey images, shipped with the package, no download), upsampled.
#
# Used by the training tests of both backends: classes 0-4 to train a model
# from scratch, 5-9 for transfer learning onto a frozen backbone.

SIZE = 32  # 8x8 digits, upsampled 4x (nearest): ResNet's maps end at 1x1


def digits(classes: range, size: int = SIZE):
    """(x_train, y_train, x_test, y_test) of the digits in `classes`: NHWC
    float32 images with values in 0-1 (3 channels), labels from 0, a fixed
    stratified 3:1 split."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    keep = np.isin(data.target, list(classes))
    images = data.images[keep].astype("float32") / 16.0
    labels = (data.target[keep] - classes.start).astype("int64")
    images = images.repeat(size // 8, axis=1).repeat(size // 8, axis=2)
    images = np.repeat(images[..., None], 3, axis=-1)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, random_state=0, stratify=labels
    )
    return x_train, y_train, x_test, y_test
