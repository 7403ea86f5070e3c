"""The reference name maps of pre-activation ResNets: timm's resnetv2_* (scheme
"resnetv2", archspec.references.torchvision) and keras.applications'
ResNet50V2/101V2/152V2 (scheme "resnet_v2", archspec.references
.keras_applications), against the reference models themselves (built without
weights): every tensor of each is named, once, with the shape ours has.
"""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")  # before TensorFlow, always
timm = pytest.importorskip("timm")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from helpers import SPECS  # noqa: E402

from archspec import ir  # noqa: E402
from archspec.errors import SpecError  # noqa: E402
from archspec.pipeline import load_spec, network  # noqa: E402
from archspec.references import Owner  # noqa: E402
from archspec.references import keras_applications as ka  # noqa: E402
from archspec.references import torchvision as tv  # noqa: E402
from archspec.weights import keras_name  # noqa: E402

TIMM = SPECS / "resnet_v2.yaml"
KERAS = SPECS / "resnet_v2_keras.yaml"
_specs: dict = {}


def variant(spec, name: str) -> ir.Network:
    if spec not in _specs:
        _specs[spec] = load_spec(spec)
    return network(_specs[spec], variant=name)


def torch_shapes(net: ir.Network) -> dict[str, tuple[int, ...]]:
    """Our PyTorch state dict's shapes, from the IR (num_batches_tracked aside)."""
    shapes = {}
    for w in net.weights():
        if isinstance(w, ir.BatchNormWeights):
            for suffix in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{w.path}.{suffix}"] = (w.channels,)
        elif isinstance(w, ir.Conv2dWeights):
            shapes[f"{w.path}.weight"] = w.shape
            if w.bias:
                shapes[f"{w.path}.bias"] = (w.out_channels,)
        else:
            shapes[f"{w.path}.weight"] = (w.out_features, w.in_features)
            if w.bias:
                shapes[f"{w.path}.bias"] = (w.out_features,)
    return shapes


