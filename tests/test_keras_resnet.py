"""The Keras backend on ResNet: specs/resnet_keras.yaml against
keras.applications' ResNet50/101/152 (v1), and every variant of every
shipped spec built and run (TensorFlow backend)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from archspec_keras import BACKEND
from helpers import (
    ROOT,
    SPECS,
    TOLERANCE,
    calibrate,
    emit,
    images,
    import_keras,
    load_module,
    numpy,
    trainable,
)
from helpers import array_relative_error as relative_error

from archspec import analysis, ir
from archspec.errors import SpecError
from archspec.pipeline import load_spec, network, select
from archspec.references.keras_applications import (
    layer_names,
    model_name,
    read_weights,
)
from archspec.weights import keras_to_torch, torch_to_keras

keras = import_keras()
np = pytest.importorskip("numpy")

RESNET_KERAS = SPECS / "resnet_keras.yaml"
# REFERENCE-FAMILIES.md section 1: keras.applications' trainable parameters.
APPLICATIONS = {
    "resnet50": (keras.applications.ResNet50, 25_583_592),
    "resnet101": (keras.applications.ResNet101, 44_601_832),
    "resnet152": (keras.applications.ResNet152, 60_268_520),
}
# keras.applications ResNets expect "caffe" preprocessing outside the model:
# BGR with these means subtracted, no scaling.
CAFFE_MEAN = np.array([103.939, 116.779, 123.68], dtype="float32")
ODD = 97  # odd sizes at every stage: 97 -> 49 -> 25 -> 13 -> 7 -> 4


@pytest.fixture(scope="module")
def resnet_keras():
    return load_spec(RESNET_KERAS)


def caffe_images(seed: int, n: int, size: int):
    return images(np.random.default_rng(seed), n, size)[..., ::-1] - CAFFE_MEAN


class Pair:
    """keras.applications' model with calibrated random weights at `size`,
    and the generated model (any size) with the same weights."""

    def __init__(self, spec, variant: str, folder: Path):
        self.network = network(spec, variant=variant)
        self.constructor, self.params = APPLICATIONS[variant]
        keras.utils.set_random_seed(0)
        self.app = self.reference(ODD)
        calibrate(self.app, np.random.default_rng(1), caffe_images(2, 4, ODD))
        module = load_module(emit(self.network, folder))
        self.ours = getattr(module, self.network.module)(input_shape=(None, None, 3))
        self.names = layer_names(self.network, "resnet")
        for ours, theirs in self.names.items():
            self.ours.get_layer(ours).set_weights(
                self.app.get_layer(theirs).get_weights()
            )

    def reference(self, size: int):
        return self.constructor(
            weights=None, classifier_activation=None, input_shape=(size, size, 3)
        )


@pytest.fixture(scope="module")
def pairs(resnet_keras, tmp_path_factory):
    """Each variant's pair, built once (ResNet152 takes seconds)."""
    folder = tmp_path_factory.mktemp("keras_resnet")
    built: dict[str, Pair] = {}

    def get(variant: str) -> Pair:
        if variant not in built:
            built[variant] = Pair(resnet_keras, variant, folder)
        return built[variant]

    return get


def test_scheme_comes_from_the_spec(resnet_keras):
    assert resnet_keras.spec.references["keras.applications"] == "resnet"
    net = network(resnet_keras, variant="resnet101")
    assert model_name(net, "resnet") == "ResNet101"
    names = layer_names(net, "resnet")
    assert len(names) == len(net.weights())
    assert names["stem_conv"] == "conv1_conv"
    assert names["stem_bn"] == "conv1_bn"
    assert names["stages_0_0_shortcut_conv"] == "conv2_block1_0_conv"
    assert names["stages_1_0_conv1_conv"] == "conv3_block1_1_conv"
    assert names["stages_2_22_conv3_bn"] == "conv4_block23_3_bn"
    assert names["stages_3_2_conv2_bn"] == "conv5_block3_2_bn"
    assert names["classifier"] == "predictions"
    assert "stages_0_1_shortcut_conv" not in names  # identity shortcuts


