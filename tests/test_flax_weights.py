"""Flax weight files and `archspec profile -b flax`:

- `archspec weights convert` torch -> Flax -> torch gives back every tensor
  unchanged, and the Flax file holds the generated model's state paths and
  shapes (safetensors, Flax's layouts);
- that file, loaded into the generated Flax model, computes the PyTorch
  model's logits; `weights import --backend flax` does the same for
  torchvision's weights;
- a file that does not fit is exit 2 naming the tensor, never a traceback,
  and leaves no output behind;
- `archspec profile -b flax` measures a variant;
- the commands' backend choices are the registered backends.

MobileNetV2-0.35 (depthwise kernels, 1.7 M parameters) at 32 px keeps it quick.

Logits are held to the float32 bound of `archspec check`
(archspec.parity.tolerance: 5e-5), not 1e-5: with calibrated batch norm,
PyTorch's own float32 logits of this model are 6e-6 to 1e-5 off its float64
ones at 32 px, and the two frameworks' roundings add up (1e-5 to 1.5e-5
measured). A broken transfer is off by ~100%.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

import numpy as np  # noqa: E402
from helpers import MOBILENET_V2, run_archspec, run_here, variant  # noqa: E402

from archspec import backends, runtime  # noqa: E402
from archspec.parity.tolerance import TOLERANCE  # noqa: E402
from archspec.weights import random_state  # noqa: E402

NAME = "mobilenet_v2_035"
SIZE = 32
SELECT = ("--spec", str(MOBILENET_V2), "--variant", NAME)


def convert(source, src, target, dst, name=NAME):
    return run_archspec(
        "weights", "convert", "--spec", str(MOBILENET_V2), "--variant", name,
        "--from", source, str(src), "--to", target, str(dst),
    )  # fmt: skip


def flax_model(net, path):
    """The generated Flax model holding the weights of a Flax file, loaded as
    a user would: safetensors.numpy.load_file, runtime.set_flax_arrays. (Built
    abstractly first: eager initialisation takes half a minute.)"""
    model = backends.get("flax").runtime.build(net, random_state(net))
    runtime.set_flax_arrays(model, safetensors_numpy.load_file(path))
    return model


def relative_error(got, expected) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def calibrate(model, seed: int) -> None:
    """Random batch-norm scales and shifts, and running statistics from one
    training pass over 32 random images at SIZE (archspec.parity.randomize's
    two images leave the 1x1 maps of the last stages with two samples per
    channel: ill-conditioned statistics that amplify rounding tenfold)."""
    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.weight.uniform_(0.5, 1.5, generator=generator)
            m.bias.normal_(0, 0.1, generator=generator)
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: this batch's statistics
        model.train()
        model(torch.randn(32, 3, SIZE, SIZE, generator=generator))
    model.eval()


def assert_same_logits(got, expected) -> None:
    assert got.shape == expected.shape
    assert relative_error(got, expected) < TOLERANCE["float32"]
    # The images give different logits (the comparison is not of constants).
    assert relative_error(expected[0], expected[1]) > 0.1


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A calibrated PyTorch model, its .pt file and that file as Flax weights."""
    folder = tmp_path_factory.mktemp("flax_weights")
    net = variant(MOBILENET_V2, NAME)
    torch.manual_seed(0)
    model = runtime.torch_model(net)
    calibrate(model, seed=0)
    pt, flax = folder / "ours.pt", folder / "ours.safetensors"
    torch.save(model.state_dict(), pt)
    result = convert("torch", pt, "flax", flax)
    assert result.returncode == 0, result.stderr
    return net, model.eval(), pt, flax


def test_torch_flax_torch_round_trip(converted, tmp_path):
    net, model, _, flax = converted
    # The Flax file: the model's state paths, each of the model's shape.
    cls = getattr(runtime.import_generated(net, "flax"), net.class_name)
    abstract = nnx.eval_shape(lambda: cls())
    shapes = {
        ".".join(str(k) for k in path): tuple(v.get_value().shape)
        for path, v in nnx.to_flat_state(
            nnx.state(abstract, (nnx.Param, nnx.BatchStat))
        )
    }
    arrays = safetensors_numpy.load_file(flax)
    assert {k: a.shape for k, a in arrays.items()} == shapes
    # A depthwise kernel in lax's layout: (kh, kw, 1, channels).
    assert arrays["stages.1.0.depthwise.conv.kernel"].shape[:3] == (3, 3, 1)

    back = tmp_path / "back.pt"
    result = convert("flax", flax, "torch", back)
    assert result.returncode == 0, result.stderr
    assert f"{len(model.state_dict())} tensors" in result.stderr
    original = model.state_dict()
    returned = torch.load(back, weights_only=True)
    assert set(returned) == set(original)
    for key, tensor in original.items():
        if not key.endswith("num_batches_tracked"):  # a counter: not carried
            assert torch.equal(returned[key], tensor), key


