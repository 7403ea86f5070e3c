"""EfficientNetV2 in Keras: specs/efficientnet_v2_keras.yaml against
keras.applications.EfficientNetV2B0 ... B3 and S/M/L (preprocessing inside),
with its weights brought in by layer name (scheme "efficientnet_v2").

B0 runs at its native 224, the others at small odd sizes.

Forward equality is run for one variant per distinct structure (each builds
and calibrates keras.applications' model, 20-115 s): B0 (B0's table at its
native 224; the same calibrated model also goes through `archspec weights
import`), B3 (compound scaling: widths by round_filters where the missing 10%
guard matters, 16 x 1.2 = 19.2 -> 16, head 1536, layers by ceil(1.4 x
layers)), S (a table of its own, six stages, the [-1, 1) preprocessing) and M
(a seventh stage). B1 (depth 1.1 only) and B2 (width 1.1, depth 1.2) compute
with B3's lines and other numbers, L with M's (seven stages, 115 s with its
forward pass): for them test_structure_equals_keras_applications builds both
models at 32 px and loads keras.applications' weights by name (every layer
name and shape) and compares trainable parameter counts, in 3-15 s.
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
    "efficientnet_v2_b3": 65,
    "efficientnet_v2_s": 97,
    "efficientnet_v2_m": 97,
}
# Same lines as B3 (B1, B2) and M (L): structure only (module docstring).
STRUCTURE_ONLY = ["efficientnet_v2_b1", "efficientnet_v2_b2", "efficientnet_v2_l"]


def pair(name: str, size: int, folder):
    """keras.applications' model and ours at `size`, ours holding its weights
    by layer name (set_weights checks each shape)."""
    net = variant(SPEC, name)
    keras.utils.set_random_seed(0)
    app = getattr(keras.applications, model_name(net, "efficientnet_v2"))(
        weights=None, classifier_activation=None, input_shape=(size, size, 3)
    )
    ours = getattr(load_module(emit(net, folder)), net.module)(
        input_shape=(size, size, 3)
    )
    return net, app, ours


def load_by_name(net, app, ours) -> None:
    names = layer_names(net, "efficientnet_v2")
    assert len(names) == len(net.weights())
    for mine, theirs in names.items():
        ours.get_layer(mine).set_weights(app.get_layer(theirs).get_weights())
    assert trainable(ours) == trainable(app) == analysis.params(net)


@pytest.mark.parametrize("name", STRUCTURE_ONLY)
def test_structure_equals_keras_applications(name, tmp_path):
    net, app, ours = pair(name, 32, tmp_path)
    load_by_name(net, app, ours)
    assert ours.output.shape == app.output.shape


@pytest.mark.parametrize("name", list(SIZES))
def test_keras_efficientnet_v2_equals_keras_applications(name, tmp_path):
    size = SIZES[name]
    net, app, ours = pair(name, size, tmp_path)
    x = images(np.random.default_rng(2), 4, size).astype("float32")  # 0-255
    calibrate(app, np.random.default_rng(1), x)
    load_by_name(net, app, ours)
    theirs = numpy(app(x, training=False))
    assert relative_error(numpy(ours(x, training=False)), theirs) < 1e-5, name
    assert float(np.max(np.abs(theirs[0] - theirs[1]))) > 1e-2 * float(
        np.max(np.abs(theirs))
    )
    if name == "efficientnet_v2_b0":
        # Was test_weights_import_from_keras_applications, which built and
        # calibrated a second B0 at 224 for it (57 s): the same model here.
        check_weights_import(net, app, x[:2], theirs[:2], tmp_path)


def check_weights_import(net, app, x, theirs, tmp_path):
    """`archspec weights import --from keras.applications` into the PyTorch
    model: it computes keras.applications' function (TensorFlow padding and
    the preprocessing included)."""
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
    assert relative_error(logits, theirs) < 1e-5
