"""MobileNetV2, MobileNetV3 and MNASNet against torchvision and keras.applications:
parameter counts, and outputs with the reference's weights brought in by name.

As for the ResNets (tests/test_resnet_family.py), "equal to float32 rounding"
is measured: the generated model must be no further from the reference's
float64 output than about the reference's own float32 output is.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")  # before TensorFlow, always
torchvision = pytest.importorskip("torchvision")

from helpers import (  # noqa: E402
    MNASNET,
    MOBILENET_V1,
    MOBILENET_V2,
    MOBILENET_V2_KERAS,
    MOBILENET_V3,
    MOBILENET_V3_KERAS,
    assert_float32_rounding,
    calibrate,
    emit,
    images,
    import_generated,
    load_module,
    numpy,
    relative_error,
    run_archspec,
    trainable,
    variant,
)

from archspec import analysis  # noqa: E402
from archspec.parity import randomize  # noqa: E402
from archspec.references.keras_applications import layer_names  # noqa: E402
from archspec.references.keras_applications import model as keras_model  # noqa: E402
from archspec.references.torchvision import from_torchvision, state_dict_names  # noqa: E402

WIDTHS = {"035": 0.35, "050": 0.5, "075": 0.75, "100": 1.0, "130": 1.3, "140": 1.4}
TORCHVISION = (
    [(MOBILENET_V2, f"mobilenet_v2_{w}", "mobilenet_v2") for w in WIDTHS]
    + [(MNASNET, f"mnasnet{w}", "mnasnet") for w in ("0_5", "0_75", "1_0", "1_3")]
    + [
        (MOBILENET_V3, f"mobilenet_v3_{size}_{w}", "mobilenet_v3")
        for size in ("large", "small")
        for w in ("075", "100")
    ]
)
IDS = [name for _, name, _ in TORCHVISION]
# One native-size check per family.
NATIVE = {"mobilenet_v2_100", "mnasnet1_0", "mobilenet_v3_large_100"}
SMALL = 97  # odd at every stride


def reference(name: str):
    if name.startswith(("mobilenet_v2_", "mobilenet_v3_")):
        builder = getattr(torchvision.models, name[:-4])  # mobilenet_v3_small
        return builder(width_mult=WIDTHS[name[-3:]])
    return getattr(torchvision.models, name)()


@pytest.mark.parametrize(("spec", "name", "scheme"), TORCHVISION, ids=IDS)
def test_parameter_count_equals_torchvision(spec, name, scheme, tmp_path):
    net = variant(spec, name)
    cls = getattr(import_generated(net, "torch", tmp_path), net.class_name)
    with torch.device("meta"):
        ours, theirs = cls(), reference(name)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) == analysis.params(net)
    assert set(state_dict_names(net, scheme)) == set(theirs.state_dict())


@pytest.mark.parametrize(("spec", "name", "scheme"), TORCHVISION, ids=IDS)
def test_torchvision_weights_give_torchvision_outputs(spec, name, scheme, tmp_path):
    size = 224 if name in NATIVE else SMALL
    torch.manual_seed(0)
    theirs = reference(name)
    randomize(theirs, size, seed=0)
    net = variant(spec, name)
    ours = getattr(import_generated(net, "torch", tmp_path), net.class_name)().eval()
    ours.load_state_dict(from_torchvision(net, theirs.state_dict(), scheme))
    assert_float32_rounding(ours, theirs, torch.randn(2, 3, size, size))


def test_weights_import_command_for_mnasnet(tmp_path):
    theirs = torchvision.models.mnasnet0_75()
    randomize(theirs, SMALL, seed=3)
    torch.save(theirs.state_dict(), tmp_path / "theirs.pt")
    out = tmp_path / "ours.pt"
    result = run_archspec(
        "weights", "import", "--spec", str(MNASNET), "--variant", "mnasnet0_75",
        "--from", "torchvision", str(tmp_path / "theirs.pt"), "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    net = variant(MNASNET, "mnasnet0_75")
    ours = getattr(import_generated(net, "torch", tmp_path), net.class_name)().eval()
    ours.load_state_dict(torch.load(out, weights_only=True), strict=True)
    x = torch.randn(2, 3, SMALL, SMALL)
    with torch.no_grad():
        assert relative_error(ours(x), theirs.eval()(x)) < 1e-5


# keras.applications.MobileNetV2 -------------------------------------------------

keras = pytest.importorskip("keras")
import numpy as np  # noqa: E402


def keras_pair(name: str, size: int, folder: Path):
    """keras.applications.MobileNetV2(alpha) with calibrated random weights,
    and the generated Keras model holding the same weights."""
    net = variant(MOBILENET_V2_KERAS, name)
    keras.utils.set_random_seed(0)
    app = keras.applications.MobileNetV2(
        alpha=WIDTHS[name[-3:]],
        weights=None,
        classifier_activation=None,
        input_shape=(size, size, 3),
    )
    x = images(np.random.default_rng(2), 4, size) / 127.5 - 1  # "tf" mode
    calibrate(app, np.random.default_rng(1), x)
    module = load_module(emit(net, folder))
    ours = getattr(module, net.module)(input_shape=(size, size, 3))
    for mine, theirs in layer_names(net, "mobilenet_v2").items():
        ours.get_layer(mine).set_weights(app.get_layer(theirs).get_weights())
    return net, app, ours, x


# Forward equality for the widths of distinct structure: 0.35 (the smallest,
# where _make_divisible's 10% guard rounds up: 32 x 0.35 = 11.2 -> 16), 1.0
# (native 224) and 1.4 (the largest, where the head's 1280 scales too). 0.5
# and 0.75 (head kept at 1280, as 0.35's) and 1.3 (head scaled, as 1.4's) take
# the same lines with other numbers (8-10 s each with a forward pass):
# test_keras_structure_equals_keras_applications loads their weights by name.
V2_FORWARD = ["035", "100", "140"]


@pytest.mark.parametrize("width", V2_FORWARD)
def test_keras_mobilenet_v2_equals_keras_applications(width, tmp_path):
    name = f"mobilenet_v2_{width}"
    size = 224 if width == "100" else SMALL
    net, app, ours, x = keras_pair(name, size, tmp_path)
    assert trainable(ours) == trainable(app) == analysis.params(net)
    theirs = numpy(app(x, training=False))
    assert np.array_equal(numpy(ours(x, training=False)), theirs), name
    assert float(np.max(np.abs(theirs[0] - theirs[1]))) > 1e-2 * float(
        np.max(np.abs(theirs))
    )


# keras.applications.MobileNetV3Large / Small ------------------------------------

MOBILENET_V3_KERAS_VARIANTS = [
    f"mobilenet_v3_{size}_{w}"
    for size in ("large", "small")
    for w in ("075", "100", "minimal_100")
]
# Small at 1.0 takes Small at 0.75's lines (SE, hard-swish, the same table)
# without its width rounding: structure only (9 s with a forward pass).
V3_FORWARD = [n for n in MOBILENET_V3_KERAS_VARIANTS if n != "mobilenet_v3_small_100"]


@pytest.mark.parametrize("name", V3_FORWARD)
def test_keras_mobilenet_v3_equals_keras_applications(name, tmp_path):
    """Rescaling inside, SE on the expanded width with a hard-sigmoid gate, the
    1x1-convolution head; minimalistic variants without SE, 3x3 and ReLU."""
    size = 224 if name == "mobilenet_v3_large_100" else SMALL
    net = variant(MOBILENET_V3_KERAS, name)
    constructor, arguments = keras_model(net, "mobilenet_v3")
    assert constructor == f"MobileNetV3{name.split('_')[2].capitalize()}"
    assert arguments == {"alpha": net.source.width, "minimalistic": "minimal" in name}
    keras.utils.set_random_seed(0)
    app = getattr(keras.applications, constructor)(
        weights=None,
        classifier_activation=None,
        input_shape=(size, size, 3),
        **arguments,
    )
    x = images(np.random.default_rng(2), 4, size)  # 0-255: rescaled inside
    calibrate(app, np.random.default_rng(1), x)
    ours = getattr(load_module(emit(net, tmp_path)), net.module)(
        input_shape=(size, size, 3)
    )
    for mine, theirs in layer_names(net, "mobilenet_v3").items():
        ours.get_layer(mine).set_weights(app.get_layer(theirs).get_weights())
    assert trainable(ours) == trainable(app) == analysis.params(net)
    theirs = numpy(app(x, training=False))
    error = float(np.max(np.abs(numpy(ours(x, training=False)) - theirs)))
    # Keras computes the gate as ReLU6(x + 3) * (1 / 6), archspec as
    # hard_sigmoid: float32 rounding apart, no more.
    assert error <= 1e-5 * float(np.max(np.abs(theirs))), name
    assert float(np.max(np.abs(theirs[0] - theirs[1]))) > 1e-2 * float(
        np.max(np.abs(theirs))
    )


# keras.applications.MobileNet (V1) ----------------------------------------------

MOBILENET_V1_WIDTHS = {"025": 0.25, "050": 0.5, "075": 0.75, "100": 1.0}


def mobilenet_v1_pair(net, size: int, folder: Path, **arguments):
    keras.utils.set_random_seed(0)
    app = keras.applications.MobileNet(
        weights=None,
        classifier_activation=None,
        input_shape=(size, size, 3),
        **arguments,
    )
    x = images(np.random.default_rng(2), 4, size) / 127.5 - 1  # "tf" mode
    calibrate(app, np.random.default_rng(1), x)
    ours = getattr(load_module(emit(net, folder)), net.module)(
        input_shape=(size, size, 3)
    )
    for mine, theirs in layer_names(net, "mobilenet_v1").items():
        ours.get_layer(mine).set_weights(app.get_layer(theirs).get_weights())
    return app, ours, x


# Every width of MobileNet's table is a multiple of 32: 0.5 and 0.75 truncate
# nothing 0.25 does not, and run 0.25's lines (5-6 s each with a forward
# pass): structure only, below; 0.25 and 1.0 (native 224) run.
V1_FORWARD = ["025", "100"]


@pytest.mark.parametrize("width", V1_FORWARD)
def test_keras_mobilenet_v1_equals_keras_applications(width, tmp_path):
    """Truncated widths, a "same" stem and "same_even" depthwise padding: on
    the odd size the latter loses a row and column, as Keras's does."""
    name = f"mobilenet_v1_{width}"
    size = 224 if width == "100" else SMALL
    net = variant(MOBILENET_V1, name)
    assert keras_model(net, "mobilenet_v1") == (
        "MobileNet",
        {"alpha": MOBILENET_V1_WIDTHS[width], "depth_multiplier": 1, "dropout": 0.001},
    )
    app, ours, x = mobilenet_v1_pair(net, size, tmp_path, alpha=net.source.width)
    assert trainable(ours) == trainable(app) == analysis.params(net)
    assert ours.output.shape == app.output.shape
    theirs = numpy(app(x, training=False))
    assert np.array_equal(numpy(ours(x, training=False)), theirs), name
    assert float(np.max(np.abs(theirs[0] - theirs[1]))) > 1e-2 * float(
        np.max(np.abs(theirs))
    )