def test_flax_file_gives_torch_logits(converted):
    net, model, _, flax = converted
    x = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE), np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = np.asarray(flax_model(net, flax)(jax.numpy.asarray(x.transpose(0, 2, 3, 1))))
    assert expected.shape == (2, 1000)
    assert_same_logits(got, expected)


def test_torchvision_weights_imported_for_flax(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    net = variant(MOBILENET_V2, NAME)
    torch.manual_seed(1)
    theirs = torchvision.models.mobilenet_v2(width_mult=0.35)
    calibrate(theirs, seed=1)
    given, out = tmp_path / "theirs.pt", tmp_path / "ours.safetensors"
    torch.save(theirs.state_dict(), given)
    result = run_archspec(
        "weights", "import", *SELECT, "--from", "torchvision", str(given),
        "--backend", "flax", "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    x = np.random.default_rng(1).standard_normal((2, 3, SIZE, SIZE), np.float32)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    got = np.asarray(flax_model(net, out)(jax.numpy.asarray(x.transpose(0, 2, 3, 1))))
    assert_same_logits(got, expected)


def test_a_file_that_does_not_fit_is_refused(converted, tmp_path):
    _, _, pt, flax = converted
    arrays = safetensors_numpy.load_file(flax)
    kernel = "stages.2.1.expand.conv.kernel"
    missing, misshaped = dict(arrays), dict(arrays)
    del missing[kernel]
    misshaped[kernel] = np.ascontiguousarray(arrays[kernel][..., :-1])
    cases = {
        "missing.safetensors": (missing, rf"missing Flax variable '{kernel}'"),
        "misshaped.safetensors": (misshaped, rf"Flax variable '{kernel}' has shape"),
    }
    for name, (found, message) in cases.items():
        bad = tmp_path / name
        safetensors_numpy.save_file(found, bad)
        out = tmp_path / f"{name}.pt"
        result = convert("flax", bad, "torch", out)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and str(bad) in result.stderr
        assert "Traceback" not in result.stderr
        assert not out.exists()
    # Another variant's weights, whichever way: exit 2 naming a tensor.
    for source, src, target, dst in (
        ("torch", pt, "flax", tmp_path / "b050.safetensors"),
        ("flax", flax, "torch", tmp_path / "b050.pt"),
    ):
        result = convert(source, src, target, dst, name="mobilenet_v2_050")
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert "'stages." in result.stderr and "has shape" in result.stderr
        assert not dst.exists()
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    # Flax weights are written as safetensors only.
    result = run_here(
        "weights", "convert", *SELECT, "--from", "torch", str(pt),
        "--to", "flax", str(tmp_path / "ours.npz"),
    )  # fmt: skip
    assert result.returncode == 2 and "*.safetensors" in result.stderr


def test_profile_flax(tmp_path):
    report = tmp_path / "profile.json"
    result = run_archspec(
        "profile", str(MOBILENET_V2), "--variant", NAME, "-b", "flax",
        "--size", str(SIZE), "--batch", "1", "--warmup", "1", "--repeats", "3",
        "--threads", "1", "--json", str(report),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "profiling (flax, float32 on cpu, batch 1)" in result.stderr
    (row,) = json.loads(report.read_text())["variants"]
    assert row["status"] == "ok" and row["runs"] == 3
    assert row["latency_min_ms"] <= row["latency_ms"] <= row["latency_max_ms"]
    assert 0 < row["latency_ms"] < 10_000
    assert row["images_per_s"] == pytest.approx(1e3 / row["latency_ms"])
    assert NAME in result.stdout and f"{row['latency_ms']:.1f}" in result.stdout
    machine = json.loads(report.read_text())["machine"]
    assert machine["jax_backend"] == "cpu" and machine["cpus_allowed"] == 1


class Fake:
    name = "fake"
    description = "a backend with no weight files and no profile"

    def emit(self, network):
        return {}


def test_backend_choices_are_the_registered_backends(tmp_path):
    from archspec.cli import BackendChoice

    assert BackendChoice().choices == tuple(backends.names())
    assert {"torch", "keras", "flax"} <= set(BackendChoice().choices)
    backends.register(Fake())
    try:
        assert "fake" in BackendChoice().choices
        # Chosen, but a backend without a runtime adapter: exit 2, no traceback.
        profiled = run_here(
            "profile", str(MOBILENET_V2), "--variant", NAME, "-b", "fake"
        )
        assert profiled.returncode == 2, profiled.stderr
        assert "'fake' has no runtime adapter" in profiled.stderr
        converted = run_here(
            "weights", "convert", *SELECT, "--from", "fake", str(MOBILENET_V2),
            "--to", "torch", str(tmp_path / "x.pt"),
        )  # fmt: skip
        assert converted.returncode == 2, converted.stderr
        assert "'fake'" in converted.stderr and "Traceback" not in converted.stderr
    finally:
        backends._registered.pop("fake")
    assert "fake" not in BackendChoice().choices
