"""The fine-tuning and backbone API of every generated PyTorch model (timm's
conventions): num_classes (0: pooled features), drop_rate, drop_path_rate,
forward_features, forward_head, reset_classifier, feature_maps and
feature_info, checked against timm's and torchvision's own feature extractors."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

from helpers import (  # noqa: E402
    B0_TV,
    FAMILIES,
    IDS,
    RESNET,
    SE_RESNET,
    assert_rounding,
    relative_error,
    smallest,
)

import archspec  # noqa: E402
from archspec import pipeline  # noqa: E402
from archspec.parity import randomize  # noqa: E402
from archspec.references.torchvision import from_torchvision  # noqa: E402

SIZE = 64
# timm's model of each family's smallest variant, for its feature_info.
TIMM = {
    "b0": "efficientnet_b0",
    "b0_torchvision": "efficientnet_b0",
    "mnasnet": "mnasnet_050",
    # timm has MobileNetV1 at width 1.0 only: its channels x 0.25 (int(c * 0.25)).
    "mobilenet_v1": ("mobilenetv1_100", 0.25),
    "mobilenet_v3": "mobilenetv3_small_075",
    "mobilenet_v3_keras": "tf_mobilenetv3_small_075",
    "densenet": "densenet121",
    "densenet_keras": "densenet121",
    "efficientnet_v2": "tf_efficientnetv2_s",  # torchvision's S is TF's
    "efficientnet_v2_keras": "tf_efficientnetv2_b0",
    "mobilenet_v2": "mobilenetv2_035",
    "mobilenet_v2_keras": "mobilenetv2_035",
    "resnet": "resnet18",
    "resnet_keras": "resnet50",
    "se_resnet": "seresnet18",
    "resnet_v2": "resnetv2_18",
    # NASNet-A Mobile's levels are timm's Large ones at 44 / 168 of the width.
    "nasnet_keras": ("nasnetalarge", 44 / 168),
}
# keras.applications' ResNetV2 strides on the last block of each stack: its
# 4x map exists only inside stage 1, so its stage groups end at 8x, 16x, 32x
# (timm has no such network to compare with).
LAST_BLOCK_STRIDES = {"resnet_v2_keras": [8, 16, 32]}
# timm counts MobileNetV3's 1x1 head convolution (6x the last stage's width)
# in its last stage: there its last level is archspec's num_features.
HEAD_IN_LAST_STAGE = {"mobilenet_v3", "mobilenet_v3_keras"}


@pytest.fixture(scope="module", params=FAMILIES, ids=IDS)
def family(request):
    spec = request.param
    torch.manual_seed(0)
    model = archspec.create_model(spec, smallest(spec)).eval()
    randomize(model, SIZE, seed=0)  # BN statistics that keep the signal alive
    x = torch.rand(2, 3, SIZE, SIZE) * (255 if hasattr(model, "preprocess") else 1)
    return spec, model, x


def test_forward_is_features_then_head(family):
    _, model, x = family
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
        assert features.shape[1] == model.num_features
        assert pooled.shape == (2, model.head_hidden_size)
        assert torch.equal(model.forward_head(features), logits)
        if isinstance(model.classifier, torch.nn.Conv2d):
            # keras.applications' layout (MobileNetV1/V3): the classifier is
            # a 1x1 convolution on the pooled map; pre_logits are flat.
            pooled = pooled[..., None, None]
        assert torch.equal(model.classifier(pooled).flatten(1), logits)
        assert relative_error(logits[0], logits[1]) > 1e-3  # the input matters


def test_feature_maps_match_feature_info_and_timm(family):
    spec, model, x = family
    info = model.feature_info
    with torch.no_grad():
        maps = model.feature_maps(x)
    assert [m.shape[1] for m in maps] == [f["num_chs"] for f in info]
    assert [SIZE // m.shape[-1] for m in maps] == [f["reduction"] for f in info]
    # The last group ends the last stage, which forward_features continues.
    assert info[-1]["module"] == f"stages.{len(model.stages) - 1}"
    if spec.stem in LAST_BLOCK_STRIDES:
        assert [f["reduction"] for f in info] == LAST_BLOCK_STRIDES[spec.stem]
        return
    assert [f["reduction"] for f in info][-4:] == [4, 8, 16, 32]
    # timm's feature extractor of the same network: the same levels (timm
    # adds the stem's output where no stage has reduction 2).
    name, scale = (
        TIMM[spec.stem] if isinstance(TIMM[spec.stem], tuple) else (TIMM[spec.stem], 1)
    )
    theirs = timm.create_model(name, pretrained=False).feature_info
    theirs = [
        (int(f["num_chs"] * scale), f["reduction"])
        for f in theirs
        if f["module"]
        not in ("act1", "bn1", "features.norm0", "stem.conv", "conv0")  # stems
    ]
    ours = [(f["num_chs"], f["reduction"]) for f in info]
    if spec.stem in HEAD_IN_LAST_STAGE:
        ours[-1] = (model.num_features, ours[-1][1])
    assert ours == theirs


def test_num_classes_zero_and_reset_classifier(family):
    spec, model, x = family
    with torch.device("meta"):  # the constructor's num_classes=0, unallocated
        backbone = archspec.create_model(spec, smallest(spec), num_classes=0)
        assert backbone(x.to("meta")).shape == (2, model.head_hidden_size)
    assert isinstance(backbone.classifier, torch.nn.Identity)
    assert set(backbone.state_dict()) == {
        k for k in model.state_dict() if not k.startswith("classifier.")
    }
    model = copy.deepcopy(model)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(0)
        assert torch.equal(model(x), pooled) and model.num_classes == 0
        model.reset_classifier(7)
        assert model(x).shape == (2, 7) and model.num_classes == 7
        assert model.classifier.weight.abs().max() > 0


def test_drop_rate_and_drop_path_rate_reach_the_layers():
    spec = FAMILIES[0]
    model = archspec.create_model(
        spec, smallest(spec), drop_rate=0.3, drop_path_rate=0.4
    )
    assert model.dropout.p == 0.3
    blocks = [block for stage in model.stages for block in stage]
    assert blocks[0].drop_path == 0.0
    assert blocks[-1].drop_path == pytest.approx(0.4 * (len(blocks) - 1) / len(blocks))
    model.train()
    x = torch.rand(4, 3, 32, 32) * 255
    torch.manual_seed(0)
    a = model(x)
    b = model(x)
    assert not torch.equal(a, b)  # dropout and drop path are live in training


def assert_same_maps(ours, extractor, x) -> None:
    """Each of our maps is the extractor's: the same function in float64, and
    float32 rounding in float32 (helpers.assert_rounding)."""
    with torch.no_grad():
        truth = extractor_outputs(copy.deepcopy(extractor).double(), x.double())
        theirs = extractor_outputs(extractor, x)
        ours_64 = copy.deepcopy(ours).double().feature_maps(x.double())
        maps = zip(ours.feature_maps(x), ours_64, theirs, truth, strict=True)
        for a, a_64, b, t in maps:
            assert_rounding(a, a_64, b, t)


def extractor_outputs(extractor, x):
    out = extractor.eval()(x)
    return list(out.values()) if isinstance(out, dict) else out


@pytest.mark.parametrize(
    ("spec", "name", "scheme"),
    [(RESNET, "resnet18", "resnet"), (SE_RESNET, "seresnet18", "resnet")],
)
def test_feature_maps_equal_timm_features_only(spec, name, scheme):
    """With the reference's weights, the stage maps are timm's features_only
    outputs (out_indices 1-4: the four stages) to float32 rounding."""
    torch.manual_seed(0)
    theirs = timm.create_model(name, pretrained=False)
    randomize(theirs, SIZE, seed=0)
    extractor = timm.create_model(name, features_only=True, out_indices=(1, 2, 3, 4))
    extractor.load_state_dict(
        {k: v for k, v in theirs.state_dict().items() if not k.startswith("fc.")}
    )
    net = pipeline.network(pipeline.load_spec(spec), variant=name)
    ours = archspec.create_model(net).eval()
    ours.load_state_dict(from_torchvision(net, theirs.state_dict(), scheme))
    assert_same_maps(ours, extractor, torch.randn(2, 3, SIZE + 1, SIZE + 1))


def test_feature_maps_equal_torchvision_efficientnet_stages():
    """EfficientNet-B0 with torchvision's weights: feature_maps() are the
    outputs of torchvision's features.1, .2, .3, .5 and .7."""
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    theirs = torchvision.models.efficientnet_b0().eval()
    randomize(theirs, SIZE, seed=0)
    net = pipeline.network(pipeline.load_spec(B0_TV), variant="b0")
    ours = archspec.create_model(net).eval()
    ours.load_state_dict(from_torchvision(net, theirs.state_dict(), "efficientnet"))
    nodes = [
        f"features.{int(f['module'].split('.')[1]) + 1}" for f in ours.feature_info
    ]
    extractor = create_feature_extractor(theirs, return_nodes=nodes)
    assert_same_maps(ours, extractor, torch.randn(2, 3, SIZE, SIZE))