STRUCTURE_ONLY = (
    [
        (MOBILENET_V2_KERAS, f"mobilenet_v2_{w}", "mobilenet_v2")
        for w in WIDTHS
        if w not in V2_FORWARD
    ]
    + [
        (MOBILENET_V3_KERAS, name, "mobilenet_v3")
        for name in MOBILENET_V3_KERAS_VARIANTS
        if name not in V3_FORWARD
    ]
    + [
        (MOBILENET_V1, f"mobilenet_v1_{w}", "mobilenet_v1")
        for w in MOBILENET_V1_WIDTHS
        if w not in V1_FORWARD
    ]
)


@pytest.mark.parametrize(
    ("spec", "name", "scheme"), STRUCTURE_ONLY, ids=[n for _, n, _ in STRUCTURE_ONLY]
)
def test_keras_structure_equals_keras_applications(spec, name, scheme, tmp_path):
    """The widths whose forward pass repeats a kept width's lines: the
    constructor and arguments archspec names, every layer's weights loaded by
    name from keras.applications' model (set_weights checks each shape), and
    the same trainable parameters and output shape, at 32 px, uncalibrated."""
    net = variant(spec, name)
    constructor, arguments = keras_model(net, scheme)
    assert arguments["alpha"] == net.source.width
    app = getattr(keras.applications, constructor)(
        weights=None, classifier_activation=None, input_shape=(32, 32, 3), **arguments
    )
    ours = getattr(load_module(emit(net, tmp_path)), net.module)(
        input_shape=(32, 32, 3)
    )
    for mine, theirs in layer_names(net, scheme).items():
        ours.get_layer(mine).set_weights(app.get_layer(theirs).get_weights())
    assert trainable(ours) == trainable(app) == analysis.params(net)
    assert ours.output.shape == app.output.shape


