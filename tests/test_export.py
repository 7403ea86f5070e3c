"""Deployment (`archspec export`, archspec/export.py): each format written by
the export command's code and then run here, independently of the command's
own check, in the runtime that serves it: ONNX in onnxruntime and torch.export
programs against the float64 PyTorch model, SavedModels reloaded by
TensorFlow, TFLite in the LiteRT interpreter with no TRANSPOSE op; int8 TFLite
of EfficientNet-Lite0 trained on digits. The command's own paths (bounds,
errors, nothing written on failure) run through the CLI.

The float formats run on the families' smallest variants at 64x64: the torch
formats on ONNX's specs (every block kind), the Keras ones on SAVED_MODEL's
and TFLITE's. Every format on every spec is benchmarks/exports.py (by hand;
results in benchmarks/results/export/latest.md)."""

from __future__ import annotations

import copy
import re

import pytest
from helpers import (
    FAMILIES,
    IDS,
    ROUNDING_FACTOR,
    ROUNDING_FLOOR,
    SPECS,
    relative_error,
    run_here,
    smallest,
    torch_before_tensorflow,
)

torch_before_tensorflow()
torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # torch.onnx.export's exporter


import archspec  # noqa: E402
from archspec import export, pipeline  # noqa: E402
from archspec.images import digits  # noqa: E402
from archspec.parity import randomize  # noqa: E402
from archspec.render import paddings  # noqa: E402

SIZE = 64


def size_for(spec) -> int:
    """EfficientNetV2-S needs 128 px to calibrate its deep stages: at 64 its
    float32 logits are 3e-3 off its own float64 ones (1e-6 at 128)."""
    return 128 if spec.stem == "efficientnet_v2" else SIZE


def network(spec):
    return pipeline.network(pipeline.load_spec(spec), variant=smallest(spec))


def images(net, batch: int, seed: int = 0, size: int = SIZE) -> np.ndarray:
    scale = 255 if net.input.preprocess else 1
    rng = np.random.default_rng(seed)
    return (rng.random((batch, 3, size, size)) * scale).astype("float32")


# Between them, every block kind, both padding rules, every activation and
# both weight conventions; exporting a family's other spec repeats its layers.
# Not b0 (21 s): efficientnet_v2_keras has its MBConv with squeeze-excitation,
# SiLU, TensorFlow's "same" padding (the zero-padded stride-2 kernels that
# make export._onnx run onnxruntime unoptimized), Keras's conventions and
# preprocessing inside the model.
# NASNet-A Mobile: cells reading the two previous cells, separable
# convolutions, same-padded pools without the padding in their averages.
ONNX = [
    "densenet",
    "efficientnet_v2_keras",
    "mobilenet_v1",
    "mobilenet_v3",
    "nasnet_keras",
    "resnet",
    "resnet_v2",
]
# The Keras route on three specs (between them pre-activation blocks written
# in the spec, built-in inverted residuals, squeeze-excite, hard-swish, both
# padding rules): the mobile ones to TFLite (which goes through a
# SavedModel), one more to a SavedModel TensorFlow reloads at two batch
# sizes. The Keras layers are the same for every family; the torch route
# above covers every block kind. (resnet_keras's SavedModel, 34 s, was cut:
# its built-in bottleneck is Conv2D, BatchNormalization, Add and ReLU layers
# that resnet_v2_keras's SavedModel and the TFLite models hold too.)
SAVED_MODEL = ["resnet_v2_keras"]
TFLITE = ["mobilenet_v3_keras", "mnasnet"]
# torch.export traces the same graph as ONNX's exporter: three suffice.
TORCH_EXPORT = ["mobilenet_v1", "mobilenet_v3", "resnet_v2"]


def families(ids: list[str]) -> list:
    return [
        pytest.param(s, id=i) for s, i in zip(FAMILIES, IDS, strict=True) if i in ids
    ]