def keras_shapes(net: ir.Network) -> dict[str, list[tuple[int, ...]]]:
    """Our Keras layers' weight shapes, from the IR."""
    shapes = {}
    for w in net.weights():
        if isinstance(w, ir.BatchNormWeights):
            arrays = [(w.channels,)] * 4
        elif isinstance(w, ir.Conv2dWeights):
            k = w.kernel
            arrays = [(k, k, w.in_channels // w.groups, w.out_channels)]
            arrays += [(w.out_channels,)] if w.bias else []
        else:
            arrays = [(w.in_features, w.out_features)]
            arrays += [(w.out_features,)] if w.bias else []
        shapes[keras_name(w.path)] = arrays
    return shapes


# timm ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["resnetv2_18", "resnetv2_34", "resnetv2_50", "resnetv2_101", "resnetv2_152"],
)
def test_timm_names_cover_every_tensor(name):
    net = variant(TIMM, name)
    with torch.device("meta"):  # names and shapes only: no memory, no init time
        model = timm.create_model(name, pretrained=False)
    params = sum(p.numel() for p in model.parameters())
    assert params == sum(w.params for w in net.weights())
    theirs = model.state_dict()
    names = tv.state_dict_names(net, "resnetv2")
    assert len(names) == len(set(names.values()))  # one of theirs per tensor of ours
    theirs = {k: tuple(v.shape) for k, v in theirs.items()}
    assert set(names) == set(theirs)
    ours = torch_shapes(net)
    for key, mine in names.items():
        if not key.endswith("num_batches_tracked"):
            assert theirs[key] == ours[mine], key
    renamed = tv.from_torchvision(net, dict.fromkeys(theirs, 0), "resnetv2")
    assert set(renamed) == set(names.values())


def test_timm_names_by_hand():
    names = {
        v: k
        for k, v in tv.state_dict_names(
            variant(TIMM, "resnetv2_50"), "resnetv2"
        ).items()
    }
    assert names["stem.weight"] == "stem.conv.weight"
    assert (
        names["stages.0.0.preact.bn.running_var"]
        == "stages.0.blocks.0.norm1.running_var"
    )
    assert (
        names["stages.0.0.shortcut.weight"]
        == "stages.0.blocks.0.downsample.conv.weight"
    )
    assert names["stages.2.5.conv2.bn.weight"] == "stages.2.blocks.5.norm3.weight"
    assert names["stages.3.2.conv3.weight"] == "stages.3.blocks.2.conv3.weight"
    assert names["head_norm.bn.bias"] == "norm.bias"
    assert names["classifier.bias"] == "head.fc.bias"
    basic = {
        v: k
        for k, v in tv.state_dict_names(
            variant(TIMM, "resnetv2_18"), "resnetv2"
        ).items()
    }
    assert basic["stages.1.0.conv2.weight"] == "stages.1.blocks.0.conv2.weight"
    assert basic["stages.1.0.conv1.bn.weight"] == "stages.1.blocks.0.norm2.weight"
    assert not any("stages.0.0.shortcut" in k for k in basic)  # 64 -> 64, stride 1


def stub(kind: str, part: str, cls=ir.Conv2dWeights, **kw):
    """A weight layer and its owner, made without any IR block class: the
    schemes read only the owner's kind and place, and the layer's part."""
    owner = Owner(SimpleNamespace(kind=kind, name="stages.2.1"), 2, 1, 9)
    if cls is ir.BatchNormWeights:
        return cls("stages.2.1", part, 8), owner
    return cls("stages.2.1", part, 8, 8, 1, **kw), owner


def test_schemes_read_only_kind_and_part():
    net = variant(TIMM, "resnetv2_50")
    layer, owner = stub("preact_bottleneck", "conv2.bn", ir.BatchNormWeights)
    assert tv.resnetv2(net, layer, owner) == "stages.2.blocks.1.norm3"
    layer, owner = stub("preact_basic", "shortcut")
    assert tv.resnetv2(net, layer, owner) == "stages.2.blocks.1.downsample.conv"
    with pytest.raises(SpecError, match="ResNetV2 has no 'bottleneck' blocks"):
        tv.resnetv2(net, *stub("bottleneck", "conv1.conv"))
    with pytest.raises(
        SpecError, match=r"no counterpart for 'stages\.2\.1\.se\.reduce'"
    ):
        tv.resnetv2(net, *stub("preact_bottleneck", "se.reduce", bias=True))
    # A basic block's conv2 is bare: it has no batch norm after it.
    with pytest.raises(SpecError, match="no counterpart"):
        tv.resnetv2(net, *stub("preact_basic", "conv2.bn", ir.BatchNormWeights))


# keras.applications -------------------------------------------------------------

keras = pytest.importorskip("keras")

KERAS_MODELS = {
    "resnet50v2": "ResNet50V2",
    "resnet101v2": "ResNet101V2",
    "resnet152v2": "ResNet152V2",
}


@pytest.mark.parametrize("name", list(KERAS_MODELS))
def test_keras_names_cover_every_layer(name):
    net = variant(KERAS, name)
    assert ka.model_name(net, "resnet_v2") == KERAS_MODELS[name]
    app = getattr(keras.applications, KERAS_MODELS[name])(
        weights=None, classifier_activation=None
    )
    theirs = {
        layer.name: [tuple(w.shape) for w in layer.weights]
        for layer in app.layers
        if layer.weights
    }
    names = ka.layer_names(net, "resnet_v2")
    assert len(set(names.values())) == len(names)
    assert set(names.values()) == set(theirs)
    ours = keras_shapes(net)
    for mine, their in names.items():
        assert ours[mine] == theirs[their], (mine, their)
    trainable = sum(math.prod(w.shape) for w in app.trainable_weights)
    assert trainable == sum(w.params for w in net.weights())
    keras.backend.clear_session()


def test_keras_names_by_hand():
    names = ka.layer_names(variant(KERAS, "resnet50v2"), "resnet_v2")
    assert names["stem"] == "conv1_conv"
    assert names["stages_0_0_preact_bn"] == "conv2_block1_preact_bn"
    assert names["stages_0_0_shortcut"] == "conv2_block1_0_conv"
    assert names["stages_1_3_conv2_conv"] == "conv3_block4_2_conv"
    assert names["stages_3_2_conv3"] == "conv5_block3_3_conv"
    assert names["head_norm_bn"] == "post_bn"
    assert names["classifier"] == "predictions"
    # The last block of a stack strides, and has no projection.
    assert "stages_0_2_shortcut" not in names


def test_keras_scheme_refuses_what_keras_lacks():
    timm_like = variant(TIMM, "resnetv2_18")
    with pytest.raises(SpecError, match="no 'preact_basic' block"):
        ka.layer_names(timm_like, "resnet_v2")
    with pytest.raises(SpecError, match=r"no keras\.applications resnet_v2 model"):
        ka.model_name(timm_like, "resnet_v2")


def test_read_weights_finds_resnet50v2(tmp_path):
    net = variant(KERAS, "resnet50v2")
    keras.utils.set_random_seed(0)
    app = keras.applications.ResNet50V2(weights=None, classifier_activation=None)
    app.save_weights(tmp_path / "app.weights.h5")
    read = ka.read_weights(net, "resnet_v2", tmp_path / "app.weights.h5")
    names = ka.layer_names(net, "resnet_v2")
    assert set(read) == set(names)
    for mine, theirs in [
        ("stem", "conv1_conv"),
        ("stages_2_0_shortcut", "conv4_block1_0_conv"),
    ]:
        expected = app.get_layer(theirs).get_weights()
        assert all((a == b).all() for a, b in zip(read[mine], expected, strict=True))
    keras.backend.clear_session()
