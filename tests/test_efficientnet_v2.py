"""EfficientNetV2 (specs/efficientnet_v2.yaml) against torchvision's
efficientnet_v2_s/_m/_l: parameter counts, and outputs with torchvision's
weights brought in by name (`archspec weights import --from torchvision`).

"Equal to float32 rounding" is measured as for the other families
(tests/helpers.py): no further from torchvision's float64 output than
about torchvision's own float32 output is. S runs at its native 384, M at a
small size to keep the suite inside its budget; L's outputs are not compared
(22 s): its table has M's block kinds, stage layout and strides, only deeper
and wider, and its parameter count, every tensor name and its dropout are
test_parameter_count_equals_torchvision's.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")  # before TensorFlow, always
torchvision = pytest.importorskip("torchvision")

from helpers import (  # noqa: E402
    SPECS,
    assert_float32_rounding,
    import_generated,
    run_here,
    variant,
)

from archspec import analysis  # noqa: E402
from archspec.parity import randomize  # noqa: E402
from archspec.references.torchvision import from_torchvision, state_dict_names  # noqa: E402

SPEC = SPECS / "efficientnet_v2.yaml"
VARIANTS = ["efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l"]
# Below ~100 px the random weights of M and L, calibrated on maps of a pixel
# or two, amplify float32 rounding to 1e-1 (helpers.assert_rounding refuses).
SIZES = {"efficientnet_v2_s": 384, "efficientnet_v2_m": 128, "efficientnet_v2_l": 128}


@pytest.mark.parametrize("name", VARIANTS)
def test_parameter_count_equals_torchvision(name, tmp_path):
    net = variant(SPEC, name)
    cls = getattr(import_generated(net, "torch", tmp_path), net.class_name)
    with torch.device("meta"):
        ours, theirs = cls(), getattr(torchvision.models, name)()
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) == analysis.params(net)
    assert set(state_dict_names(net, "efficientnet")) == set(theirs.state_dict())
    # torchvision's dropout before the classifier, per variant.
    assert ours.dropout.p == theirs.classifier[0].p


@pytest.mark.parametrize("name", VARIANTS[:2])  # not L: see the docstring
def test_torchvision_weights_give_torchvision_outputs(name, tmp_path):
    """M's weights go through `archspec weights import`, as a user's would
    (in this process, as run_here runs the CLI: a process of its own imports
    torch again; the command as a separate process is test_resnet_family's
    and test_mobile_family's import tests)."""
    size = SIZES[name]
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)()
    randomize(theirs, size, seed=0)
    net = variant(SPEC, name)
    ours = getattr(import_generated(net, "torch", tmp_path), net.class_name)().eval()
    if name == "efficientnet_v2_m":
        torch.save(theirs.state_dict(), tmp_path / "theirs.pt")
        result = run_here(
            "weights", "import", "--spec", str(SPEC), "--variant", name,
            "--from", "torchvision", str(tmp_path / "theirs.pt"),
            "-o", str(tmp_path / "ours.pt"),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        state = torch.load(tmp_path / "ours.pt", weights_only=True)
    else:
        state = from_torchvision(net, theirs.state_dict(), "efficientnet")
    ours.load_state_dict(state, strict=True)
    assert_float32_rounding(ours, theirs, torch.randn(2, 3, size, size))