def weights(net, size: int, folder, seed: int = 0):
    """The generated PyTorch model with calibrated random weights, and those
    weights as a safetensors file (what `--weights` takes)."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = archspec.create_model(net).eval()
    randomize(model, size, seed=seed)
    path = folder / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return model, path


def assert_float32_of(got, model, x) -> None:
    """got is the model's output on x to float32 rounding: no further from
    the float64 model than the float32 model itself is."""
    with torch.no_grad():
        ours = model(torch.from_numpy(x))
        truth = copy.deepcopy(model).double()(torch.from_numpy(x).double())
    error, own = (
        relative_error(torch.as_tensor(got), truth),
        relative_error(ours, truth),
    )
    assert error <= ROUNDING_FACTOR * own + ROUNDING_FLOOR, (error, own)
    assert relative_error(truth[0], truth[1]) > 1e-3  # the input matters


@pytest.mark.parametrize("spec", families(ONNX))
def test_onnx_and_torch_export_run_in_their_runtimes(spec, tmp_path):
    """ONNX with a dynamic batch, run at another batch size in onnxruntime;
    torch.export (on TORCH_EXPORT) at a fixed batch, loaded back: both the
    model to float32 rounding."""
    net, size = network(spec), size_for(spec)
    model, given = weights(net, size, tmp_path)
    path = tmp_path / f"{net.module}.onnx"
    made = export.export(net, given, "onnx", path, batch=None, size=size)
    assert made.ok and made.batches == (1, 3) and path.is_file()
    options = ort.SessionOptions()
    if "same" in paddings(net, "onnx").used:  # see export._onnx
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"]
    )
    x = images(net, 3, seed=1, size=size)
    (got,) = session.run(["logits"], {"images": x})
    assert_float32_of(got, model, x)

    if spec.stem not in TORCH_EXPORT:
        return
    path = tmp_path / f"{net.module}.pt2"
    made = export.export(net, given, "torch_export", path, batch=2, size=size)
    assert made.ok and made.ops.get("aten.conv2d.default", 0) > 0
    x = images(net, 2, seed=2, size=size)
    with torch.no_grad():
        got = torch.export.load(path).module()(torch.from_numpy(x))
    assert_float32_of(got, model, x)


def keras_model(net, given):
    """The generated Keras model with the weights file's tensors."""
    return export.source_model(net, "saved_model", export.load_state(net, given))


def keras_sensitivity(model, x) -> float:
    """How far a one-ulp change of the input moves the logits: the effect
    oneDNN's summation order has (large with deep EfficientNetV2-S)."""
    expected = model(x, training=False).numpy()
    nudged = model(x * np.float32(1 + 2**-23), training=False).numpy()
    return relative_error(torch.from_numpy(nudged), torch.from_numpy(expected))


@pytest.mark.parametrize("spec", families(SAVED_MODEL))
def test_keras_saved_model_export_reloads(spec, tmp_path):
    tf = pytest.importorskip("tensorflow")
    net = network(spec)
    # Calibrated random weights through the PyTorch model: with Keras's
    # initial ones a deep network's logits reach 1e5, where float32 summation
    # order alone moves them by 1e-3. Both sides are float32 here, so 64 px
    # serves EfficientNetV2-S too (see size_for).
    _, given = weights(net, SIZE, tmp_path)
    path = tmp_path / "saved_model"
    made = export.export(net, given, "saved_model", path, batch=None, size=SIZE)
    assert made.ok and (path / "saved_model.pb").is_file()
    model = keras_model(net, given)
    reloaded = tf.saved_model.load(str(path))
    x = images(net, 2, size=SIZE).transpose(0, 2, 3, 1)
    expected = model(x, training=False).numpy()
    got = reloaded.serve(tf.constant(x)).numpy()
    assert got.shape == expected.shape == (2, net.classifier.out_features)
    tolerance = max(1e-5, ROUNDING_FACTOR * keras_sensitivity(model, x))
    assert (
        relative_error(torch.from_numpy(got), torch.from_numpy(expected)) <= tolerance
    )
    assert reloaded.serve(tf.constant(x[:1])).shape == (1, net.classifier.out_features)


@pytest.mark.parametrize("spec", families(TFLITE))
def test_tflite_has_no_transpose_and_runs_in_litert(spec, tmp_path):
    """Float TFLite from the NHWC Keras model: batch norm folded, no TRANSPOSE,
    and the LiteRT interpreter gives the Keras model's logits."""
    pytest.importorskip("ai_edge_litert")
    net = network(spec)
    _, given = weights(net, SIZE, tmp_path)
    path = tmp_path / f"{net.module}.tflite"
    made = export.export(net, given, "tflite", path, batch=1, size=SIZE)
    assert made.ok
    ops = export.tflite_ops(path.read_bytes())
    assert ops == made.ops and "TRANSPOSE" not in ops
    assert "RSQRT" not in ops  # batch norm folded into the convolutions
    model = keras_model(net, given)
    x = images(net, 1, seed=3, size=SIZE).transpose(0, 2, 3, 1)
    got = export.LiteRT(path.read_bytes())(x)
    expected = model(x, training=False).numpy()
    tolerance = max(1e-5, ROUNDING_FACTOR * keras_sensitivity(model, x))
    assert (
        relative_error(torch.from_numpy(got), torch.from_numpy(expected)) <= tolerance
    )


