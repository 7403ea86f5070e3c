"""keras.applications' own builder tests (keras/src/applications/
applications_test.py), asserted of every generated Keras builder: the
smallest variant of every family (NASNet-A Large and PNASNet-5 Large, only
large, aside).

What they assert: include_top=False builds with 1 and 4 input channels at any
size (the 4-D map of the last feature channels); a custom input shape; an
`input_tensor` that a layer computed from another input (the model then reads
that input); pooling="max" (a vector per image); classifier_activation=
"softmax" (the last layer applies it); and the model survives
serialize_keras_object / deserialize_keras_object. Here also the values and
the rest of the structure: the in-model preprocessing follows the builders'
documented rule on other channel counts, max pooling gives the map's maximum,
the probabilities are the softmax of the classifier's logits, and the rebuilt
model has the same configuration.

Building a model takes most of the time (0.5-4 s each, whatever the input
size): three per family (one without the top, on 1 channel through an
input_tensor, one with it, its rebuilt copy), two of them run, at 32 and 35
px. 4 channels without the top are built for the specs whose in-model
normalisation is per channel, where the channel count changes the code's
path; for the others 1 and 4 channels take the same lines."""

from __future__ import annotations

import pytest
from helpers import FAMILIES, IDS, import_generated, import_keras, smallest

keras = import_keras()
np = pytest.importorskip("numpy")

from archspec import pipeline  # noqa: E402

SIZE = 32
CLASSES = 5


class Family:
    """A family's smallest variant: its network and generated builder."""

    def __init__(self, spec):
        self.net = pipeline.network(pipeline.load_spec(spec), variant=smallest(spec))
        self.build = getattr(import_generated(self.net, "keras"), self.net.module)
        # The channels of the last feature map (keras.applications' last_dim).
        pool = next(node for node in self.net.head if node.kind == "global_pool")
        self.last_dim = pool.channels

    def images(self, n: int, size: int, channels: int = 3, seed: int = 0):
        """Random images, in [0, 255] where the model preprocesses them."""
        x = np.random.default_rng(seed).random((n, size, size, channels))
        return (x * (255 if self.net.input.preprocess else 1)).astype("float32")


@pytest.fixture(scope="module", params=FAMILIES, ids=IDS)
def family(request):
    return Family(request.param)


def run(model, x):
    """The model's output(s) on x, in inference mode, as numpy arrays."""
    out = model(x, training=False)
    return keras.tree.map_structure(keras.ops.convert_to_numpy, out)


# include_top=False ---------------------------------------------------------------


# The specs whose in-model normalisation differs per channel: 3 channels are
# normalised, others only scaled (the builders' documented rule).
PER_CHANNEL = [
    spec for spec in FAMILIES if spec.stem in ("b0", "efficientnet_v2_keras")
]


@pytest.mark.parametrize("spec", PER_CHANNEL, ids=lambda spec: spec.stem)
def test_notop_variable_input_channels(spec):
    """test_application_notop_variable_input_channels: 4 channels at any size
    (1 channel: the next test, for every family). These specs failed here
    (Normalization's 3 means broadcast onto 1 or 4 channels)."""
    family = Family(spec)
    model = family.build(weights=None, include_top=False, input_shape=(None, None, 4))
    assert list(model.outputs[0].shape) == [None, None, None, family.last_dim]
    check_preprocessing(family, model, family.images(1, 4, 4))


