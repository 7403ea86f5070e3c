"""Stem and stage options of pre-activation ResNets, through both backends.

A stem convolution alone (no batch norm, no activation, a bias of its own),
max pools padded with -inf (PyTorch, timm) or with zeros (keras.applications'
ZeroPadding2D + MaxPooling2D), average pools that count their padding or not,
and stage rows whose last block takes the stride (Keras's ResNetV2). Each is
compiled from a small spec and checked against torch.nn.functional and Keras's
own layers, on maps that are mostly negative: there zeros and -inf differ.
"""

from __future__ import annotations

import json
import os

import pytest

torch = pytest.importorskip("torch")  # before TensorFlow, always
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

import torch.nn.functional as F  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from archspec import analysis, backends, draw, ir, runtime  # noqa: E402
from archspec.errors import SpecError  # noqa: E402
from archspec.pipeline import load_spec, network  # noqa: E402
from archspec.weights import torch_to_keras  # noqa: E402

ROWS = [["basic", 8, 1, 1], ["basic", 16, 2, 2]]


def tiny(tmp_path, stem=None, rows=None, columns=None, variant=None, **extra):
    """A small network: a 3x3 stride-2 stem of 8 channels, two stages of basic
    blocks; `stem` and the rest change the spec (JSON is YAML)."""
    spec = {
        "name": "tiny",
        "class_name": "Tiny",
        "input": {"channels": 3, "resolution": 32},
        "stem": {"channels": 8, "kernel": 3, "stride": 2, **(stem or {})},
        "stages": {
            "columns": columns or ["block", "channels", "layers", "stride"],
            "rows": rows or ROWS,
        },
        "head": {"classes": 10},
        "defaults": {
            "activation": "relu",
            "padding": "symmetric",
            "norm": {"eps": 1e-5, "momentum": 0.1},
        },
        "regularization": {"dropout": 0.0, "drop_path": 0.0},
        "scaling": {"rule": "table", "variants": {"tiny": variant or {}}},
        **extra,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps(spec))
    return network(load_spec(path), variant="tiny")


def models(net, stem_bias=None):
    """The generated PyTorch model (eval mode, random batch norms and biases;
    `stem_bias` for every channel of the stem's) and the Keras model with its
    weights."""
    ours = runtime.torch_model(net).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in ours.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                for t in (m.weight, m.bias, m.running_mean):
                    t.copy_(torch.randn(t.shape, generator=generator) * 0.3)
                m.running_var.copy_(
                    torch.rand(m.running_var.shape, generator=generator) + 0.5
                )
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=generator))
        if stem_bias is not None:
            ours.stem.bias.fill_(stem_bias)
    theirs = runtime.keras_model(net)
    state = {k: v.numpy() for k, v in ours.state_dict().items()}
    for name, arrays in torch_to_keras(net, state).items():
        theirs.get_layer(name).set_weights(arrays)
    return ours, theirs


def nchw(x):
    return torch.from_numpy(np.array(x)).permute(0, 3, 1, 2)


def nhwc(x):
    return x.permute(0, 2, 3, 1).numpy()


def keras_layer(model, name, x):
    """The output of one layer of a Keras model, NCHW if it is a map."""
    sub = keras.Model(model.inputs, model.get_layer(name).output)
    out = keras.ops.convert_to_numpy(sub([x], training=False))
    return nchw(out) if out.ndim == 4 else torch.from_numpy(out)


def inputs(size, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (2, size, size, 3)).astype("float32")


def close(a, b, tolerance=1e-5):
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    assert a.shape == b.shape, (a.shape, b.shape)
    error = float((a - b).abs().max() / b.abs().max())
    assert error < tolerance, error


# A stem convolution alone -------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_stem_convolution_alone(tmp_path, bias):
    net = tiny(tmp_path, {"norm": False, "bias": bias})
    conv = net.stem[0]
    assert (conv.norm, conv.activation, conv.bias) == (None, None, bias)
    assert [w.path for w in conv.weights()] == ["stem"]
    source = backends.get("torch").emit(net)["tiny.py"]
    assert f"self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias={bias})" in source
    # The blocks' convolutions keep the network's bias (none).
    assert "Convolution without bias, batch norm" in source
    ours, theirs = models(net)
    assert isinstance(ours.stem, torch.nn.Conv2d)
    assert (ours.stem.bias is not None) == bias
    params = analysis.params(net)
    assert sum(p.numel() for p in ours.parameters()) == params
    assert sum(int(np.prod(w.shape)) for w in theirs.trainable_weights) == params
    stem = theirs.get_layer("stem")
    assert isinstance(stem, keras.layers.Conv2D) and stem.use_bias == bias
    x = inputs(17)
    with torch.no_grad():
        reference = F.conv2d(nchw(x), ours.stem.weight, ours.stem.bias, 2, 1)
        close(ours.forward_stem(nchw(x)), reference)
    close(keras_layer(theirs, "stem", x), reference)
    # Nothing follows the convolution: its output is negative in places.
    assert float(reference.min()) < 0
    with torch.no_grad():
        close(ours(nchw(x)), keras_layer(theirs, "classifier", x))


