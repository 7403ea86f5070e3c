"""DenseNet in Keras: specs/densenet_keras.yaml against
keras.applications.DenseNet121/169/201, with its weights brought in by layer
name (archspec.references.keras_applications, scheme "densenet").

DenseNet-121 runs at its native 224, the others at a small odd size.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")  # before TensorFlow, always

from helpers import (  # noqa: E402
    SPECS,
    calibrate,
    emit,
    images,
    import_keras,
    load_module,
    numpy,
    run_archspec,
    trainable,
    variant,
)

from archspec import analysis  # noqa: E402
from archspec.references.keras_applications import layer_names, model_name  # noqa: E402

# torch and triton, then Keras on TensorFlow.
keras = import_keras()
np = pytest.importorskip("numpy")

SPEC = SPECS / "densenet_keras.yaml"
SIZES = {"densenet121": 224, "densenet169": 65, "densenet201": 65}
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def torch_mode(n: int, size: int, seed: int):
    """keras.applications.densenet.preprocess_input's "torch" mode."""
    x = images(np.random.default_rng(seed), n, size) / 255.0
    return ((x - MEAN) / STD).astype("float32")


@pytest.mark.parametrize("name", list(SIZES))
def test_keras_densenet_equals_keras_applications(name, tmp_path):
    size = SIZES[name]
    net = variant(SPEC, name)
    keras.utils.set_random_seed(0)
    app = getattr(keras.applications, model_name(net, "densenet"))(
        weights=None, classifier_activation=None, input_shape=(size, size, 3)
    )
    x = torch_mode(4, size, 2)
    calibrate(app, np.random.default_rng(1), x)
    ours = getattr(load_module(emit(net, tmp_path)), net.module)(
        input_shape=(size, size, 3)
    )
    names = layer_names(net, "densenet")
    assert len(names) == len(net.weights())
    for mine, theirs in names.items():
        ours.get_layer(mine).set_weights(app.get_layer(theirs).get_weights())
    assert trainable(ours) == trainable(app) == analysis.params(net)
    theirs = numpy(app(x, training=False))
    assert np.array_equal(numpy(ours(x, training=False)), theirs), name
    assert float(np.max(np.abs(theirs[0] - theirs[1]))) > 1e-2 * float(
        np.max(np.abs(theirs))
    )


def test_weights_import_from_keras_applications(tmp_path):
    """`archspec weights import --from keras.applications` for both backends:
    the PyTorch model computes keras.applications' function too."""
    net = variant(SPEC, "densenet121")
    keras.utils.set_random_seed(0)
    app = keras.applications.DenseNet121(
        weights=None, classifier_activation=None, input_shape=(65, 65, 3)
    )
    x = torch_mode(2, 65, 3)
    calibrate(app, np.random.default_rng(1), x)
    app.save_weights(tmp_path / "app.weights.h5")
    out = tmp_path / "ours.pt"
    result = run_archspec(
        "weights", "import", "--spec", str(SPEC), "--variant", "densenet121",
        "--from", "keras.applications", str(tmp_path / "app.weights.h5"),
        "--backend", "torch", "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    from archspec.runtime import import_generated

    cls = getattr(import_generated(net, "torch", tmp_path), net.class_name)
    ours = cls().eval()
    ours.load_state_dict(torch.load(out, weights_only=True), strict=True)
    with torch.no_grad():
        logits = ours(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    theirs = numpy(app(x, training=False))
    assert float(np.max(np.abs(logits - theirs)) / np.max(np.abs(theirs))) < 1e-5
