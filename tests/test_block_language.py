"""The block language end to end: a spec-defined block that uses every op
(norm_act, conv with and without norm and bias, shift, pad, average pooling
that does not count its padding, max pooling padded with -inf on a map that
can be negative, multiply, squeeze-excitation, add, act, concat, identity)
compiles in both backends, and `archspec check` finds the PyTorch and Keras
models one function, in eval and train mode and for input gradients."""

from __future__ import annotations

import pytest
from helpers import ROOT, run_archspec

pytest.importorskip("torch")
pytest.importorskip("keras")

EVERY_OP = ROOT / "tests" / "blocks" / "every_op.yaml"


def test_every_op_agrees_across_backends():
    result = run_archspec("check", str(EVERY_OP))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert result.stdout.rstrip().endswith("ok")


def test_every_op_compiles_to_modules_and_helpers(tmp_path):
    for backend in ("torch", "keras"):
        result = run_archspec(
            "compile",
            str(EVERY_OP),
            "--backend",
            backend,
            "-o",
            str(tmp_path / backend),
        )
        assert result.returncode == 0, result.stderr
    torch_source = (tmp_path / "torch" / "net1.py").read_text()
    # Pools are modules (their stride differs between blocks of one class);
    # without padding, count_pad changes nothing and is not written.
    assert "self.pooled = nn.AvgPool2d(3, stride=stride)" in torch_source
    assert "shifted = F.pad(pre[:, :, 1:, 1:], (0, 1, 0, 1))" in torch_source
    keras_source = (tmp_path / "keras" / "net1.py").read_text()
    assert "keras.layers.Cropping2D(" in keras_source
    assert '((1, 0), (1, 0)), name=f"{name}_shifted"' in keras_source