def test_layer_names_reject_what_keras_applications_lacks(resnet_keras):
    basic = network(load_spec(SPECS / "resnet.yaml"), variant="resnet18")
    with pytest.raises(SpecError, match=r"stages\.0\.0: .* no 'basic' block"):
        layer_names(basic, "resnet")
    se = network(load_spec(SPECS / "se_resnet.yaml"), variant="seresnet50")
    with pytest.raises(SpecError, match=r"stages\.0\.0\.se\.reduce: .*'se\.reduce'"):
        layer_names(se, "resnet")
    with pytest.raises(SpecError, match="no naming scheme 'vgg'"):
        layer_names(network(resnet_keras, variant="resnet50"), "vgg")
    with pytest.raises(SpecError, match=r"no keras\.applications resnet model"):
        model_name(
            network(load_spec(SPECS / "resnet.yaml"), variant="resnet34"), "resnet"
        )


@pytest.mark.parametrize("variant", APPLICATIONS)
def test_parameters_and_layers_match(variant, pairs):
    pair = pairs(variant)
    assert analysis.params(pair.network) == pair.params
    assert trainable(pair.ours) == trainable(pair.app) == pair.params
    weighted = {layer.name for layer in pair.ours.layers if layer.weights}
    assert set(pair.names) == weighted
    assert set(pair.names.values()) == {x.name for x in pair.app.layers if x.weights}


@pytest.mark.parametrize("variant", APPLICATIONS)
def test_same_logits_at_an_odd_size(variant, pairs):
    pair = pairs(variant)
    x = caffe_images(10, 2, ODD)
    a, b = numpy(pair.ours(x, training=False)), numpy(pair.app(x, training=False))
    error = relative_error(a, b)
    print(f"{variant} @{ODD}: relative error {error:.2e}")
    assert b.shape == (2, 1000)
    assert relative_error(b[0], b[1]) > 1e-2  # the input matters
    assert error <= TOLERANCE


def test_same_logits_at_224(pairs):
    pair = pairs("resnet50")
    app = pair.reference(224)
    app.set_weights(pair.app.get_weights())
    x = caffe_images(11, 2, 224)
    a, b = numpy(pair.ours(x, training=False)), numpy(app(x, training=False))
    error = relative_error(a, b)
    print(f"resnet50 @224: relative error {error:.2e}")
    assert relative_error(b[0], b[1]) > 1e-2
    assert error <= TOLERANCE


def test_read_weights_and_transfer(pairs, tmp_path):
    """A keras.applications weight file, read by name into the generated
    model's layers, and on to a torch state dict and back (conv and dense
    biases included)."""
    pair = pairs("resnet50")
    path = tmp_path / "resnet50.weights.h5"
    pair.app.save_weights(path)
    layers = read_weights(pair.network, "resnet", path)
    assert set(layers) == set(pair.names)
    for ours, arrays in layers.items():
        expected = pair.ours.get_layer(ours).get_weights()
        assert all(np.array_equal(a, b) for a, b in zip(arrays, expected, strict=True))
    state = keras_to_torch(pair.network, layers)
    assert state["stem.conv.weight"].shape == (64, 3, 7, 7)
    assert state["stem.conv.bias"].shape == (64,)
    assert state["stages.0.0.shortcut.conv.bias"].shape == (256,)
    assert state["classifier.bias"].shape == (1000,)
    back = torch_to_keras(pair.network, state)
    assert all(
        np.array_equal(a, b)
        for name, arrays in back.items()
        for a, b in zip(arrays, layers[name], strict=True)
    )
    with pytest.raises(
        SpecError, match=r"not weights of keras\.applications\.ResNet101"
    ):
        read_weights(
            network(load_spec(RESNET_KERAS), variant="resnet101"), "resnet", path
        )


def test_dense_without_bias_transfers():
    net = network(load_spec(RESNET_KERAS), variant="resnet50")
    head = tuple(
        node.model_copy(update={"bias": False}) if isinstance(node, ir.Dense) else node
        for node in net.head
    )
    net = net.model_copy(update={"head": head})
    state = {
        f"{w.path}.{suffix}": np.zeros(shape, "float32")
        for w, layout in ((w, _layout(w)) for w in net.weights())
        for suffix, shape in layout
    }
    layers = torch_to_keras(net, state)
    assert [a.shape for a in layers["classifier"]] == [(2048, 1000)]
    assert "classifier.bias" not in keras_to_torch(net, layers)