def test_stem_bias_defaults_to_the_network(tmp_path):
    assert tiny(tmp_path, {"norm": False}).stem[0].bias is False
    biased = tiny(tmp_path, {"norm": False}, defaults={"bias": True})
    assert biased.stem[0].bias is True
    normed = tiny(tmp_path)
    assert normed.stem[0].norm is not None and normed.stem[0].activation == "relu"


def test_torch_refuses_what_nn_conv2d_cannot_pad(tmp_path):
    net = tiny(tmp_path, {"norm": False, "padding": "same"}, rows=[ROWS[0]])
    with pytest.raises(SpecError, match="pads 'same'"):
        backends.get("torch").emit(net)
    # Keras pads "same" itself.
    assert "x = conv_bn_act(" in backends.get("keras").emit(net)["tiny.py"]


# Max pooling padded with -inf or zeros ----------------------------------------


@pytest.mark.parametrize("size", [17, 18])
@pytest.mark.parametrize("fill", ["-inf", "zero"])
def test_max_pool_fill(tmp_path, fill, size):
    pool = {"op": "max", "kernel": 3, "stride": 2, "padding": 1, "fill": fill}
    net = tiny(tmp_path, {"norm": False, "bias": True, "pool": pool})
    assert net.stem[1].fill == fill
    ours, theirs = models(net, stem_bias=-2.0)  # a map mostly below zero
    x = inputs(size, seed=1)
    with torch.no_grad():
        y = F.conv2d(nchw(x), ours.stem.weight, ours.stem.bias, 2, 1)
        minus_inf = F.max_pool2d(y, 3, 2, 1)
        zeros = F.max_pool2d(F.pad(y, (1, 1, 1, 1)), 3, 2)
        # The border windows tell the two apart.
        assert float((minus_inf - zeros).abs().max()) > 0.5
        reference = minus_inf if fill == "-inf" else zeros
        close(ours.forward_stem(nchw(x)), reference)
    keras_pool = keras_layer(theirs, "stem_pool", x)
    close(keras_pool, reference)
    # Exactly the reference function of the Keras model's own stem output:
    # max pooling picks values, it rounds nothing.
    z = keras_layer(theirs, "stem", x)
    if fill == "-inf":
        exact = F.max_pool2d(z, 3, 2, 1)
    else:
        padded = keras.layers.ZeroPadding2D(1)(nhwc(z))
        exact = nchw(keras.layers.MaxPooling2D(3, strides=2)(padded))
    assert torch.equal(keras_pool, exact)
    source = backends.get("torch").emit(net)["tiny.py"]
    if fill == "zero":
        assert (
            "self.stem_pool = nn.Sequential(nn.ZeroPad2d(1), nn.MaxPool2d(3, stride=2))"
            in source
        )
    else:
        assert "self.stem_pool = nn.MaxPool2d(3, stride=2, padding=1)" in source


def test_zero_filled_max_pool_after_a_relu_is_the_minus_inf_one(tmp_path):
    """After a ReLU both fills are one function, and Keras emits them alike."""
    pool = {"op": "max", "kernel": 3, "stride": 2, "padding": 1}
    texts = {
        fill: backends.get("keras").emit(
            tiny(tmp_path, {"pool": {**pool, "fill": fill}})
        )["tiny.py"]
        for fill in ("-inf", "zero")
    }
    call = 'x = pool(x, "max", pool_size=3, strides=2, padding=1, name="stem_pool")'
    assert all(call in text for text in texts.values())
    assert "exclude_padding" not in texts["-inf"]


# The Keras helper itself, on many shapes -----------------------------------------


@pytest.fixture(scope="module")
def keras_pool(tmp_path_factory):
    """The generated Keras module's pool() with exclude_padding."""
    pool = {"op": "max", "kernel": 3, "stride": 2, "padding": 1}
    net = tiny(tmp_path_factory.mktemp("pool"), {"norm": False, "pool": pool})
    return runtime.import_generated(net, "keras").pool


