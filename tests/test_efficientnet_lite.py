"""EfficientNet-Lite (specs/efficientnet_lite.yaml) against timm's
tf_efficientnet_lite0 ... lite4: parameter counts, logits with timm's random
weights (through `archspec weights import --from timm` and a safetensors file
for Lite0, renamed in process for the rest), the data config, and `archspec
check` between the PyTorch and Keras models (issue 25, item 4)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from helpers import (  # noqa: E402
    SPECS,
    assert_float32_rounding,
    check_here,
    import_generated,
    timm_weights_imported,
    variant,
)

from archspec import analysis  # noqa: E402
from archspec.parity import randomize  # noqa: E402
from archspec.references.torchvision import from_torchvision, state_dict_names  # noqa: E402

SPEC = SPECS / "efficientnet_lite.yaml"
LITE = [f"efficientnet_lite{i}" for i in range(5)]
ODD = 65  # odd at every stride: TensorFlow's "same" pads symmetrically there


@pytest.mark.parametrize("name", LITE)
def test_parameters_names_and_data_config_equal_timm(name, tmp_path):
    net = variant(SPEC, name)
    module = import_generated(net, "torch", tmp_path)
    with torch.device("meta"):
        ours, theirs = (
            getattr(module, net.class_name)(),
            timm.create_model(f"tf_{name}"),
        )
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) == analysis.params(net)
    assert set(state_dict_names(net, "efficientnet_timm")) == set(theirs.state_dict())
    cfg = timm.models.get_pretrained_cfg(f"tf_{name}").to_dict()
    for key in ("input_size", "interpolation", "mean", "std"):
        assert list(np.ravel(module.PRETRAINED_CFG[key])) == list(np.ravel(cfg[key]))
    r = net.input.resolution
    assert int(r / module.PRETRAINED_CFG["crop_pct"]) == int(r / cfg["crop_pct"])


# Lite1 (deeper) and Lite2 (deeper and widened, 1.1: width rounding); Lite3
# and Lite4 (12.5 s) repeat Lite2's layers at widths 1.2 and 1.4 in deeper
# stages: their channel rounding, every tensor name and their data configs
# stay compared above (test_parameters_names_and_data_config_equal_timm), and
# their logits only repeated Lite2's code paths.
@pytest.mark.parametrize("name", LITE[1:3])
def test_timm_weights_give_timms_logits(name, tmp_path):
    torch.manual_seed(0)
    theirs = timm.create_model(f"tf_{name}")
    randomize(theirs, ODD, seed=0)
    net = variant(SPEC, name)
    ours = getattr(import_generated(net, "torch", tmp_path), net.class_name)()
    ours.load_state_dict(
        from_torchvision(net, theirs.state_dict(), "efficientnet_timm")
    )
    assert_float32_rounding(ours, theirs, torch.randn(2, 3, ODD, ODD))


def test_weights_import_from_a_timm_safetensors_file(tmp_path):
    """Lite0 at its own size (even: the asymmetric "same" padding), with the
    weights as timm's hub ships them: a safetensors file, imported by the CLI."""
    theirs, state = timm_weights_imported(
        SPEC,
        "efficientnet_lite0",
        224,
        tmp_path,
        timm_name="tf_efficientnet_lite0",
        suffix=".safetensors",
    )
    net = variant(SPEC, "efficientnet_lite0")
    ours = getattr(import_generated(net, "torch", tmp_path), net.class_name)()
    ours.load_state_dict(state, strict=True)
    assert_float32_rounding(ours, theirs, torch.randn(2, 3, 224, 224))


def test_archspec_check():
    result = check_here(str(SPEC), "--variant", "efficientnet_lite0", "--size", "64")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert result.stdout.count(" ok") >= 1
