"""A user's own spec, tried as a new user would: every command does something
sensible for any spec the schema accepts (exit 0 with output, or exit 2 with
a positioned or named reason), never an internal error.

Regressions (issue 22, item 7): a compound rule without a `published` table
made `summary` fail with an IndexError, `compile` exit 0 writing nothing and
`validate` say "0 variants: "; an expanded network with a dropout layer in
its stem compiled to PyTorch code that raised NameError.
"""

from __future__ import annotations

import importlib.util
import re

import pytest
from helpers import SPECS

from archspec.cli import main

B0 = SPECS / "b0.yaml"


@pytest.fixture
def compound(tmp_path):
    """specs/b0.yaml without its published table: the formula only."""
    text = B0.read_text()
    start = text.index("  published:")
    end = text.index("\n\n", start) if "\n\n" in text[start:] else len(text)
    path = tmp_path / "own.yaml"
    path.write_text(text[:start] + text[end:])
    assert "\n  published:" not in path.read_text()
    return path


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, err
    return code, out, err


def test_validate_names_the_formula_variants(compound, capsys):
    code, out, _ = run(capsys, "validate", compound)
    assert code == 0
    assert "0 variants" not in out
    assert "8 variants: phi0, phi1" in out and "any phi with --phi" in out


def test_summary_lists_phi_0_to_7_by_the_formula(compound, capsys):
    code, out, _ = run(capsys, "summary", compound)
    assert code == 0
    rows = re.findall(r"^phi(\d)\s", out, re.M)
    assert rows == [str(i) for i in range(8)]


def test_compile_without_phi_writes_the_formula_variants(compound, capsys, tmp_path):
    out_dir = tmp_path / "out"
    code, _, err = run(capsys, "compile", compound, "-o", out_dir)
    assert code == 0, err
    written = sorted(p.name for p in out_dir.iterdir())
    assert written == [f"efficientnet_phi{i}.py" for i in range(8)]
    # phi 0 by the formula is the base network: B0's parameter count.
    code, out, _ = run(capsys, "summary", compound, "--phi", "0")
    assert "5,288,548" in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["expand"], 2),  # one network: says which option to give
        (["expand", "--variant", "phi2"], 0),
        (["draw", "-o", "{tmp}/d.svg", "--variant", "phi0"], 0),
        (
            [
                "profile",
                "--variant",
                "phi0",
                "--size",
                "32",
                "--warmup",
                "0",
                "--repeats",
                "1",
            ],
            0,
        ),
        (
            [
                "weights",
                "convert",
                "--spec",
                "{spec}",
                "--variant",
                "phi0",
                "{tmp}/missing.pt",
            ],
            2,
        ),
    ],
)
def test_every_command_answers_sensibly(args, expected, compound, capsys, tmp_path):
    args = [a.format(tmp=tmp_path, spec=compound) for a in args]
    if "--spec" not in args:
        args.insert(1, str(compound))
    code = main(args)
    _, err = capsys.readouterr()
    assert code == expected, err
    assert "Traceback" not in err and "internal error" not in err, err
    if code == 2:
        assert err.strip(), "exit 2 says why"


def test_a_dropout_in_the_stem_compiles_and_runs(capsys, tmp_path):
    torch = pytest.importorskip("torch")
    code, text, _ = run(
        capsys, "expand", SPECS / "resnet.yaml", "--variant", "resnet18"
    )
    assert code == 0
    stem_line = next(line for line in text.splitlines() if "name: stem_pool" in line)
    dropout = "  - {kind: dropout, name: stem_drop, rate: 0.25}"
    net = tmp_path / "net.yaml"
    net.write_text(text.replace(stem_line, stem_line + "\n" + dropout, 1))
    for backend in ("torch", "keras"):
        out = tmp_path / backend
        code, _, err = run(capsys, "compile", net, "--backend", backend, "-o", out)
        assert code == 0, err
    source = (tmp_path / "torch" / "resnet18.py").read_text()
    assert "self.stem_drop = nn.Dropout(0.25, inplace=True)" in source
    spec = importlib.util.spec_from_file_location(
        "with_dropout", tmp_path / "torch" / "resnet18.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.ResNet18().eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    model.train()
    assert model.stem_drop.p == 0.25