def _layout(w: ir.Weights) -> list[tuple[str, tuple[int, ...]]]:
    if isinstance(w, ir.BatchNormWeights):
        c = (w.channels,)
        return [("weight", c), ("bias", c), ("running_mean", c), ("running_var", c)]
    if isinstance(w, ir.Conv2dWeights):
        return [("weight", w.shape)] + ([("bias", (w.out_channels,))] if w.bias else [])
    return [("weight", (w.out_features, w.in_features))] + (
        [("bias", (w.out_features,))] if w.bias else []
    )


# Every shipped spec ---------------------------------------------------------------

VARIANTS = [
    (spec, variant.name)
    for spec in sorted(p.name for p in SPECS.glob("*.yaml"))
    for variant in select(load_spec(SPECS / spec))
]


@pytest.fixture(scope="module")
def every_variant(tmp_path_factory) -> dict[tuple[str, str], Path]:
    folder = tmp_path_factory.mktemp("every_variant")
    emitted = {}
    for spec, variant in VARIANTS:
        net = network(load_spec(SPECS / spec), variant=variant)
        sub = folder / spec.removesuffix(".yaml")
        sub.mkdir(exist_ok=True)
        emitted[spec, variant] = emit(net, sub)
    return emitted


def test_every_variant_is_ruff_clean_and_deterministic(every_variant):
    assert len(every_variant) == len(VARIANTS) >= 31
    paths = [str(path) for path in every_variant.values()]
    config = str(ROOT / "pyproject.toml")
    for args in (["check"], ["format", "--check"]):
        proc = subprocess.run(
            [sys.executable, "-m", "ruff", *args, "--config", config, *paths],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    for (spec, variant), path in every_variant.items():
        net = network(load_spec(SPECS / spec), variant=variant)
        (source,) = BACKEND.emit(net).values()
        assert source == path.read_text(encoding="utf-8")
        assert max(map(len, source.splitlines())) <= 88, path.name
        assert (
            # The header wraps long commands at 88 columns: compare words.
            f"`archspec compile {spec} --variant {variant} --backend keras`"
            in " ".join(source.split())
        )


# One variant of each spec is built: building a Keras model is what costs
# (86 variants: five minutes), and the others differ in numbers, not in the
# layers' names (test_every_variant_is_ruff_clean_and_deterministic reads all).
FIRST_OF_EACH_SPEC = list(
    {spec: (spec, variant) for spec, variant in reversed(VARIANTS)}.values()
)


@pytest.mark.parametrize(("spec", "variant"), FIRST_OF_EACH_SPEC)
def test_every_variant_builds_and_runs(spec, variant, every_variant):
    net = network(load_spec(SPECS / spec), variant=variant)
    module = load_module(every_variant[spec, variant])
    # Few classes: building the classifier is no part of what is checked.
    model = getattr(module, net.module)(classes=10, input_shape=(64, 64, 3))
    weighted = {layer.name for layer in model.layers if layer.weights}
    assert weighted == {w.path.replace(".", "_") for w in net.weights()}
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    y = numpy(model(x, training=False))
    assert y.shape == (1, 10) and np.isfinite(y).all()


def test_drop_path_rate_is_written_as_an_expression(every_variant):
    text = every_variant["resnet.yaml", "resnet18"].read_text()
    assert "    drop_path_rate: float = 0.0,\n" in text
    for i in range(8):
        assert f"drop_rate=drop_path_rate * {i} / 8," in text
    module = load_module(every_variant["resnet.yaml", "resnet18"])
    model = module.resnet18(drop_path_rate=0.2, input_shape=(64, 64, 3))
    rates = {
        layer.name: layer.rate
        for layer in model.layers
        if isinstance(layer, keras.layers.Dropout)
    }
    # Block 0 drops nothing: no layer. No dropout before the classifier (0.0).
    assert rates == {f"stages_{i // 2}_{i % 2}_drop": 0.2 * i / 8 for i in range(1, 8)}
