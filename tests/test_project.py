"""The project as a user gets it: README commands, CI script, a real wheel."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from helpers import ROOT


def _readme_command(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"### {heading}", 1)[1]
    return re.search(r"```(?:sh|bash)\n(.+?)\n```", section, re.S).group(1).strip()


def test_ci_runs_exactly_the_readme_test_command():
    command = _readme_command("Run the tests")
    script = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert script[-1] == command


def test_readme_main_command_compiles_b3():
    command = _readme_command("Compile a spec")
    assert "archspec compile specs/b0.yaml --phi 3 --backend torch" in command


def test_regular_wheel_installs_and_compiles(tmp_path):
    """Not only an editable install: templates travel as package data."""
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("archspec-*.whl")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = "import archspec, archspec_torch, archspec_keras; print(archspec.__file__, archspec_torch.__file__, archspec_keras.__file__)"
    where = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert all(path.startswith(str(site)) for path in where.stdout.split())
    for backend, spec, variant, module in [
        (backend, spec, variant, module)
        for backend in ("torch", "keras")
        for spec, variant, module in [
            ("b0", "b3", "efficientnet_b3"),
            ("se_resnet", "seresnet50", "seresnet50"),
        ]
    ]:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "archspec",
                "compile",
                str(ROOT / "specs" / f"{spec}.yaml"),
                "--variant",
                variant,
                "--backend",
                backend,
                "-o",
                "-",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        checked_in = ROOT / "generated" / backend / spec / f"{module}.py"
        assert result.stdout == checked_in.read_text()
