"""`archspec weights import --from keras.applications` with the legacy HDF5
weight files `keras.applications.X(weights="imagenet")` downloads
(`mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224.h5`,
`resnet50_weights_tf_dim_ordering_tf_kernels.h5`): matched by layer order, as
Keras's legacy loader matches them.

No real weights here (no network): keras.applications' models with
random weights, written by Keras's own legacy writer (MobileNetV2)
and as Keras 2 wrote the downloaded files (ResNet50: weight names
`layer/kernel:0`). The CLI runs in this process (run_here): a process of its
own would import TensorFlow again, and tests/test_keras_efficientnet_v2.py
keeps that path covered.
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")  # before TensorFlow, always

from helpers import (  # noqa: E402
    MOBILENET_V2_KERAS,
    RESNET_KERAS,
    TOLERANCE,
    calibrate,
    draw_norms,
    images,
    import_keras,
    numpy,
    run_here,
    variant,
)
from helpers import array_relative_error as relative_error  # noqa: E402

from archspec.errors import SpecError  # noqa: E402
from archspec.references.keras_applications import (  # noqa: E402
    _is_legacy,
    _legacy_layers,
    _legacy_root,
    _load_keras3,
    _load_legacy,
    layer_names,
)
from archspec.runtime import import_generated, keras_model  # noqa: E402

keras = import_keras()
np = pytest.importorskip("numpy")
h5py = pytest.importorskip("h5py")

from keras.src.legacy.saving import legacy_h5_format  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

SIZE = 64
# keras.applications ResNets expect "caffe" preprocessing outside the model.
CAFFE_MEAN = np.array([103.939, 116.779, 123.68], dtype="float32")


def randomise(model, seed: int, x=None) -> None:
    """Random weights whose signal survives the network, with float32 rounding
    far below TOLERANCE (measured, TensorFlow against PyTorch: about 1e-6 of
    the logits).

    BN scales, shifts and biases are drawn at random. Without `x`, so are the
    BN statistics (ResNet50 keeps its input's signal so). With `x` (MobileNetV2,
    whose signal that loses), they are the batch statistics of `x`, perturbed,
    as helpers.calibrate draws them, every variance raised by a fifth of its
    mean over channels: a channel that hardly varies over a few small images
    otherwise amplifies rounding to 1e-5 of the logits and more.
    """
    rng = np.random.default_rng(seed)
    if x is not None:
        calibrate(model, rng, x, widen=0.2)
        return
    draw_norms(model, rng, statistics=True)


def keras2_style(app, path) -> None:
    """`app`'s weights as Keras 2's save_weights_to_hdf5_group wrote them (the
    files keras.applications downloads): attributes layer_names, backend and
    keras_version; a group per layer, weightless ones too, whose attribute
    weight_names lists its datasets (`conv1_conv/kernel:0`: nested groups),
    trainable weights first."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in app.layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in app.layers:
            group = f.create_group(layer.name)
            weights = layer.trainable_weights + layer.non_trainable_weights
            names = [f"{layer.name}/{w.name}:0" for w in weights]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for name, weight in zip(names, weights, strict=True):
                group.create_dataset(name, data=numpy(weight))


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    """MobileNetV2(alpha=0.35) at 64 px with random weights, its legacy weight
    file (Keras's own legacy writer, laid out as keras.applications' files
    are), the whole model saved as .h5, and a batch in "tf" preprocessing."""
    folder = tmp_path_factory.mktemp("legacy_mobilenet")
    keras.utils.set_random_seed(0)
    app = keras.applications.MobileNetV2(
        weights=None, alpha=0.35, classifier_activation=None,
        input_shape=(SIZE, SIZE, 3),
    )  # fmt: skip
    randomise(app, 1, images(np.random.default_rng(2), 8, SIZE) / 127.5 - 1.0)
    path = folder / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, app)
    whole = folder / "whole.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "This file format is considered legacy"
        app.save(whole)
    x = images(np.random.default_rng(3), 2, SIZE) / 127.5 - 1.0
    return app, path, whole, x.astype("float32")


def weights_import(spec, name: str, src, backend: str, out):
    return run_here(
        "weights", "import", "--spec", str(spec), "--variant", name,
        "--from", "keras.applications", str(src), "-b", backend, "-o", str(out),
    )  # fmt: skip


def test_mobilenet_v2_into_keras(mobilenet, tmp_path):
    """keras.applications' weight-only layout (root attributes layer_names,
    backend, keras_version): every generated layer gets its counterpart's
    arrays, and the logits follow."""
    app, path, _, x = mobilenet
    with h5py.File(path, "r") as f:
        assert {"layer_names", "backend", "keras_version"} <= set(f.attrs)
        assert "layers" not in f and "vars" not in f
    out = tmp_path / "ours.weights.h5"
    result = weights_import(MOBILENET_V2_KERAS, "mobilenet_v2_035", path, "keras", out)
    assert result.returncode == 0, result.stderr
    net = variant(MOBILENET_V2_KERAS, "mobilenet_v2_035")
    ours = keras_model(net)
    ours.load_weights(out)
    for mine, theirs in layer_names(net, "mobilenet_v2").items():
        expected = app.get_layer(theirs).get_weights()
        found = ours.get_layer(mine).get_weights()
        assert all(
            np.array_equal(a, b) for a, b in zip(found, expected, strict=True)
        ), mine
    logits, theirs = numpy(ours(x, training=False)), numpy(app(x, training=False))
    assert relative_error(theirs[0], theirs[1]) > 1e-2  # the input matters
    assert relative_error(logits, theirs) < TOLERANCE


