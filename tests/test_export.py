"""Deployment: every family's generated PyTorch model exports to ONNX and
onnxruntime reproduces it to float32 rounding; every generated Keras model
exports as a SavedModel (model.export) and the reloaded artefact reproduces it.
One variant per family (its smallest), 64x64 inputs."""

from __future__ import annotations

import copy

import pytest
from helpers import (
    FAMILIES,
    IDS,
    ROUNDING_FACTOR,
    ROUNDING_FLOOR,
    relative_error,
    smallest,
    torch_before_tensorflow,
)

torch_before_tensorflow()
torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # torch.onnx.export's exporter


import archspec  # noqa: E402
from archspec import pipeline, runtime  # noqa: E402
from archspec.parity import randomize  # noqa: E402
from archspec.render import paddings  # noqa: E402
from archspec.weights import torch_to_keras  # noqa: E402

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
ONNX = [
    "b0",
    "densenet",
    "efficientnet_v2_keras",
    "mobilenet_v1",
    "mobilenet_v3",
    "resnet",
    "resnet_v2",
]
SAVED_MODEL = [
    "b0_torchvision",
    "densenet_keras",
    "efficientnet_v2",
    "mobilenet_v3_keras",
    "resnet_keras",
    "resnet_v2_keras",
    "mnasnet",
]


def families(ids: list[str]) -> list:
    return [
        pytest.param(s, id=i) for s, i in zip(FAMILIES, IDS, strict=True) if i in ids
    ]


@pytest.mark.parametrize("spec", families(ONNX))
def test_onnx_export_runs_in_onnxruntime(spec, tmp_path):
    """Exported with a dynamic batch, run at another batch size: no further
    from the float64 model than the float32 PyTorch model itself is."""
    net, size = network(spec), size_for(spec)
    torch.manual_seed(0)
    model = archspec.create_model(net).eval()
    randomize(model, size, seed=0)
    path = tmp_path / f"{net.module}.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(
        model,
        (torch.from_numpy(images(net, 2, size=size)),),
        path,
        dynamo=True,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
    )
    options = ort.SessionOptions()
    if "same" in paddings(net, "onnx").used:
        # onnxruntime 1.31's graph optimizer loses the Pad of a zero-padded
        # kernel ("Node input 'pad_4' is not a graph input"): TensorFlow's
        # "same" padding shifts stride-2 kernels so. Unoptimized, it runs.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"]
    )
    x = images(net, 3, seed=1, size=size)
    (got,) = session.run(["logits"], {"images": x})
    with torch.no_grad():
        ours = model(torch.from_numpy(x))
        truth = copy.deepcopy(model).double()(torch.from_numpy(x).double())
    error = relative_error(torch.from_numpy(got), truth)
    own = relative_error(ours, truth)
    assert error <= ROUNDING_FACTOR * own + ROUNDING_FLOOR, (error, own)
    assert relative_error(truth[0], truth[1]) > 1e-3  # the input matters


@pytest.mark.parametrize("spec", families(SAVED_MODEL))
def test_keras_saved_model_export_reloads(spec, tmp_path):
    keras = pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("SavedModel export needs Keras's TensorFlow backend")
    net = network(spec)
    keras.utils.set_random_seed(0)
    model = runtime.keras_model(net)  # any input size
    # Calibrated random weights (archspec.parity.randomize, through the
    # PyTorch model): with Keras's initial ones a deep network's logits reach
    # 1e5, where float32 summation order alone moves them by 1e-3. Both sides
    # are float32 here, so 64 px serves EfficientNetV2-S too (see size_for).
    size = SIZE
    torch.manual_seed(0)
    source = archspec.create_model(net).eval()
    randomize(source, size, seed=0)
    state = {k: v.numpy() for k, v in source.state_dict().items()}
    for name, arrays in torch_to_keras(net, state).items():
        model.get_layer(name).set_weights(arrays)
    path = str(tmp_path / "saved_model")
    model.export(path, format="tf_saved_model", verbose=False)
    reloaded = tf.saved_model.load(path)
    x = images(net, 2, size=size).transpose(0, 2, 3, 1)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    got = reloaded.serve(tf.constant(x)).numpy()
    assert got.shape == expected.shape == (2, net.classifier.out_features)
    # The same TensorFlow kernels, traced: equal up to oneDNN's summation order,
    # whose effect is what a one-ulp change of the input does to the logits
    # (large with Keras's initial weights in deep EfficientNetV2-S: logits 1e5).
    nudged = keras.ops.convert_to_numpy(
        model(x * np.float32(1 + 2**-23), training=False)
    )
    sensitivity = relative_error(torch.from_numpy(nudged), torch.from_numpy(expected))
    tolerance = max(1e-5, ROUNDING_FACTOR * sensitivity)
    assert (
        relative_error(torch.from_numpy(got), torch.from_numpy(expected)) <= tolerance
    )
    smaller = images(net, 1, seed=2)[:, :, :40, :48].transpose(0, 2, 3, 1)
    assert reloaded.serve(tf.constant(smaller)).shape == (
        1,
        net.classifier.out_features,
    )
