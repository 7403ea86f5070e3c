"""ResNet, Wide ResNet and SE-ResNet against torchvision and timm: parameter
counts, and logits with the reference's weights brought in by name.

"Equal to float32 rounding" is measured, not assumed: both the reference and
the generated model run in float32 against the reference in float64, and the
generated model must be no further from that truth than about the reference
itself is (measured: ResNet-50 at 224, 1.4e-5 vs the reference's 1.6e-5;
Wide ResNet-101-2 at 65, 7.8e-5 vs 8.7e-5).

Logits are compared for one variant per depth-independent structure (LOGITS):
ResNet-18/34 (basic block), ResNet-50 (bottleneck), Wide ResNet-50-2 (the
widened bottleneck), SE-ResNet-18/34/50; ResNet-101/152, Wide ResNet-101-2
and SE-ResNet-101/152 repeat those blocks in deeper stages only (~30 s of the
suite), and their parameter counts and every tensor name stay compared in
test_parameter_count_equals_the_reference.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

from helpers import (  # noqa: E402
    RESNET,
    SE_RESNET,
    assert_float32_rounding,
    import_generated,
    relative_error,
    run_archspec,
    run_here,
    variant,
)

from archspec import analysis  # noqa: E402
from archspec.errors import SpecError  # noqa: E402
from archspec.parity import randomize  # noqa: E402
from archspec.references.torchvision import from_torchvision, state_dict_names  # noqa: E402

TORCHVISION = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
    "wide_resnet101_2",
]
TIMM = ["seresnet18", "seresnet34", "seresnet50", "seresnet101", "seresnet152"]
CASES = [(RESNET, name) for name in TORCHVISION] + [(SE_RESNET, name) for name in TIMM]
NATIVE = {"resnet50", "seresnet50"}  # one native-size check per family
SMALL = 65  # odd at every stride: the padding rules are exercised


def reference(name: str):
    if name in TORCHVISION:
        return getattr(torchvision.models, name)()
    return timm.create_model(name)


def generated(spec, name, folder):
    net = variant(spec, name)
    return net, getattr(import_generated(net, "torch", folder), net.class_name)


@pytest.mark.parametrize(("spec", "name"), CASES, ids=[n for _, n in CASES])
def test_parameter_count_equals_the_reference(spec, name, tmp_path):
    net, cls = generated(spec, name, tmp_path)
    with torch.device("meta"):  # counted without allocating the weights
        ours, theirs = cls(), reference(name)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters())
    assert count == analysis.params(net)
    assert set(state_dict_names(net, "resnet")) == set(theirs.state_dict())


DEEPER = {"resnet101", "resnet152", "wide_resnet101_2", "seresnet101", "seresnet152"}
LOGITS = [(spec, name) for spec, name in CASES if name not in DEEPER]


@pytest.mark.parametrize(("spec", "name"), LOGITS, ids=[n for _, n in LOGITS])
def test_reference_weights_give_the_reference_logits(spec, name, tmp_path):
    size = 224 if name in NATIVE else SMALL
    torch.manual_seed(0)
    theirs = reference(name)
    randomize(theirs, size, seed=0)
    net, cls = generated(spec, name, tmp_path)
    ours = cls().eval()
    ours.load_state_dict(from_torchvision(net, theirs.state_dict(), "resnet"))
    assert_float32_rounding(ours, theirs, torch.randn(2, 3, size, size))


@pytest.mark.parametrize(
    ("spec", "name", "source", "suffix"),
    [
        (RESNET, "resnet18", "torchvision", ".pt"),
        # timm and the model hubs ship safetensors: read and written as such.
        (SE_RESNET, "seresnet18", "timm", ".safetensors"),
    ],
)
def test_weights_import_command(spec, name, source, suffix, tmp_path):
    """`archspec weights import` on what the reference writes, loaded strictly."""
    from safetensors.torch import load_file, save_file

    theirs = reference(name)
    randomize(theirs, SMALL, seed=1)
    given, out = tmp_path / f"theirs{suffix}", tmp_path / f"ours{suffix}"
    if suffix == ".pt":
        torch.save(theirs.state_dict(), given)
    else:
        save_file(theirs.state_dict(), given)
    result = run_archspec(
        "weights", "import", "--spec", str(spec), "--variant", name,
        "--from", source, str(given), "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    _net, cls = generated(spec, name, tmp_path)
    ours = cls().eval()
    state = torch.load(out, weights_only=True) if suffix == ".pt" else load_file(out)
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, SMALL, SMALL)
    with torch.no_grad():
        assert relative_error(ours(x), theirs.eval()(x)) < 1e-5


def test_weights_import_refuses_the_wrong_variant(tmp_path):
    """In this process (run_here): four processes importing the CLI took 10 s;
    the command as a process of its own is test_weights_import_command's."""
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "r50.pt")
    out = tmp_path / "ours.pt"
    for args, message in [
        # Same keys as ResNet-50, other shapes: named, nothing written.
        (["--variant", "wide_resnet50_2"], "'stages.0.0.conv1.conv.weight' has shape"),
        (["--variant", "resnet34"], "unexpected ['layer1.0.bn3.bias'"),
    ]:
        result = run_here(
            "weights", "import", "--spec", str(RESNET), *args,
            "--from", "torchvision", str(tmp_path / "r50.pt"), "-o", str(out),
        )  # fmt: skip
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "r50.pt"]
    result = run_here(
        "weights", "import", "--spec", str(SE_RESNET), "--variant", "seresnet50",
        "--from", "torchvision", str(tmp_path / "r50.pt"), "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 2
    assert "names no torchvision counterpart" in result.stderr
    broken = tmp_path / "r50.safetensors"
    broken.write_bytes((tmp_path / "r50.pt").read_bytes()[:1000])
    result = run_here(
        "weights", "import", "--spec", str(RESNET), "--variant", "resnet50",
        "--from", "torchvision", str(broken), "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 2 and "not a safetensors file" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_mapping_refuses_a_partial_state_dict():
    net = variant(RESNET, "resnet18")
    state = torchvision.models.resnet18().state_dict()
    del state["layer2.0.downsample.1.running_var"]
    with pytest.raises(
        SpecError, match=r"missing \['layer2.0.downsample.1.running_var'\]"
    ):
        from_torchvision(net, state, "resnet")


def test_drop_path_trains_and_is_off_in_eval(tmp_path):
    """timm trains ResNets with stochastic depth: the rate reaches every block
    linearly, drops whole samples in training, and eval mode is deterministic."""
    _net, cls = generated(RESNET, "resnet18", tmp_path)
    model = cls(drop_path_rate=0.4, num_classes=10)
    rates = [block.drop_path for stage in model.stages for block in stage]
    assert rates == [0.4 * i / 8 for i in range(8)]
    x = torch.randn(4, 3, SMALL, SMALL)
    model.train()
    loss = model(x).logsumexp(1).sum()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