def test_mobilenet_v1_depth_multiplier(tmp_path):
    """`multiplier` is Keras's depth_multiplier: its weights load, its outputs
    match, and the PyTorch model holds them too (grouped convolution with
    several filters per channel; REFERENCE-FAMILIES.md: 7,426,120 parameters)."""
    spec = tmp_path / "dm2.yaml"
    spec.write_text(
        f"extends: {MOBILENET_V1}\n"
        "scaling:\n  rule: width\n  rounding: {divisor: 1, mode: floor, guard: false}\n"
        "  variants:\n    mobilenet_v1_dm2: {set: {multiplier: 2}}\n"
    )
    net = variant(spec, "mobilenet_v1_dm2")
    assert analysis.params(net) == 7_426_120
    app, ours, x = mobilenet_v1_pair(net, 64, tmp_path, depth_multiplier=2)
    theirs = numpy(app(x, training=False))
    assert np.array_equal(numpy(ours(x, training=False)), theirs)
    # Keras -> PyTorch by name: the same function.
    from archspec.weights import keras_to_torch

    state = keras_to_torch(
        net, {layer.name: layer.get_weights() for layer in ours.layers if layer.weights}
    )
    model = getattr(import_generated(net, "torch", tmp_path), net.class_name)().eval()
    model.load_state_dict(
        {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}
    )
    with torch.no_grad():
        mine = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    # TensorFlow and PyTorch round float32 differently over 27 convolutions
    # (archspec check's tolerance is 5e-5); a wrong multiplier layout is off by
    # the size of the logits themselves.
    assert relative_error(torch.from_numpy(mine), torch.from_numpy(theirs)) < 5e-5


