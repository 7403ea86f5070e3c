"""NASNet-A, whose cells are written in the spec itself: specs/nasnet_keras.yaml
against keras.applications' NASNetMobile and NASNetLarge (Keras): parameter
counts, and logits with the reference's random weights brought in by
`archspec weights import --from keras.applications` (Mobile) or by the
"nasnet" naming scheme directly (Large, cheaper than a second process).

NASNetMobile at its native 224 px (even maps after the stem) and at ODD, an
odd size at every stride, so both branches of TensorFlow's "same" padding of
the reduction cells' stride-2 pools and separable convolutions are exercised;
NASNetLarge at LARGE, whose maps have the parity of its native 331 px's at
every stride (331 -> 165 -> 83 -> 42 -> 21 -> 11; 75 -> 37 -> 19 -> 10 -> 5
-> 3), so the same padding branches as at 331, at a twentieth of the pixels.
Keras builds NASNet from 32 px; 33 px gives even maps from the stem on.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # before Keras, always

from helpers import (  # noqa: E402
    SPECS,
    calibrate,
    emit,
    load_module,
    run_here,
    variant,
)

from archspec import analysis, runtime  # noqa: E402
from archspec.parity import randomize  # noqa: E402
from archspec.references.keras_applications import (  # noqa: E402
    Array,
    layer_names,
    their_weights,
)

SPEC = SPECS / "nasnet_keras.yaml"
# keras.applications: (constructor, trainable, non-trainable) parameters
# (REFERENCE-FAMILIES.md 13.5).
KERAS = {
    "nasnet_mobile": ("NASNetMobile", 5_289_978, 36_738),
    "nasnet_large": ("NASNetLarge", 88_753_150, 196_668),
}
ODD = 67  # stem 33 -> 17 -> 9 -> 5 -> 3
LARGE = 75  # 331's parities at every stride (see above): 35 s, against 53 s at 331


def count(weights) -> int:
    return sum(int(np.prod(w.shape)) for w in weights)


@pytest.fixture(scope="module")
def keras_pairs(tmp_path_factory):
    """keras.applications' model with calibrated random weights, and the
    generated model with them. Mobile's weights are calibrated at ODD px and
    imported once, with `archspec weights import` (run in this process, as
    run_here runs the CLI: a process of its own would import torch and
    TensorFlow again, 13 s; the other families' import tests run the command
    in its own process); Large's come by name."""
    keras = pytest.importorskip("keras")

    folder = tmp_path_factory.mktemp("nasnet_keras")
    built: dict = {}
    imported: dict = {}  # Mobile's keras.applications model at 224 px

    def application(name: str, size: int):
        constructor, _, _ = KERAS[name]
        keras.utils.set_random_seed(0)
        return getattr(keras.applications, constructor)(
            weights=None, classifier_activation=None, input_shape=(size, size, 3)
        )

    def generated(name: str, size: int):
        net = variant(SPEC, name)
        module = load_module(emit(net, folder))
        return net, module, getattr(module, net.module)(input_shape=(size, size, 3))

    def calibrated(app, size: int) -> None:
        rng = np.random.default_rng(1)
        calibrate(app, rng, rng.uniform(-1, 1, (4, size, size, 3)).astype("float32"))

    def mobile(size: int):
        theirs = folder / "nasnet_mobile.weights.h5"
        ours_file = folder / "nasnet_mobile_ours.weights.h5"
        if "app" not in imported:
            # Calibrated at the small size (a tenth of the work at 224); the
            # statistics keep the signal alive at both.
            imported["app"] = application("nasnet_mobile", ODD)
            calibrated(imported["app"], ODD)
            imported["app"].save_weights(theirs)
            result = run_here(
                "weights", "import", "--spec", str(SPEC), "--variant",
                "nasnet_mobile", "--from", "keras.applications", "-b", "keras",
                str(theirs), "-o", str(ours_file),
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
        if size == ODD:
            app = imported["app"]
        else:
            app = application("nasnet_mobile", size)
            app.load_weights(theirs)
        net, module, ours = generated("nasnet_mobile", size)
        ours.load_weights(ours_file)
        return net, module, app, ours

    def large(size: int):
        # Calibrated at the size compared; by name into the generated model.
        app = application("nasnet_large", size)
        calibrated(app, size)
        net, module, ours = generated("nasnet_large", size)
        for mine, theirs in layer_names(net, "nasnet").items():
            ours.get_layer(mine).set_weights(their_weights(app, theirs))
        return net, module, app, ours

    def get(name: str, size: int):
        if (name, size) not in built:
            built[name, size] = (mobile if name == "nasnet_mobile" else large)(size)
        return built[name, size]

    return get


def logits_error(app, ours, size: int) -> float:
    x = np.random.default_rng(3).uniform(-1, 1, (2, size, size, 3)).astype("float32")
    theirs = np.asarray(app(x, training=False), dtype="float64")
    mine = np.asarray(ours(x, training=False), dtype="float64")
    return float(np.abs(mine - theirs).max() / np.abs(theirs).max())


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("nasnet_mobile", 224),
        ("nasnet_mobile", ODD),  # odd maps: the cells' asymmetric padding
        ("nasnet_large", LARGE),  # 331's padding branches, see the docstring
    ],
)
def test_keras_applications_weights_give_their_logits(name, size, keras_pairs):
    """Parameter counts, and logits with keras.applications' weights."""
    net, _, app, ours = keras_pairs(name, size)
    _, trainable, frozen = KERAS[name]
    assert count(ours.trainable_weights) == trainable == count(app.trainable_weights)
    assert count(ours.non_trainable_weights) == frozen
    assert analysis.params(net) == trainable
    # The same layers in the same order: only summation order may differ.
    error = logits_error(app, ours, size)
    assert error < 1e-5, error


