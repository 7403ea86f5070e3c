"""generated/ is the compiler's output, byte for byte, on every run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, run_archspec

from archspec import backends, render
from archspec.expand import expand
from archspec.pipeline import load_spec, select

# What generated/ holds: every variant of every shipped spec, in every
# built-in backend, at generated/BACKEND/SPEC/ (compile's default output).
SPECS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "specs").glob("*.yaml"))
CHECKED_IN = [
    (spec, backend) for spec in SPECS for backend in ("torch", "keras", "flax")
]


@pytest.mark.parametrize(("spec", "backend"), CHECKED_IN)
def test_generated_is_up_to_date(spec, backend):
    result = run_archspec("compile", spec, "--backend", backend, "--check")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def test_generated_holds_nothing_else():
    expected = set()
    for spec, backend in CHECKED_IN:
        loaded = load_spec(ROOT / spec)
        for net in (expand(loaded, v) for v in select(loaded)):
            expected |= {
                f"{backend}/{Path(spec).stem}/{name}"
                for name in backends.get(backend).emit(net)
            }
    present = {
        p.relative_to(ROOT / "generated").as_posix()
        for p in (ROOT / "generated").rglob("*.py")
    }
    assert present == expected


def test_check_reports_a_stale_file_with_a_diff(tmp_path):
    out = tmp_path / "torch"
    shutil.copytree(ROOT / "generated" / "torch" / "b0", out)
    stale = out / "efficientnet_b3.py"
    stale.write_text(stale.read_text().replace("squeeze=10)", "squeeze=11)", 1))
    before = {p: p.read_bytes() for p in out.iterdir()}
    result = run_archspec(
        "compile", "specs/b0.yaml", "--phi", "0-7", "-o", str(out), "--check"
    )
    assert result.returncode == 1
    assert (
        "-                MBConv(40, 24, expanded=40, kernel=3, stride=1, squeeze=11),"
        in result.stdout
    )
    assert (
        "+                MBConv(40, 24, expanded=40, kernel=3, stride=1, squeeze=10),"
        in result.stdout
    )
    assert "efficientnet_b3.py" in result.stderr
    assert {p: p.read_bytes() for p in out.iterdir()} == before  # --check never writes


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_generated_code_is_ruff_clean(backend):
    folder = ROOT / "generated" / backend
    for args in (["check", "--isolated"], ["check"], ["format", "--check"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *args, str(folder)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_expanded_spec_compiles_to_identical_code(backend, tmp_path):
    expanded = tmp_path / "b3.yaml"
    assert (
        run_archspec(
            "expand", "specs/b0.yaml", "--phi", "3", "-o", str(expanded)
        ).returncode
        == 0
    )
    direct = run_archspec(
        "compile", "specs/b0.yaml", "--phi", "3", "--backend", backend, "-o", "-"
    )
    via = run_archspec("compile", str(expanded), "--backend", backend, "-o", "-")
    assert direct.returncode == via.returncode == 0
    assert direct.stdout == via.stdout
    assert (
        direct.stdout
        == (ROOT / "generated" / backend / "b0" / "efficientnet_b3.py").read_text()
    )


@pytest.mark.parametrize("seed", ["0", "1", "12345"])
def test_output_ignores_hash_seed_and_working_folder(seed, tmp_path):
    spec = ROOT / "specs" / "b0.yaml"
    result = run_archspec(
        "compile",
        str(spec),
        "--phi",
        "0-7",
        "-o",
        str(tmp_path),
        cwd=tmp_path,
        env={"PYTHONHASHSEED": seed},
    )
    assert result.returncode == 0, result.stderr
    written = list(tmp_path.glob("*.py"))
    assert len(written) == 8
    for path in written:
        checked_in = ROOT / "generated" / "torch" / "b0" / path.name
        assert path.read_bytes() == checked_in.read_bytes()


def test_compile_writes_nothing_when_a_variant_fails(tmp_path):
    out = tmp_path / "out"
    result = run_archspec("compile", "specs/b0.yaml", "--phi", "0,3,99", "-o", str(out))
    assert result.returncode == 2 and "--phi" in result.stderr
    assert not out.exists()


def render_with_cache(cache: Path, template: Path, text: str, monkeypatch) -> str:
    """Write `text` as the template, then render it through a fresh environment
    whose bytecode cache lives in `cache`."""
    monkeypatch.setattr(
        render, "_bytecode_cache", lambda: render._BytecodeCache(str(cache))
    )
    template.parent.mkdir(exist_ok=True)
    template.write_text(text)
    return render.environment(template.parent).get_template(template.name).render()


def test_template_cache_follows_template_changes(tmp_path, monkeypatch):
    """Compiled templates are cached between runs, keyed by the source."""
    cache, template = tmp_path / "cache", tmp_path / "templates" / "t.j2"
    cache.mkdir()
    assert render_with_cache(cache, template, "one {{ 1 + 1 }}", monkeypatch) == "one 2"
    assert len(list(cache.iterdir())) == 1
    assert render_with_cache(cache, template, "two {{ 2 + 2 }}", monkeypatch) == "two 4"


def test_an_unwritable_template_cache_is_skipped(tmp_path, monkeypatch):
    missing, template = tmp_path / "no" / "such" / "folder", tmp_path / "t" / "t.j2"
    assert render_with_cache(missing, template, "{{ 6 * 7 }}", monkeypatch) == "42"