def test_resnet50_keras2_file_into_torch(tmp_path):
    """ResNet50's file as Keras 2 wrote it (weight names `layer/kernel:0`),
    into the PyTorch model as safetensors: conv biases and the shortcut
    projections (which keras.applications builds before the main branch)
    land where they belong."""
    keras.utils.set_random_seed(0)
    app = keras.applications.ResNet50(
        weights=None, classifier_activation=None, input_shape=(SIZE, SIZE, 3)
    )
    randomise(app, 1)
    path = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    keras2_style(app, path)
    out = tmp_path / "ours.safetensors"
    result = weights_import(RESNET_KERAS, "resnet50", path, "torch", out)
    assert result.returncode == 0, result.stderr
    net = variant(RESNET_KERAS, "resnet50")
    ours = getattr(import_generated(net, "torch", tmp_path), net.class_name)().eval()
    ours.load_state_dict(load_file(out), strict=True)
    x = images(np.random.default_rng(3), 2, SIZE)[..., ::-1] - CAFFE_MEAN
    x = np.ascontiguousarray(x, dtype="float32")
    with torch.no_grad():
        logits = ours(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    theirs = numpy(app(x, training=False))
    assert relative_error(theirs[0], theirs[1]) > 1e-2
    assert relative_error(logits, theirs) < TOLERANCE


def test_another_variant_names_the_first_layer_that_does_not_fit(mobilenet, tmp_path):
    """alpha 0.35's file for alpha 0.5: both round the stem and the first
    block to 16 and 8 channels; the second block's projection differs."""
    _, path, _, _ = mobilenet
    out = tmp_path / "ours.safetensors"
    result = weights_import(MOBILENET_V2_KERAS, "mobilenet_v2_050", path, "torch", out)
    assert result.returncode == 2
    assert (
        f"{path}: not weights of keras.applications.MobileNetV2(alpha=0.5): "
        "the file's layer 'block_1_project' (#11; weights (1, 1, 48, 8)) does "
        "not fit the model's layer 'block_1_project' (#11, the generated "
        "model's 'stages_1_0_project_conv'; weights (1, 1, 48, 16))"
    ) in result.stderr
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file


def test_a_layer_short(mobilenet, tmp_path):
    """A file without the classifier (keras.applications' "_notop" layout)
    names the model's layer it lacks, and assigns nothing."""
    app, path, _, _ = mobilenet
    short = tmp_path / "short.h5"
    short.write_bytes(path.read_bytes())
    with h5py.File(short, "r+") as f:
        names = [n for n in f.attrs["layer_names"] if _text(n) != "predictions"]
        f.attrs["layer_names"] = [_text(n).encode() for n in names]
        group = f["Conv_1_bn"]
        for name in group.attrs["weight_names"]:
            group[_text(name)][...] = 0  # would show, were anything assigned
    before = app.get_layer("Conv_1_bn").get_weights()
    with pytest.raises(SpecError) as error:
        _load_legacy(
            app, short, "MobileNetV2(alpha=0.35)", {"predictions": "classifier"}
        )
    assert str(error.value) == (
        f"error: {short}: not weights of keras.applications.MobileNetV2(alpha=0.35): "
        "the file has 104 layers with weights, the model 105; the model's layer "
        "'predictions' (#105, the generated model's 'classifier'; weights "
        "(1280, 1000), (1000,)) has none in the file"
    )
    after = app.get_layer("Conv_1_bn").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(after, before, strict=True))


def test_whole_model_save_is_read_from_model_weights(mobilenet):
    """A whole model saved as .h5 keeps its weights, laid out as a weight
    file, in the group `model_weights`."""
    _, path, whole, _ = mobilenet
    assert _is_legacy(whole) and _is_legacy(path)
    with h5py.File(whole, "r") as f, h5py.File(path, "r") as g:
        assert "layer_names" not in f.attrs
        root = _legacy_root(f)
        assert root.name == "/model_weights"
        a, b = _legacy_layers(root), _legacy_layers(_legacy_root(g))
        assert [name for name, _ in a] == [name for name, _ in b]
        assert all(
            np.array_equal(x[()], y[()])
            for (_, xs), (_, ys) in zip(a, b, strict=True)
            for x, y in zip(xs, ys, strict=True)
        )


def test_keras3_file_under_another_name(mobilenet, tmp_path):
    """Told apart by content, not by name: a Keras 3 weight file renamed .h5
    is read as one (Keras reads it only under a .weights.h5 name)."""
    app, _, _, x = mobilenet
    renamed = tmp_path / "keras3.h5"
    app.save_weights(tmp_path / "app.weights.h5")
    (tmp_path / "app.weights.h5").rename(renamed)
    assert not _is_legacy(renamed)
    before = numpy(app(x, training=False))
    _load_keras3(app, renamed, "MobileNetV2")
    assert np.array_equal(numpy(app(x, training=False)), before)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not weights at all\n", "not an HDF5 file"),
        (None, "an HDF5 file, but no Keras weights"),
    ],
)
def test_not_a_weight_file(content, message, tmp_path):
    src = tmp_path / "weights.h5"
    if content is None:
        with h5py.File(src, "w") as f:
            f.create_group("something")
    else:
        src.write_bytes(content)
    out = tmp_path / "ours.safetensors"
    result = weights_import(MOBILENET_V2_KERAS, "mobilenet_v2_035", src, "torch", out)
    assert result.returncode == 2
    assert f"{src}: {message}" in result.stderr
    assert not out.exists()


def _text(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)
