"""The CLI as a process: exit codes, the summary table, expand, schema."""

from __future__ import annotations

import itertools
import json
import re

import jsonschema
import pytest
from helpers import B0, PARAMS, ROOT, run_archspec

from archspec import ir
from archspec.errors import Diagnostics
from archspec.pipeline import load_spec, network
from archspec.source import load


def _rows(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines()[2:] if line.strip()]


def test_summary_prints_eight_variants_with_exact_params():
    result = run_archspec("summary", "specs/b0.yaml", "--phi", "0-7")
    assert result.returncode == 0, result.stderr
    rows = _rows(result.stdout)
    assert [r[0] for r in rows] == [f"b{phi}" for phi in range(8)]
    params = [
        int(next(c for c in r if re.fullmatch(r"\d{1,3}(,\d{3})+", c)).replace(",", ""))
        for r in rows
    ]
    assert params == PARAMS
    ratios = [float(r[-2]) for r in rows]
    assert ratios[0] == 1.0 and all(a < b for a, b in itertools.pairwise(ratios))
    # FLOPs ratio tracks 2^phi within a factor of 2 (the published B3 is at 0.59).
    assert all(0.5 < ratio / 2**phi < 1.5 for phi, ratio in enumerate(ratios) if phi)


@pytest.mark.parametrize("phi", [0, 3, 7, 2.5])
def test_expand_round_trips(phi, tmp_path):
    out = tmp_path / "expanded.yaml"
    result = run_archspec("expand", "specs/b0.yaml", "--phi", str(phi), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert load_spec(out) == network(load_spec(B0), phi)
    # And expanding is idempotent on the text.
    again = run_archspec("expand", str(out))
    assert again.returncode == 0 and again.stdout == out.read_text()


def test_expanded_network_is_explicit(tmp_path):
    out = tmp_path / "b3.yaml"
    run_archspec("expand", "specs/b0.yaml", "--phi", "3", "-o", str(out))
    data = load(out, Diagnostics()).data
    assert data["format"] == ir.FORMAT
    blocks = [b for stage in data["stages"] for b in stage["blocks"]]
    assert len(blocks) == 26
    for key in (
        "in_channels",
        "out_channels",
        "expanded_channels",
        "squeeze_channels",
        "kernel",
        "stride",
        "padding",
        "activation",
        "norm",
        "in_size",
        "out_size",
        "name",
    ):
        assert all(key in b for b in blocks), key


def test_phi_with_an_expanded_file_is_an_error(tmp_path):
    out = tmp_path / "b3.yaml"
    run_archspec("expand", "specs/b0.yaml", "--phi", "3", "-o", str(out))
    result = run_archspec("summary", str(out), "--phi", "4")
    assert result.returncode == 2 and "expanded network" in result.stderr


@pytest.mark.parametrize("phi", ["x", "7-3", "-1"])
def test_bad_phi_exits_2(phi):
    result = run_archspec("summary", "specs/b0.yaml", "--phi", phi)
    assert (
        result.returncode == 2
        and "--phi" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_schema_validates_the_shipped_specs():
    result = run_archspec("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    validator = jsonschema.Draft202012Validator(schema)
    for spec in ("b0.yaml",):
        data = load(ROOT / "specs" / spec, Diagnostics()).data
        assert list(validator.iter_errors(data)) == []
    # And it rejects what the compiler rejects.
    data = load(ROOT / "specs" / "b0.yaml", Diagnostics()).data
    data["stem"]["stride"] = 3
    data["scaling"]["alpha"] = 0.5
    assert len(list(validator.iter_errors(data))) == 2


def test_validate_ok_and_missing_file():
    ok = run_archspec("validate", "specs/b0_torchvision.yaml")
    assert ok.returncode == 0 and "ok" in ok.stdout
    missing = run_archspec("validate", "specs/nope.yaml")
    assert (
        missing.returncode == 2
        and "specs/nope.yaml:1:1: error: cannot read file" in missing.stderr
    )


@pytest.mark.parametrize(
    "command", [[], ["validate"], ["expand"], ["summary"], ["schema"], ["compile"]]
)
def test_help_everywhere(command):
    result = run_archspec(*command, "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout


def test_compiler_never_imports_frameworks():
    code = "import sys; from archspec.cli import main; main(['summary', 'specs/b0.yaml', '--phi', '3']); print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'keras', 'jax')))"
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"
