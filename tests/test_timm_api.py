"""timm's model API on every generated PyTorch model, exercised through timm's
own functions: the data config and transform, the optimizer factory with
layer-wise decay, model EMA, forward_intermediates and
prune_intermediate_layers, and gradient checkpointing (issue 24)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

from helpers import FAMILIES, IDS, SPECS, import_generated, smallest  # noqa: E402
from PIL import Image  # noqa: E402
from timm.data import (  # noqa: E402
    create_transform,
    resolve_data_config,
    resolve_model_data_config,
)
from timm.optim import create_optimizer_v2  # noqa: E402
from timm.utils import ModelEmaV3  # noqa: E402

import archspec  # noqa: E402
from archspec import pipeline  # noqa: E402
from archspec.parity import randomize  # noqa: E402

SIZE = 64


@pytest.fixture(scope="module", params=FAMILIES, ids=IDS)
def family(request):
    spec = request.param
    net = pipeline.network(pipeline.load_spec(spec), variant=smallest(spec))
    torch.manual_seed(0)
    model = archspec.create_model(net).eval()
    randomize(model, SIZE, seed=0)
    x = torch.rand(2, 3, SIZE, SIZE) * (255 if net.input.preprocess else 1)
    return net, model, x


def image(size: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size + 37, size + 21, 3), np.uint8))


def test_data_config_and_transform_feed_the_model(family):
    net, model, _ = family
    config = resolve_model_data_config(model)
    r, data = net.input.resolution, net.input.data
    assert config["input_size"] == (3, r, r)
    if net.input.preprocess:  # the model takes 0-255
        assert config["mean"] == (0.0,) * 3 and config["std"] == (1 / 255,) * 3
    elif data and data.mean:
        assert (config["mean"], config["std"]) == (data.mean, data.std)
    if data and data.interpolation:
        assert config["interpolation"] == data.interpolation
    if data and data.crop_pct:
        assert config["crop_pct"] == data.crop_pct
    x = create_transform(**config)(image(r))
    assert x.shape == (3, r, r)
    if net.input.preprocess:
        assert x.min() >= 0 and 1 < x.max() <= 255
    cfg = model.pretrained_cfg
    first = model.get_submodule(cfg["first_conv"])
    assert isinstance(first, torch.nn.Conv2d) and first.in_channels == 3
    assert model.get_submodule(cfg["classifier"]) is model.get_classifier()
    assert model.default_cfg is cfg


# (spec, variant, torchvision's builder): the transform of the weights whose
# accuracy the spec cites (IMAGENET1K_V1), against timm's transform from our
# data config, on the same image.
TORCHVISION = [
    ("resnet", "resnet50", "resnet50"),  # bilinear, 256 -> 224
    ("b0_torchvision", "b1", "efficientnet_b1"),  # bicubic 256 -> 240
    ("b0_torchvision", "b3", "efficientnet_b3"),  # bicubic 320 -> 300
    ("efficientnet_v2", "efficientnet_v2_l", "efficientnet_v2_l"),  # mean 0.5
    ("mnasnet", "mnasnet0_75", "mnasnet0_75"),  # 232 -> 224
    ("mobilenet_v3", "mobilenet_v3_small_100", "mobilenet_v3_small"),
]


@pytest.mark.parametrize(("spec", "name", "builder"), TORCHVISION)
def test_data_config_is_torchvisions_transform(spec, name, builder, tmp_path):
    net = pipeline.network(pipeline.load_spec(SPECS / f"{spec}.yaml"), variant=name)
    module = import_generated(net, "torch", tmp_path)
    ours = create_transform(**resolve_data_config(pretrained_cfg=module.PRETRAINED_CFG))
    theirs = torchvision.models.get_model_weights(builder).IMAGENET1K_V1.transforms()
    picture = image(net.input.resolution)
    assert torch.allclose(ours(picture), theirs(picture), atol=1e-5)


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ("se_resnet", "seresnet50"),
        ("resnet_v2", "resnetv2_50"),
        ("resnet_v2", "resnetv2_18"),
        ("nasnet", "nasnetalarge"),
        ("pnasnet", "pnasnet5large"),
    ],
)
def test_pretrained_cfg_is_timms(spec, name, tmp_path):
    net = pipeline.network(pipeline.load_spec(SPECS / f"{spec}.yaml"), variant=name)
    ours = import_generated(net, "torch", tmp_path).PRETRAINED_CFG
    theirs = timm.models.get_pretrained_cfg(name).to_dict()
    for key in ("input_size", "interpolation", "mean", "std", "num_classes"):
        assert tuple(np.ravel(ours[key])) == tuple(np.ravel(theirs[key])), key
    # timm rounds crop_pct (0.911 for 331 / 363): the same resize.
    r = net.input.resolution
    assert math.floor(r / ours["crop_pct"]) == math.floor(r / theirs["crop_pct"])


def test_layer_decay_optimizer(family):
    """create_optimizer_v2(layer_decay=0.7) reads group_matcher() and
    no_weight_decay(): the stem learns slowest, each block faster than the one
    before, the layers after the stages at the full rate; no decay on batch
    norm and biases."""
    _, model, _ = family
    optimizer = create_optimizer_v2(
        model, "sgd", lr=0.1, weight_decay=1e-4, layer_decay=0.7
    )
    scale, decay = {}, {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert id(p) not in scale  # in one group only
            scale[id(p)], decay[id(p)] = group["lr_scale"], group["weight_decay"]
    named = dict(model.named_parameters())
    assert set(scale) == {id(p) for p in named.values()}
    blocks = [b for stage in model.stages for b in stage]
    assert len(set(scale.values())) == len(blocks) + 2
    by_block = [max(scale[id(p)] for p in block.parameters()) for block in blocks]
    assert by_block == sorted(by_block) and len(set(by_block)) == len(blocks)
    stem = [scale[id(p)] for n, p in named.items() if n.startswith("stem")]
    assert max(stem) == min(scale.values()) == pytest.approx(0.7 ** (len(blocks) + 1))
    assert scale[id(model.get_classifier().weight)] == 1.0
    no_decay = model.no_weight_decay()
    assert no_decay == {n for n, p in named.items() if p.ndim <= 1}
    assert all((decay[id(p)] == 0) == (n in no_decay) for n, p in named.items())
    coarse = model.group_matcher(coarse=True)["blocks"][0][0]
    assert coarse == r"^stages\.(\d+)"


@pytest.mark.parametrize(
    "spec",
    # One per kind of kept fold: ConvBNAct's, DenseLayer's, and cells'.
    [
        SPECS / "b0_torchvision.yaml",
        SPECS / "densenet.yaml",
        SPECS / "nasnet_keras.yaml",
    ],
    ids=lambda spec: spec.stem,
)
def test_model_ema_updates_what_eval_computes(spec):
    """timm's ModelEmaV3 averages the weights in place: the EMA copy's eval
    output follows (the batch norm it keeps folded is folded again)."""
    model = archspec.create_model(spec, smallest(spec)).eval()
    randomize(model, SIZE, seed=0)
    x = torch.rand(2, 3, SIZE, SIZE)
    ema = ModelEmaV3(model, decay=0.5)
    with torch.no_grad():
        before = ema.module(x)
        for p in model.parameters():
            p.mul_(1.5)
        ema.update(model)
        for mine, averaged in zip(
            model.parameters(), ema.module.parameters(), strict=True
        ):
            assert torch.allclose(averaged, mine * (1.25 / 1.5))
        after = ema.module(x)
    assert not torch.equal(after, before)
    with torch.enable_grad():  # folds on the call itself
        assert torch.allclose(ema.module(x), after, rtol=1e-6, atol=1e-6)


def test_forward_intermediates_and_prune(family):
    net, model, x = family
    n = len(model.feature_info)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        assert [m.shape[1] for m in maps] == [f["num_chs"] for f in model.feature_info]
        last = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert all(map(torch.equal, last, maps[-2:])) and len(last) == 2
        ends = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
        assert torch.equal(ends[0], maps[0]) and torch.equal(ends[1], maps[-1])
        early, taken = model.forward_intermediates(x, indices=[1], stop_early=True)
        assert torch.equal(early, maps[1]) and torch.equal(taken[0], maps[1])
        if net.head[0].kind == "norm_act":  # ResNetV2, DenseNet: a final norm
            _, normed = model.forward_intermediates(x, norm=True)
            assert torch.equal(normed[-1], final)
    with pytest.raises(ValueError, match="indices"):
        model.forward_intermediates(x, indices=n + 1)
    pruned = copy.deepcopy(model)
    assert pruned.prune_intermediate_layers(indices=[0, 1]) == [0, 1]
    assert sum(p.numel() for p in pruned.parameters()) < sum(
        p.numel() for p in model.parameters()
    )
    with torch.no_grad():
        kept = pruned.forward_intermediates(x, intermediates_only=True)
        assert len(kept) == 2 and all(map(torch.equal, kept, maps[:2]))
        pooled = pruned(x)  # the head went with the stages: pooled features
    assert (
        pooled.shape
        == (2, model.feature_info[1]["num_chs"])
        == (
            2,
            pruned.num_features,
        )
    )


def saved_bytes(model, x) -> tuple[int, list]:
    """Bytes of maps autograd keeps for the backward pass of one training step
    (outside checkpointed blocks; weights not counted), and the gradients."""
    total = 0
    weights = {p.data_ptr() for p in model.parameters()}

    def pack(t):
        nonlocal total
        if t.data_ptr() not in weights:
            total += t.numel() * t.element_size()
        return t

    model.zero_grad()
    torch.manual_seed(1)  # the same dropout and drop path in both runs
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x).square().mean()
    loss.backward()
    return total, [p.grad.clone() for p in model.parameters()]


def test_grad_checkpointing_keeps_less_and_gives_the_same_gradients(family):
    _, model, x = family
    model = copy.deepcopy(model).train()
    plain, expected = saved_bytes(model, x)
    model.set_grad_checkpointing()
    kept, grads = saved_bytes(model, x)
    assert kept < 0.5 * plain
    for a, b in zip(grads, expected, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