LITE = SPECS / "efficientnet_lite.yaml"
INT8_SIZE, INT8_STEPS = 32, 100


def test_int8_tflite_of_efficientnet_lite_trained_on_digits(tmp_path):
    """EfficientNet-Lite0 trained from scratch on digits at 32 px (labels 0-9
    among its 1,000 logits), exported to int8 TFLite calibrated on digits: int8
    input and output, no TRANSPOSE, the float model's top-1 kept on the
    held-out calibration images, test accuracy within 5 points of the float
    model's. (Measured: float 0.86, int8 0.85, agreement 1.0; 40 s of training
    on one core.)"""
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("sklearn")
    from safetensors.torch import save_file

    net = pipeline.network(pipeline.load_spec(LITE), variant="efficientnet_lite0")
    pixels, labels = digits(INT8_SIZE)
    x = export.normalise(net, pixels)
    images_t = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    labels_t = torch.from_numpy(labels)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, test = order[:1400], order[1400:]
    torch.manual_seed(0)
    model = archspec.create_model(net).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(INT8_STEPS):
        batch = torch.from_numpy(rng.choice(train, 32, replace=False))
        loss = torch.nn.functional.cross_entropy(
            model(images_t[batch]), labels_t[batch]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(images_t[test]).argmax(1)
    float_accuracy = float((predicted == labels_t[test]).float().mean())
    given = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, given)
    path = tmp_path / "lite0_int8.tflite"
    made = export.export(
        net, given, "tflite", path, size=INT8_SIZE, int8=True, calibration="digits"
    )
    assert made.ok and made.agreement >= export.INT8_AGREEMENT
    assert made.held_out == export.CALIBRATION_IMAGES
    assert "TRANSPOSE" not in made.ops and "DEQUANTIZE" not in made.ops
    lite = export.LiteRT(path.read_bytes())
    assert lite.input["dtype"] == np.int8 and lite.output["dtype"] == np.int8
    accuracy = float((export.top1(lite, x[test], 1) == labels[test]).mean())
    print(f"digits: float {float_accuracy:.3f}, int8 {accuracy:.3f}")
    assert float_accuracy >= 0.6  # chance: 0.1
    assert abs(accuracy - float_accuracy) <= 0.05


def test_export_command(tmp_path):
    """The command end to end, from a Keras .weights.h5: TFLite written and its
    op counts reported; then what it refuses (exit 2, nothing written) and a
    file outside the bound (exit 1, nothing written)."""
    pytest.importorskip("ai_edge_litert")
    spec, variant = SPECS / "mobilenet_v1.yaml", "mobilenet_v1_025"
    net = pipeline.network(pipeline.load_spec(spec), variant=variant)
    _, given = weights(net, SIZE, tmp_path)
    keras_weights = tmp_path / "v1.weights.h5"
    assert run_here(
        "weights", "convert", "--spec", str(spec), "--variant", variant,
        "--from", "torch", str(given), "--to", "keras", str(keras_weights),
    ).returncode == 0  # fmt: skip
    out = tmp_path / "v1.tflite"
    args = ["export", str(spec), "--variant", variant, "--size", str(SIZE)]
    done = run_here(
        *args, "--weights", str(keras_weights), "--format", "tflite", "-o", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert "TRANSPOSE 0" in done.stdout and out.is_file()
    counts = dict(
        item.rsplit(" ", 1)
        for item in done.stdout.split("ops: ")[1].split(";")[0].split(", ")
    )
    assert {k: int(v) for k, v in counts.items()} == export.tflite_ops(out.read_bytes())

    def refused(*extra: str, weights_file=given) -> str:
        target = tmp_path / "refused.onnx"
        done = run_here(
            *args, "--weights", str(weights_file), *extra, "-o", str(target)
        )
        assert done.returncode == 2 and not target.exists(), done.stderr
        return done.stderr

    other = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    state = archspec.create_model(spec, "mobilenet_v1_050").state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, other)
    assert "shape" in refused("--format", "onnx", weights_file=other)
    assert "nosuch" in refused("--format", "onnx", "--variant", "nosuch")
    assert "--calibration" in refused("--format", "tflite", "--int8")
    assert "--int8 is for --format tflite" in refused(
        "--format", "onnx", "--int8", "--calibration", "digits"
    )
    assert "dynamic" in refused("--format", "onnx", "--batch", "0")
    assert "not a" in refused("--format", "onnx", weights_file=SPECS / "b0.yaml")


