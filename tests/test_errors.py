"""Every broken spec under tests/broken/ gives exactly its expected diagnostics.

Each case is NAME.yaml with NAME.expect beside it: the `error:` lines the CLI
must print, each with line:column, path and message. The CLI must exit 2,
print no traceback, and write nothing.
"""

from __future__ import annotations

import re

import pytest
from helpers import ROOT, run_archspec

from archspec.cli import main

BROKEN = ROOT / "tests" / "broken"
CASES = sorted(p.stem for p in BROKEN.glob("*.expect"))


def test_corpus_is_large_enough():
    assert len(CASES) >= 35


@pytest.mark.parametrize("case", CASES)
def test_broken_spec(case, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    relative = f"tests/broken/{case}.yaml"
    code = main(["validate", relative])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    printed = [
        line
        for line in err.splitlines()
        if re.match(r"^\S+\.yaml:\d+:\d+: error: ", line)
    ]
    expected = (BROKEN / f"{case}.expect").read_text().splitlines()
    # Lines name the file they point into (an `extends` base can be the culprit).
    assert [
        line if line.startswith("tests/") else f"{relative}:{line}" for line in expected
    ] == printed


@pytest.mark.parametrize("case", ["stride_three", "unknown_key", "binary"])
def test_broken_spec_through_a_process(case, tmp_path):
    out = tmp_path / "out"
    result = run_archspec(
        "compile", f"tests/broken/{case}.yaml", "--phi", "0", "-o", str(out)
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert re.search(rf"tests/broken/{case}\.yaml:\d+:\d+: error: ", result.stderr)
    assert not out.exists()  # nothing written, not even the folder


def test_error_excerpt_points_at_the_value(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    main(["validate", "tests/broken/stride_three.yaml"])
    lines = capsys.readouterr().err.splitlines()
    source, caret = lines[1], lines[2]
    assert source.endswith("- [mbconv, 1, 3, 3, 16, 1]")
    column = int(lines[0].split(":")[2])
    # The caret sits under the offending cell.
    offset = source.index("|") + 2
    assert caret.index("^") - offset == column - 1
    assert source[offset + column - 1] == "3"


def test_all_errors_of_a_file_in_one_run(tmp_path, capsys):
    spec = tmp_path / "many.yaml"
    spec.write_text(
        f"extends: {(ROOT / 'specs' / 'b0.yaml').as_posix()}\n"
        "stem: {channels: -1, kernel: 2}\n"
        "head: {channels: 0}\n"
        "scaling: {alpha: 0.5}\n"
    )
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    found = re.findall(r":(\d+):(\d+): error: (\S+):", err)
    assert [(int(a), int(b), p) for a, b, p in found] == [
        (2, 18, "stem.channels"),
        (2, 30, "stem.kernel"),
        (3, 18, "head.channels"),
        (4, 18, "scaling.alpha"),
    ]


def test_far_from_two_is_a_warning_not_an_error(tmp_path, capsys):
    spec = tmp_path / "wide.yaml"
    spec.write_text(
        f"extends: {(ROOT / 'specs' / 'b0.yaml').as_posix()}\nscaling: {{beta: 1.5}}\n"
    )
    assert main(["validate", str(spec)]) == 0
    err = capsys.readouterr().err
    assert re.search(
        r"wide\.yaml:2:\d+: warning: scaling: alpha \* beta\^2 \* gamma\^2 = 3\.57", err
    )


def test_inherited_value_points_into_the_base_file(tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text(
        (ROOT / "specs" / "b0.yaml")
        .read_text()
        .replace("resolution: 224 ", "resolution: 4 ")
    )
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nname: child\n")
    assert main(["validate", str(child)]) == 2
    err = capsys.readouterr().err
    line = next(
        i
        for i, t in enumerate(base.read_text().splitlines(), 1)
        if "resolution: 4 " in t
    )
    assert (
        f"base.yaml:{line}:15: error: input.resolution: expected greater than or equal to 8"
        in err
    )


def test_unknown_backend_is_bad_input():
    result = run_archspec("compile", "specs/b0.yaml", "--backend", "jaxx")
    assert result.returncode == 2
    assert (
        "unknown backend 'jaxx'" in result.stderr and "Traceback" not in result.stderr
    )