@pytest.mark.parametrize(
    ("kernel", "stride"), [(3, 1), (3, 2), (5, 1), (5, 2), (7, 2), (3, 3)]
)
def test_keras_pool_leaving_padding_out_is_pytorch_s(keras_pool, kernel, stride):
    pad = kernel // 2
    for size in (5, 8, 9, 14, 15):
        x = (np.random.default_rng(size).normal(0, 1, (2, size, size, 4)) - 3).astype(
            "float32"
        )
        inp = keras.Input((None, None, 4))
        for op in ("max", "avg"):
            out = keras_pool(
                inp, op, kernel, stride, pad, f"p_{op}", exclude_padding=True
            )
            got = nchw(keras.ops.convert_to_numpy(keras.Model(inp, out)(x)))
            if op == "max":
                expected = F.max_pool2d(nchw(x), kernel, stride, pad)
                assert torch.equal(got, expected), (size, kernel, stride)
            else:
                expected = F.avg_pool2d(
                    nchw(x), kernel, stride, pad, count_include_pad=False
                )
                close(got, expected, 1e-6)
                counted = F.avg_pool2d(nchw(x), kernel, stride, pad)
                assert float((counted - expected).abs().max()) > 0.1


# Average pooling that counts its padding or not -------------------------------


@pytest.mark.parametrize("size", [17, 18])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("count_pad", [True, False])
def test_avg_pool_count_pad(tmp_path, count_pad, stride, size):
    pool = {"op": "avg", "kernel": 3, "stride": stride, "padding": 1}
    if not count_pad:
        pool["count_pad"] = False
    net = tiny(tmp_path, {"norm": False, "bias": True, "pool": pool})
    assert net.stem[1].count_pad is count_pad
    ours, theirs = models(net)
    x = inputs(size, seed=2) - 2.0
    with torch.no_grad():
        y = F.conv2d(nchw(x), ours.stem.weight, ours.stem.bias, 2, 1)
        reference = F.avg_pool2d(y, 3, stride, 1, count_include_pad=count_pad)
        other = F.avg_pool2d(y, 3, stride, 1, count_include_pad=not count_pad)
        assert float((reference - other).abs().max()) > 1e-2
        close(ours.forward_stem(nchw(x)), reference)
    close(keras_layer(theirs, "stem_pool", x), reference)
    source = backends.get("torch").emit(net)["tiny.py"]
    assert ("count_include_pad=False" in source) is not count_pad


def test_keras_refuses_padding_it_cannot_leave_out(tmp_path):
    pool = {"op": "avg", "kernel": 2, "stride": 2, "padding": 1, "count_pad": False}
    net = tiny(tmp_path, {"pool": pool})
    with pytest.raises(SpecError, match="odd kernel padded by kernel // 2"):
        backends.get("keras").emit(net)
    assert "count_include_pad=False" in backends.get("torch").emit(net)["tiny.py"]


def test_pool_options_belong_to_their_op(tmp_path):
    for pool, message in (
        ({"op": "avg", "fill": "zero"}, "`fill` is for max pooling"),
        ({"op": "max", "count_pad": False}, "`count_pad` is for average pooling"),
        ({"op": "max", "fill": "zero", "ceil_mode": True}, "fill -inf with ceil_mode"),
    ):
        with pytest.raises(SpecError, match=message):
            tiny(tmp_path, {"pool": pool})
    shape = dict(name="p", kernel=3, stride=2, pad=1, channels=4, in_size=8, out_size=4)
    for wrong in ({"op": "avg", "fill": "zero"}, {"op": "max", "count_pad": False}):
        with pytest.raises(ValidationError):
            ir.Pool(**shape, **wrong)


# The row's stride on its last block ---------------------------------------------