def check_preprocessing(family, model, x):
    """The rule the builders document: x * INPUT_SCALE, then (x - INPUT_MEAN)
    / INPUT_STD where mean and std are the same on every channel, or, where
    they differ per channel, on an input of the spec's channels only. `x`:
    an input of the model."""
    names = {layer.name for layer in model.layers}
    pre = family.net.input.preprocess
    if pre is None:
        assert not any(name.startswith("preprocess") for name in names)
        return
    first = model.get_layer("preprocess_rescale")
    channels = first.input.shape[-1]
    per_channel = len({*pre.mean}) > 1 or len({*pre.std}) > 1
    normalised = not per_channel or channels == len(pre.mean)
    assert ("preprocess_normalize" in names) == normalised
    last = model.get_layer("preprocess_normalize") if normalised else first
    given, got = run(keras.Model(model.inputs[0], [first.input, last.output]), x)
    want = given.astype("float64") * pre.scale
    if normalised:
        mean, std = (np.resize(np.float64(v), channels) for v in (pre.mean, pre.std))
        want = (want - mean) / std
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_notop_custom_input_tensor_and_max_pooling(family):
    """test_application_notop_custom_input_tensor (there 4 channels made 3 by
    a strided convolution; here 3 made 1, include_top=False's other channel
    count, from a custom input shape) with test_application_pooling's
    pooling="max": per image, the maximum of each channel of the map."""
    source = keras.Input(shape=(2 * SIZE, 2 * SIZE, 3), name="custom_input")
    tensor = keras.layers.Conv2D(1, 2, strides=2, name="before")(source)
    model = family.build(
        weights=None, include_top=False, pooling="max", input_tensor=tensor
    )
    # The model reads the input the tensor was computed from, through the
    # layer before it.
    assert model.input is source and model.inputs == [source]
    assert model.get_layer("before").output is tensor
    assert list(model.outputs[0].shape) == [None, family.last_dim]
    pool = model.layers[-1]
    assert isinstance(pool, keras.layers.GlobalMaxPooling2D)
    x = family.images(2, 2 * SIZE)
    maps, pooled = run(keras.Model(source, [pool.input, pool.output]), x)
    assert maps.shape[0] == 2 and maps.shape[-1] == family.last_dim
    np.testing.assert_array_equal(pooled, maps.max(axis=(1, 2)))
    check_preprocessing(family, model, x[:1])


# include_top=True ----------------------------------------------------------------


@pytest.fixture(scope="module")
def with_softmax(family):
    """A custom input shape (odd, not the default: with include_top, whose
    heads take any size), classes and test_application_classifier_activation's
    softmax; its probabilities and logits on two images."""
    model = family.build(
        weights=None,
        classes=CLASSES,
        classifier_activation="softmax",
        input_shape=(SIZE + 3, SIZE + 3, 3),
    )
    outputs = [model.output, model.layers[-2].output]
    probs, logits = run(
        keras.Model(model.inputs[0], outputs), family.images(2, SIZE + 3)
    )
    return model, probs, logits


def test_custom_input_shape(family, with_softmax):
    """test_application_notop_custom_input_shape's: the input as asked, the
    last feature map of the same channels."""
    model, *_ = with_softmax
    assert model.inputs[0].shape == (None, SIZE + 3, SIZE + 3, 3)
    assert model.get_layer("pool").input.shape[-1] == family.last_dim


def test_classifier_activation(with_softmax):
    """The last layer applies the activation: "predictions", as
    keras.applications names it, after the classifier's logits."""
    model, probs, logits = with_softmax
    last = model.layers[-1]
    assert last.activation.__name__ == "softmax"
    assert last.name == "predictions" and not last.weights
    assert list(model.outputs[0].shape) == [None, CLASSES]
    assert probs.shape == logits.shape == (2, CLASSES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    e = np.exp(logits.astype("float64") - logits.max(axis=1, keepdims=True))
    want = e / e.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, want, rtol=1e-4, atol=1e-6)


def test_serialization_round_trip(with_softmax):
    """test_application_base's round trip through serialize_keras_object: as
    many weights, and the same configuration (the same layers, each with the
    same settings and inputs)."""
    model, *_ = with_softmax
    config = keras.saving.serialize_keras_object(model)
    rebuilt = keras.saving.deserialize_keras_object(config)
    assert len(rebuilt.weights) == len(model.weights)
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in model.weights]
    assert rebuilt.get_config() == model.get_config()
    assert rebuilt.layers[-1].activation.__name__ == "softmax"


def test_input_tensor_must_be_a_keras_tensor():
    build = Family(FAMILIES[0]).build
    with pytest.raises(ValueError, match="input_tensor: expected a Keras tensor"):
        build(input_tensor=np.zeros((1, SIZE, SIZE, 3), "float32"))
