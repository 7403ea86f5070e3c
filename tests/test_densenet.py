"""DenseNet (specs/densenet.yaml) against torchvision's densenet121/161/169/201
(and timm's, which share its names): parameter counts, and outputs with the
reference's weights brought in by name (`archspec weights import`).

"Equal to float32 rounding" as for the other families (tests/helpers.py).
DenseNet-121 runs at its native 224, 161 and 169 at a small odd size; 201's
outputs are not compared (5.6 s): it is 169 with deeper last stages, and its
parameter count and every tensor name are compared below. The
generated DenseBlock has two paths (a preallocated buffer without autograd,
torchvision's list of features with it): both are compared, and train mode.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")  # before TensorFlow, always
torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

from helpers import (  # noqa: E402
    SPECS,
    assert_float32_rounding,
    import_generated,
    relative_error,
    run_here,
    variant,
)

from archspec import analysis  # noqa: E402
from archspec.parity import randomize  # noqa: E402
from archspec.references.torchvision import from_torchvision, state_dict_names  # noqa: E402

SPEC = SPECS / "densenet.yaml"
VARIANTS = ["densenet121", "densenet161", "densenet169", "densenet201"]
SIZES = {"densenet121": 224, "densenet161": 65, "densenet169": 65, "densenet201": 65}


@pytest.mark.parametrize("name", VARIANTS)
def test_parameter_count_equals_torchvision(name, tmp_path):
    net = variant(SPEC, name)
    cls = getattr(import_generated(net, "torch", tmp_path), net.class_name)
    with torch.device("meta"):
        ours, theirs = cls(), getattr(torchvision.models, name)()
        timm_model = timm.create_model(name)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) == analysis.params(net)
    names = set(state_dict_names(net, "densenet"))
    assert names == set(theirs.state_dict()) == set(timm_model.state_dict())


@pytest.mark.parametrize("name", VARIANTS[:3])  # not 201: see the docstring
def test_torchvision_weights_give_torchvision_outputs(name, tmp_path):
    """DenseNet-169's weights go through `archspec weights import` (in this
    process, as run_here runs the CLI: a process of its own imported torch and
    the CLI again, ~8 s; the command as a process of its own is
    test_resnet_family's and test_mobile_family's import tests)."""
    size = SIZES[name]
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)()
    randomize(theirs, size, seed=0)
    net = variant(SPEC, name)
    ours = getattr(import_generated(net, "torch", tmp_path), net.class_name)().eval()
    if name == "densenet169":
        torch.save(theirs.state_dict(), tmp_path / "theirs.pt")
        result = run_here(
            "weights", "import", "--spec", str(SPEC), "--variant", name,
            "--from", "torchvision", str(tmp_path / "theirs.pt"),
            "-o", str(tmp_path / "ours.pt"),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        state = torch.load(tmp_path / "ours.pt", weights_only=True)
    else:
        state = from_torchvision(net, theirs.state_dict(), "densenet")
    ours.load_state_dict(state, strict=True)
    assert_float32_rounding(ours, theirs, torch.randn(2, 3, size, size))


def test_both_dense_block_paths_and_train_mode(tmp_path):
    """Eval under autograd (torchvision's list of features), without it (the
    buffer, also channels_last), and train mode (batch statistics)."""
    theirs = torchvision.models.densenet121()
    randomize(theirs, 65, seed=1)
    net = variant(SPEC, "densenet121")
    ours = getattr(import_generated(net, "torch", tmp_path), net.class_name)().eval()
    ours.load_state_dict(from_torchvision(net, theirs.state_dict(), "densenet"))
    torch.manual_seed(1)
    x = torch.randn(4, 3, 65, 65)
    with torch.no_grad():
        reference = theirs(x)
        buffer = ours(x.contiguous(memory_format=torch.channels_last))
    assert relative_error(buffer, reference) < 1e-5
    assert relative_error(ours(x).detach(), reference) < 1e-5
    with torch.no_grad():
        train = relative_error(ours.train()(x), theirs.train()(x))
    assert train < 1e-4