def test_layer_names_cover_nasnet_mobile():
    """Every weight-bearing layer maps to a layer of NASNetMobile; each
    SeparableConv2D holds two of ours, its depthwise and pointwise kernels."""
    names = layer_names(variant(SPEC, "nasnet_mobile"), "nasnet")
    assert names["stem_conv"] == "stem_conv1"
    assert names["stages_2_0_hidden_conv_bn"] == "normal_bn_1_0"
    assert (
        names["stages_3_0_prev_projected_conv_conv"]
        == "adjust_conv_projection_reduce_4"
    )
    assert names["stages_4_0_prev_reduced_path2"] == "adjust_conv_2_5"
    assert names["stages_5_0_comb2_right_pointwise1_bn"] == (
        "separable_conv_1_bn_reduction_right3_reduce_8"
    )
    assert names["stages_6_3_comb4_left_depthwise2"] == Array(
        "separable_conv_2_normal_left5_12", 0
    )
    assert names["stages_6_3_comb4_left_pointwise2_conv"] == Array(
        "separable_conv_2_normal_left5_12", 1
    )
    assert names["classifier"] == "predictions"


def test_weights_convert_round_trip(tmp_path):
    """`archspec weights convert` PyTorch -> Keras -> PyTorch: every tensor
    back unchanged, and the Keras file computes the PyTorch model's logits.
    The PyTorch file goes in as torch.save's and comes back as safetensors."""
    from safetensors.torch import load_file

    net = variant(SPEC, "nasnet_mobile")
    model = runtime.torch_model(net, tmp_path).eval()
    randomize(model, ODD, seed=2)
    pt, h5 = tmp_path / "a.pt", tmp_path / "a.weights.h5"
    back = tmp_path / "b.safetensors"
    torch.save(model.state_dict(), pt)
    common = ["weights", "convert", "--spec", str(SPEC), "--variant", "nasnet_mobile"]
    there = run_here(*common, "--from", "torch", str(pt), "--to", "keras", str(h5))
    assert there.returncode == 0, there.stderr
    again = run_here(*common, "--from", "keras", str(h5), "--to", "torch", str(back))
    assert again.returncode == 0, again.stderr
    original, returned = model.state_dict(), load_file(back)
    assert set(original) == set(returned)
    for key, tensor in original.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(tensor, returned[key]), key
    keras_model = runtime.keras_model(net, tmp_path)
    keras_model.load_weights(h5)
    x = np.random.default_rng(5).uniform(-1, 1, (2, ODD, ODD, 3)).astype("float32")
    with torch.no_grad():
        expected = model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = np.asarray(keras_model(x, training=False))
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-5
