"""Cross-backend parity: weights move between the generated PyTorch and Keras
models, and the two compute the same function (issue: one spec, two frameworks)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")  # before TensorFlow, always
keras = pytest.importorskip("keras")

import numpy as np  # noqa: E402
from conftest import B0, run_archspec  # noqa: E402
from generated_code import variant  # noqa: E402

from archspec import runtime  # noqa: E402
from archspec.errors import SpecError  # noqa: E402
from archspec.parity import TOLERANCE, Pair, randomize  # noqa: E402
from archspec.weights import keras_to_torch, torch_to_keras  # noqa: E402

ROW = re.compile(
    r"^(EfficientNet-B\d)\s+(\d+): (\S+)\s+(\d+): (\S+)\s+(\S+)\s+(\S+)\s+(ok|FAIL.*)$",
    re.M,
)


def test_check_all_published_variants_float32_cpu():
    result = run_archspec("check", "specs/b0.yaml", "--phi", "0-7")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    rows = ROW.findall(result.stdout)
    assert [r[0] for r in rows] == [f"EfficientNet-B{phi}" for phi in range(8)]
    for title, size, even, odd_size, odd, *_ in rows:
        assert int(size) % 2 == 0 and int(odd_size) % 2 == 1, (
            title
        )  # both padding cases
        assert (
            float(even) <= TOLERANCE["float32"] and float(odd) <= TOLERANCE["float32"]
        ), title
    # Train mode and input gradients are checked for B0, in float64: they
    # agree to float64 rounding (anything rounded to float32 on the way, such
    # as Keras's constants, would show at 1e-8).
    _, _, _, _, _, train, grad, _ = rows[0]
    assert float(train) <= 1e-12 and float(grad) <= 1e-12


def test_check_names_the_first_diverging_stage():
    result = run_archspec(
        "check", "specs/b0.yaml", "--phi", "0", "--corrupt", "stages_3_0_depthwise_conv"
    )
    assert result.returncode == 1
    assert "FAIL: diverges at stages.3" in result.stdout
    # Stages before the broken one still agree to rounding.
    for where in ("stem", "stages.0", "stages.1", "stages.2"):
        line = next(
            line for line in result.stdout.splitlines() if line.split()[:1] == [where]
        )
        assert float(line.split()[2]) <= TOLERANCE["float32"], line


def test_torchvision_flavour_is_also_one_function(tmp_path):
    """Everything `check` compares, for a spec that takes normalised input
    (its input gradients were once fed 0-255 images and differed by 4.6)."""
    pair = Pair.build(variant(B0.parent / "b0_torchvision.yaml", 0), tmp_path)
    for result in (
        pair.compare(224),
        pair.compare(225),
        pair.compare(224, train=True),
        pair.compare_input_gradients(224),
    ):
        assert result.ok, (result.mode, result.rows)


def test_bfloat16_stays_within_its_tolerance(tmp_path):
    pair = Pair.build(variant(B0, 0), tmp_path, dtype="bfloat16")
    result = pair.compare(224)
    assert result.tolerance == TOLERANCE["bfloat16"]
    assert result.logits.max_rel <= TOLERANCE["bfloat16"]
    # ...and bfloat16 really ran: it is far from float32 rounding.
    assert result.logits.max_rel > TOLERANCE["float32"]


@pytest.fixture(scope="module")
def b0_weights(tmp_path_factory):
    net = variant(B0, 0)
    model = runtime.torch_model(net, tmp_path_factory.mktemp("torch")).eval()
    randomize(model, 224)
    path = tmp_path_factory.mktemp("weights") / "b0.pt"
    torch.save(model.state_dict(), path)
    return net, model, path


def convert_weights(phi: int, source: str, src: Path, target: str, dst: Path):
    """`archspec weights convert` for a variant of specs/b0.yaml, as a process."""
    return run_archspec(
        "weights", "convert", "--spec", "specs/b0.yaml", "--phi", str(phi),
        "--from", source, str(src), "--to", target, str(dst),
    )  # fmt: skip


def test_weights_convert_round_trip(b0_weights, tmp_path):
    net, model, pt = b0_weights
    h5, back = tmp_path / "b0.weights.h5", tmp_path / "back.pt"
    there = convert_weights(0, "torch", pt, "keras", h5)
    assert there.returncode == 0, there.stderr
    again = convert_weights(0, "keras", h5, "torch", back)
    assert again.returncode == 0, again.stderr
    original, returned = model.state_dict(), torch.load(back, weights_only=True)
    assert set(original) == set(returned)
    for key, tensor in original.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(tensor, returned[key]), key
    # The Keras file computes what the torch model computes.
    keras_model = runtime.keras_model(net, tmp_path)
    keras_model.load_weights(h5)
    x = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = keras.ops.convert_to_numpy(keras_model(x))
    assert np.abs(got - expected).max() / np.abs(expected).max() <= TOLERANCE["float32"]


def test_weights_for_another_variant_are_refused(b0_weights, tmp_path):
    _, _, pt = b0_weights
    out = tmp_path / "b1.weights.h5"
    result = convert_weights(1, "torch", pt, "keras", out)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert re.search(
        r"missing tensor 'stages\.\d\.\d\.\w+\.\w+\.weight'|has shape", result.stderr
    )
    assert not out.exists() and not list(tmp_path.glob(".*"))


def test_transfer_names_a_missing_or_misshaped_tensor(b0_weights):
    net, model, _ = b0_weights
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    layers = torch_to_keras(net, state)
    assert keras_to_torch(net, layers).keys() == state.keys()
    broken = dict(state)
    broken["stages.1.0.se.reduce.weight"] = broken["stages.1.0.se.reduce.weight"][:-1]
    with pytest.raises(
        SpecError,
        match=r"'stages\.1\.0\.se\.reduce\.weight' has shape \(3, 96, 1, 1\); expected \(4, 96, 1, 1\)",
    ):
        torch_to_keras(net, broken)
    del broken["stages.1.0.se.reduce.weight"]
    with pytest.raises(
        SpecError, match=r"missing tensor 'stages\.1\.0\.se\.reduce\.weight'"
    ):
        torch_to_keras(net, broken)
    with pytest.raises(SpecError, match="unexpected tensors"):
        torch_to_keras(net, {**state, "extra.weight": state["classifier.weight"]})


@pytest.mark.gpu
def test_check_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the GPU path runs where the device tool lends one")
    for dtype in ("float32", "bfloat16"):
        result = run_archspec(
            "check",
            "specs/b0.yaml",
            "--phi",
            "0,3",
            "--device",
            "cuda",
            "--dtype",
            dtype,
        )
        assert result.returncode == 0, result.stdout[-3000:]


FAMILY_ROW = re.compile(
    r"^(\S.*?)\s+(\d+): (\S+)\s+(\d+): (\S+)\s+(\S+)\s+(\S+)\s+(ok|FAIL.*)$", re.M
)
# `archspec check` for every variant of every family but EfficientNet (above):
# one variant of each spec at its native size (with train mode and input
# gradients), the others at a small size to keep the suite inside its budget.
MOBILENET_V2 = ",".join(
    f"mobilenet_v2_{w}" for w in ("035", "050", "075", "130", "140")
)
FAMILY_CHECKS = [
    ("specs/mobilenet_v2.yaml", "mobilenet_v2_100", None),
    ("specs/mobilenet_v2.yaml", MOBILENET_V2, "64"),
    ("specs/mobilenet_v2_keras.yaml", "mobilenet_v2_100", None),
    ("specs/mobilenet_v2_keras.yaml", MOBILENET_V2, "64"),
    ("specs/mobilenet_v1.yaml", "mobilenet_v1_100", None),
    (
        "specs/mobilenet_v1.yaml",
        "mobilenet_v1_025,mobilenet_v1_050,mobilenet_v1_075",
        "64",
    ),
    ("specs/mobilenet_v3.yaml", "mobilenet_v3_large_100", None),
    (
        "specs/mobilenet_v3.yaml",
        "mobilenet_v3_large_075,mobilenet_v3_small_075,mobilenet_v3_small_100",
        "64",
    ),
    ("specs/mobilenet_v3_keras.yaml", "mobilenet_v3_large_100", None),
    (
        "specs/mobilenet_v3_keras.yaml",
        "mobilenet_v3_large_075,mobilenet_v3_large_minimal_100,"
        "mobilenet_v3_small_075,mobilenet_v3_small_100,mobilenet_v3_small_minimal_100",
        "64",
    ),
    ("specs/mnasnet.yaml", "mnasnet1_0", None),
    ("specs/mnasnet.yaml", "mnasnet0_5,mnasnet0_75,mnasnet1_3", "64"),
    ("specs/resnet.yaml", "resnet50", None),
    (
        "specs/resnet.yaml",
        "resnet18,resnet34,resnet101,resnet152,wide_resnet50_2,wide_resnet101_2",
        "64",
    ),
    ("specs/resnet_keras.yaml", "resnet50", None),
    ("specs/resnet_keras.yaml", "resnet101,resnet152", "64"),
    ("specs/se_resnet.yaml", "seresnet50", None),
    ("specs/se_resnet.yaml", "seresnet18,seresnet34,seresnet101,seresnet152", "64"),
    # EfficientNetV2's random weights lose their signal below ~128 px (its deep
    # stages see too few pixels to calibrate batch norm: M diverges at 96), and
    # 384-480 px costs minutes: all three at 128, S with train mode and
    # gradients (S at its native 384 was checked by hand: 2.4e-6).
    (
        "specs/efficientnet_v2.yaml",
        "efficientnet_v2_s,efficientnet_v2_m,efficientnet_v2_l",
        "128",
    ),
    ("specs/efficientnet_v2_keras.yaml", "efficientnet_v2_b0", None),
    (
        "specs/efficientnet_v2_keras.yaml",
        "efficientnet_v2_b1,efficientnet_v2_b2,efficientnet_v2_b3",
        "64",
    ),
    (
        "specs/efficientnet_v2_keras.yaml",
        "efficientnet_v2_s,efficientnet_v2_m,efficientnet_v2_l",
        "128",
    ),
    ("specs/densenet.yaml", "densenet121", None),
    ("specs/densenet.yaml", "densenet161,densenet169,densenet201", "64"),
    ("specs/densenet_keras.yaml", "densenet121,densenet169,densenet201", "64"),
]


@pytest.mark.parametrize(
    ("spec", "variants", "size"),
    FAMILY_CHECKS,
    ids=[f"{s}:{v}" for s, v, _ in FAMILY_CHECKS],
)
def test_check_every_family_variant(spec, variants, size):
    args = ["check", spec, "--variant", variants] + (["--size", size] if size else [])
    result = run_archspec(*args)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    rows = FAMILY_ROW.findall(result.stdout)
    assert len(rows) == len(variants.split(","))
    # "ok": within the tolerance, the larger of TOLERANCE and ROUNDING_FACTOR
    # times torch's own float32 error against float64 (the table prints it).
    for title, even_size, _, odd_size, _, _, _, status in rows:
        assert status == "ok", title
        assert int(even_size) % 2 == 0 and int(odd_size) % 2 == 1, title
    # The first variant's training mode and input gradients, in float64.
    _, _, _, _, _, train, grad, _ = rows[0]
    assert float(train) <= TOLERANCE["float64"] and float(grad) <= TOLERANCE["float64"]
    # Stage boundaries are compared too: the stem (after its max pool) and
    # each of the four stages appear in the per-variant table.
    for where in ("stem", "stages.0", "stages.3"):
        assert re.search(rf"^  {re.escape(where)}\s", result.stdout, re.M), where


@pytest.mark.parametrize(
    "spec",
    [
        "specs/mobilenet_v1.yaml",
        "specs/mobilenet_v2.yaml",
        "specs/mobilenet_v3_keras.yaml",
    ],
)
def test_check_a_multiplier_no_one_published(spec):
    """`--width 0.6`: a width multiplier outside the spec's table compiles in
    both backends and passes the cross-backend check."""
    result = run_archspec("check", spec, "--width", "0.6", "--size", "64")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    (row,) = FAMILY_ROW.findall(result.stdout)
    assert "width=0.6" in row[0]
    assert row[-1] == "ok"
