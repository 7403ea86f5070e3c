"""The keras.applications arguments of every generated Keras builder
(include_top, weights, input_shape, pooling, classes, classifier_activation),
its multi-scale feature_model() and prepare_for_inference(), against the
generated PyTorch model's fine-tuning API with the same weights."""

from __future__ import annotations

import pytest
from helpers import FAMILIES, IDS, RESNET, smallest, torch_before_tensorflow

torch_before_tensorflow()
torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

import archspec  # noqa: E402
from archspec import pipeline, runtime  # noqa: E402
from archspec.parity import TOLERANCE, randomize  # noqa: E402

TOL = TOLERANCE["float32"]
from archspec.weights import torch_to_keras  # noqa: E402

SIZE = 64


def relative(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module", params=FAMILIES, ids=IDS)
def family(request):
    return pair(request.param)


def pair(spec):
    """Both models of the family's smallest variant, holding the same weights."""
    net = pipeline.network(pipeline.load_spec(spec), variant=smallest(spec))
    # EfficientNetV2-S's random weights lose their signal below ~128 px (its
    # deep stages see too few pixels to calibrate batch norm).
    size = 128 if spec.stem == "efficientnet_v2" else SIZE
    torch.manual_seed(0)
    ours = archspec.create_model(net).eval()
    randomize(ours, size, seed=0)
    state = {k: v.numpy() for k, v in ours.state_dict().items()}
    module = runtime.import_generated(net, "keras")
    build = getattr(module, net.module)
    model = build(input_shape=(size, size, 3))
    layers = torch_to_keras(net, state)
    for name, arrays in layers.items():
        model.get_layer(name).set_weights(arrays)
    scale = 255 if net.input.preprocess else 1
    x = np.random.default_rng(0).random((2, size, size, 3)).astype("float32") * scale
    return ours, module, build, model, layers, x


def nchw(x):
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def test_feature_model_equals_torch_feature_maps(family):
    ours, module, _, model, _, x = family
    assert [(f["num_chs"], f["reduction"]) for f in module.FEATURE_INFO] == [
        (f["num_chs"], f["reduction"]) for f in ours.feature_info
    ]
    maps = module.feature_model(model)(x, training=False)
    with torch.no_grad():
        expected = ours.feature_maps(nchw(x))
    assert len(maps) == len(expected)
    for got, want in zip(maps, expected, strict=True):
        want = want.numpy().transpose(0, 2, 3, 1)
        assert got.shape == want.shape
        assert relative(keras.ops.convert_to_numpy(got), want) <= TOL


def test_prepare_for_inference_folds_batch_norm(family):
    """The serving copy computes the PyTorch model's function, with every batch
    norm that alone reads a convolution's output folded away and the layer
    names kept; the model it was made from is untouched."""
    ours, module, _, model, _, x = family
    weights = model.get_weights()
    folded = module.prepare_for_inference(model)
    names = [layer.name for layer in model.layers]
    assert [layer.name for layer in folded.layers] == names
    assert any(isinstance(layer, module.FoldedBatchNorm) for layer in folded.layers)
    convolutions = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
    made_by = {id(layer.output): layer for layer in folded.layers}
    read = [
        id(t) for layer in folded.layers[1:] for t in keras.tree.flatten(layer.input)
    ]
    for layer in folded.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            producer = made_by[id(layer.input)]
            assert type(producer) not in convolutions or read.count(id(layer.input)) > 1
    with torch.no_grad():
        expected = ours(nchw(x)).numpy()
    got = keras.ops.convert_to_numpy(folded(x, training=False))
    assert relative(got, expected) <= TOL
    assert all(
        np.array_equal(a, b) for a, b in zip(model.get_weights(), weights, strict=True)
    )
    assert len(module.feature_model(folded).outputs) == len(module.FEATURE_INFO)


def test_include_top_false(family):
    """Every family: the 4-D map of forward_features()."""
    check_backbone(*family, pooling=None)


@pytest.fixture(scope="module")
def resnet_pair():
    """ResNet's pair, built once for the three tests below (each built its
    own: 3-5 s apiece); none of them changes it."""
    return pair(RESNET)


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_pooling(pooling, resnet_pair):
    """The same lines in every builder: one family."""
    check_backbone(*resnet_pair, pooling=pooling)


def check_backbone(ours, _module, build, _model, layers, x, pooling):
    backbone = build(include_top=False, pooling=pooling, input_shape=x.shape[1:])
    assert "classifier" not in {layer.name for layer in backbone.layers}
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(layers[layer.name])
    got = keras.ops.convert_to_numpy(backbone(x, training=False))
    with torch.no_grad():
        features = ours.forward_features(nchw(x))
    want = {
        None: features.permute(0, 2, 3, 1),
        "avg": features.mean((2, 3)),
        "max": features.amax((2, 3)),
    }[pooling].numpy()
    assert got.shape == want.shape
    assert relative(got, want) <= TOL


def test_classes_activation_and_weights_file(tmp_path, resnet_pair):
    """The same lines in every builder: one family."""
    ours, _, build, model, _, x = resnet_pair
    path = str(tmp_path / "model.weights.h5")
    model.save_weights(path)
    same = build(weights=path, input_shape=(SIZE, SIZE, 3))
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    assert np.array_equal(keras.ops.convert_to_numpy(same(x, training=False)), logits)
    with torch.no_grad():
        assert relative(logits, ours(nchw(x)).numpy()) <= TOL
    probs = build(
        classes=5, classifier_activation="softmax", input_shape=(None, None, 3)
    )(x[:, :33, :33], training=False)
    assert probs.shape == (2, 5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(probs).sum(1), 1, rtol=1e-5)
    with pytest.raises(ValueError, match="pooling: expected None, 'avg' or 'max'"):
        build(include_top=False, pooling="mean")