def test_stride_on_the_last_block(tmp_path):
    columns = ["block", "channels", "layers", "stride", "stride_block"]
    rows = [["basic", 8, 2, 2, "last"], ["basic", 16, 3, 2, "first"]]
    net = tiny(tmp_path, {"norm": False}, rows=rows, columns=columns)
    strides = [[b.stride for b in stage.blocks] for stage in net.stages]
    assert strides == [[1, 2], [2, 1, 1]]
    sizes = [[b.out_size for b in stage.blocks] for stage in net.stages]
    assert sizes == [[16, 8], [4, 4, 4]]
    # Without the column, the first block strides, as before.
    default = tiny(tmp_path, rows=[r[:4] for r in rows])
    assert [[b.stride for b in s.blocks] for s in default.stages] == [[2, 1], [2, 1, 1]]
    # A variant may set it for every row.
    every = tiny(
        tmp_path, rows=[r[:4] for r in rows], variant={"set": {"stride_block": "last"}}
    )
    assert [[b.stride for b in s.blocks] for s in every.stages] == [[1, 2], [1, 1, 2]]
    details = [box.detail for box in draw.boxes(net) if box.name.startswith("stage")]
    assert details == ["\u00d72, 8 channels, last /2", "\u00d73, 16 channels, first /2"]
    ours, theirs = models(net)
    source = backends.get("torch").emit(net)["tiny.py"]
    assert "BasicBlock(8, 8),\n" in source
    assert "BasicBlock(8, 8, stride=2),\n" in source
    x = inputs(32, seed=3)
    with torch.no_grad():
        maps = ours.feature_maps(nchw(x))
        logits = ours(nchw(x))
    assert [tuple(m.shape[2:]) for m in maps] == [(8, 8), (4, 4)]
    assert [f["reduction"] for f in ours.feature_info] == [4, 8]
    close(keras_layer(theirs, "classifier", x), logits)


def test_stride_block_is_first_or_last(tmp_path):
    columns = ["block", "channels", "layers", "stride", "stride_block"]
    with pytest.raises(SpecError, match="stride_block"):
        tiny(tmp_path, rows=[["basic", 8, 2, 2, "middle"]], columns=columns)


# The stems of the references themselves ------------------------------------------


def test_stem_equals_keras_applications_resnet_v2(tmp_path):
    """ZeroPadding2D(3) + Conv2D(64, 7, 2, bias), then ZeroPadding2D(1) +
    MaxPooling2D(3, 2) on the unnormalised map: keras.applications' ResNet50V2
    up to `pool1_pool`."""
    pool = {"op": "max", "kernel": 3, "stride": 2, "padding": 1, "fill": "zero"}
    net = tiny(
        tmp_path,
        {"channels": 64, "kernel": 7, "norm": False, "bias": True, "pool": pool},
    )
    app = keras.applications.ResNet50V2(weights=None, input_shape=(64, 64, 3))
    conv1 = app.get_layer("conv1_conv")
    kernel, bias = conv1.get_weights()
    conv1.set_weights([kernel, bias - 0.5])  # a map partly below zero
    reference = keras_layer(app, "pool1_pool", inputs(64, seed=4))
    ours, theirs = models(net)
    theirs.get_layer("stem").set_weights(conv1.get_weights())
    assert torch.equal(keras_layer(theirs, "stem_pool", inputs(64, seed=4)), reference)
    with torch.no_grad():
        ours.stem.weight.copy_(torch.from_numpy(kernel).permute(3, 2, 0, 1))
        ours.stem.bias.copy_(torch.from_numpy(bias - 0.5))
        close(ours.forward_stem(nchw(inputs(64, seed=4))), reference)
        # -inf padding would differ at the border.
        y = F.conv2d(nchw(inputs(64, seed=4)), ours.stem.weight, ours.stem.bias, 2, 3)
        assert float((F.max_pool2d(y, 3, 2, 1) - reference).abs().max()) > 1e-3


def test_stem_equals_timm_resnetv2(tmp_path):
    """timm's resnetv2 stem: Conv2d(3, 64, 7, 2, 3, bias=False), then
    MaxPool2d(3, 2, 1), whose -inf padding Keras leaves out."""
    timm = pytest.importorskip("timm")
    pool = {"op": "max", "kernel": 3, "stride": 2, "padding": 1}
    net = tiny(tmp_path, {"channels": 64, "kernel": 7, "norm": False, "pool": pool})
    reference_model = timm.create_model("resnetv2_18", pretrained=False).eval()
    ours, theirs = models(net)
    ours.load_state_dict(
        {"stem.weight": reference_model.stem.conv.weight}, strict=False
    )
    state = {k: v.numpy() for k, v in ours.state_dict().items()}
    theirs.get_layer("stem").set_weights(torch_to_keras(net, state)["stem"])
    x = inputs(40, seed=5)
    with torch.no_grad():
        reference = reference_model.stem(nchw(x))
        assert float(reference.min()) < 0
        close(ours.forward_stem(nchw(x)), reference)
    close(keras_layer(theirs, "stem_pool", x), reference)