def test_weights_import_command_for_keras_mobilenet_v3_minimal(tmp_path):
    """`archspec weights import --from keras.applications`: the reader builds
    MobileNetV3Small(minimalistic=True) to read the file, by the network alone."""
    name = "mobilenet_v3_small_minimal_100"
    net = variant(MOBILENET_V3_KERAS, name)
    keras.utils.set_random_seed(0)
    app = keras.applications.MobileNetV3Small(
        weights=None, classifier_activation=None, minimalistic=True
    )
    x = images(np.random.default_rng(2), 2, 64)
    calibrate(app, np.random.default_rng(1), x)
    app.save_weights(tmp_path / "theirs.weights.h5")
    out = tmp_path / "ours.weights.h5"
    result = run_archspec(
        "weights", "import", "--spec", str(MOBILENET_V3_KERAS), "--variant", name,
        "--from", "keras.applications", str(tmp_path / "theirs.weights.h5"),
        "--backend", "keras", "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    ours = getattr(load_module(emit(net, tmp_path)), net.module)(
        input_shape=(64, 64, 3)
    )
    ours.load_weights(out)
    theirs = numpy(app(x, training=False))
    error = float(np.max(np.abs(numpy(ours(x, training=False)) - theirs)))
    assert error <= 1e-5 * float(np.max(np.abs(theirs)))
