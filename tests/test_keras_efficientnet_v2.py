"""EfficientNetV2 in Keras: specs/efficientnet_v2_keras.yaml against
keras.applications.EfficientNetV2B0 ... B3 and S/M/L (preprocessing inside),
with its weights brought in by layer name (scheme "efficientnet_v2").

B0 runs at its native 224, the others at small odd sizes.
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
from helpers import array_relative_error as relative_error  # noqa: E402

from archspec import analysis  # noqa: E402
from archspec.references.keras_applications import layer_names, model_name  # noqa: E402
from archspec.runtime import import_generated  # noqa: E402

# torch and triton, then Keras on TensorFlow.
keras = import_keras()
np = pytest.importorskip("numpy")

SPEC = SPECS / "efficientnet_v2_keras.yaml"
SIZES = {
    "efficientnet_v2_b0": 224,
    "efficientnet_v2_b1": 65,
    "efficientnet_v2_b2": 65,
    "efficientnet_v2_b3": 65,
    "efficientnet_v2_s": 97,
    "efficientnet_v2_m": 97,
    "efficientnet_v2_l": 97,
}


@pytest.mark.parametrize("name", list(SIZES))
def test_keras_efficientnet_v2_equals_keras_applications(name, tmp_path):
    size = SIZES[name]
    net = variant(SPEC, name)
    keras.utils.set_random_seed(0)
    app = getattr(keras.applications, model_name(net, "efficientnet_v2"))(
        weights=None, classifier_activation=None, input_shape=(size, size, 3)
    )
    x = images(np.random.default_rng(2), 4, size).astype("float32")  # 0-255
    calibrate(app, np.random.default_rng(1), x)
    ours = getattr(load_module(emit(net, tmp_path)), net.module)(
        input_shape=(size, size, 3)
    )
    names = layer_names(net, "efficientnet_v2")
    assert len(names) == len(net.weights())
    for mine, theirs in names.items():
        ours.get_layer(mine).set_weights(app.get_layer(theirs).get_weights())
    assert trainable(ours) == trainable(app) == analysis.params(net)
    theirs = numpy(app(x, training=False))
    assert relative_error(numpy(ours(x, training=False)), theirs) < 1e-5, name
    assert float(np.max(np.abs(theirs[0] - theirs[1]))) > 1e-2 * float(
        np.max(np.abs(theirs))
    )


def test_weights_import_from_keras_applications(tmp_path):
    """`archspec weights import --from keras.applications` into the PyTorch
    model: it computes keras.applications' function (TensorFlow padding and
    the preprocessing included)."""
    net = variant(SPEC, "efficientnet_v2_b0")
    keras.utils.set_random_seed(0)
    app = keras.applications.EfficientNetV2B0(
        weights=None, classifier_activation=None, input_shape=(224, 224, 3)
    )
    x = images(np.random.default_rng(3), 2, 224).astype("float32")
    calibrate(app, np.random.default_rng(1), x)
    app.save_weights(tmp_path / "app.weights.h5")
    out = tmp_path / "ours.pt"
    result = run_archspec(
        "weights", "import", "--spec", str(SPEC), "--variant", "efficientnet_v2_b0",
        "--from", "keras.applications", str(tmp_path / "app.weights.h5"),
        "--backend", "torch", "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    cls = getattr(import_generated(net, "torch", tmp_path), net.class_name)
    ours = cls().eval()
    ours.load_state_dict(torch.load(out, weights_only=True), strict=True)
    with torch.no_grad():
        logits = ours(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert relative_error(logits, numpy(app(x, training=False))) < 1e-5