def test_export_takes_flax_weights(tmp_path):
    """A Flax weight file (`weights convert --to flax`, told from PyTorch's
    safetensors by its metadata) exports the same model as the PyTorch
    weights it came from."""
    from archspec.convert import convert_weights

    net = pipeline.network(
        pipeline.load_spec(SPECS / "mobilenet_v1.yaml"), variant="mobilenet_v1_025"
    )
    model, given = weights(net, SIZE, tmp_path)
    flax_weights = tmp_path / "flax.safetensors"
    convert_weights(net, "torch", given, "flax", flax_weights)
    assert export.written_by(flax_weights) == "flax"
    assert export.written_by(given) == "torch"
    path = tmp_path / "v1.pt2"
    made = export.export(net, flax_weights, "torch_export", path, batch=2, size=SIZE)
    assert made.ok
    x = images(net, 2, seed=4, size=SIZE)
    with torch.no_grad():
        got = torch.export.load(path).module()(torch.from_numpy(x))
    assert_float32_of(got, model, x)


def test_missing_runtime_names_the_extra(monkeypatch):
    real = export.importlib.import_module

    def without_litert(name, *a, **k):
        if name == "ai_edge_litert":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(export.importlib, "import_module", without_litert)
    with pytest.raises(export.SpecError, match=r"archspec\[export\]"):
        export.require("tflite")


def test_outside_the_bound_writes_nothing(monkeypatch, tmp_path):
    net = pipeline.network(
        pipeline.load_spec(SPECS / "mobilenet_v1.yaml"), variant="mobilenet_v1_025"
    )
    _, given = weights(net, SIZE, tmp_path)
    # A bound of 0, reached through the cap for chaotic models.
    monkeypatch.setattr(export, "FLOAT_BOUND", 0.0)
    monkeypatch.setattr(export, "MAX_BOUND", 0.0)
    out = tmp_path / "v1.pt2"
    done = run_here(
        "export", str(SPECS / "mobilenet_v1.yaml"), "--variant", "mobilenet_v1_025",
        "--size", str(SIZE), "--weights", str(given), "--format", "onnx", "-o", str(out),
    )  # fmt: skip
    assert done.returncode == 1 and "not written" in done.stderr and not out.exists()
    assert not list(tmp_path.glob(".v1*"))  # no scratch left behind
    assert "at a larger --size or with trained weights" in done.stderr


def test_a_chaotic_model_gets_no_wider_bound_than_max_bound():
    """The bound follows the model's own sensitivity to rounding, up to
    MAX_BOUND: a model that one ulp of input moves by 10% (as random weights
    at a small size can) cannot vouch for a runtime that is 30% off."""
    net = pipeline.network(
        pipeline.load_spec(SPECS / "mobilenet_v1.yaml"), variant="mobilenet_v1_025"
    )

    def chaotic(x):  # a one-ulp change of x moves sin(2^30 x) by up to 1
        return np.sin(x.reshape(len(x), -1)[:, :10].astype(np.float64) * 2.0**30)

    error, bound = export.compare(
        net, 1, 16, lambda x: chaotic(x) * 1.3, chaotic, nhwc=False
    )
    assert bound == export.MAX_BOUND and error > 0.2
    steady = lambda x: x.reshape(len(x), -1)[:, :10].astype(np.float64)  # noqa: E731
    error, bound = export.compare(net, 1, 16, steady, steady, nhwc=False)
    assert (error, bound) == (0.0, export.FLOAT_BOUND)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({}, "no such folder"),
        ({"cats": ["a.png"]}, "at least two class folders"),
        ({"cats": ["a.png"], "dogs": []}, "'dogs' has no images"),
        (
            {"cats": ["a.png"], "dogs": ["b.png", "broken.png"]},
            "broken.png: not a readable image",
        ),
    ],
)
def test_calibration_folder_mistakes(layout, message, tmp_path):
    from PIL import Image

    root = tmp_path / "data" if layout else tmp_path / "missing"
    for name, files in layout.items():
        (root / name).mkdir(parents=True)
        for file in files:
            if file == "broken.png":
                (root / name / file).write_bytes(b"not a png")
            else:
                Image.new("RGB", (10, 12), (200, 10, 10)).save(root / name / file)
    net = pipeline.network(
        pipeline.load_spec(SPECS / "mobilenet_v1.yaml"), variant="mobilenet_v1_025"
    )
    with pytest.raises(export.SpecError, match=re.escape(message)):
        export.calibration_images(net, str(root), 32)
