"""`archspec search` (issue 26): EfficientNet's grid search for a compound
rule's alpha, beta, gamma, trials on Ray Tune, on a real dataset (digits).

Small enough for CI: tests/search/tiny.yaml (a four-stage MBConv network,
47k parameters) trained 2 epochs at 16 px, a 0.1 grid with a 10% FLOPs
tolerance (3 candidates, 3 baselines, the base: 7 trials, two at a time on
this 2-core machine). One search runs in-process Ray with a trial made to
fail; another runs on a cluster started by `ray start --head`, is interrupted
and resumed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers import ROOT, run_archspec, run_here

pytest.importorskip("ray.tune")
pytest.importorskip("torch")
pytest.importorskip("sklearn")

from archspec import pipeline, search

TINY = ROOT / "tests" / "search" / "tiny.yaml"
GRID = ["--grid-step", "0.1", "--size", "16"]
CHANCE = 0.1  # ten digits


def planned(tolerance: float = 0.1) -> search.Plan:
    settings = search.Settings(
        str(TINY), None, "digits", Path("unused"), grid_step=0.1, tolerance=tolerance
    )
    return search.plan(pipeline.load_spec(TINY), settings)


def records(out: Path) -> list[dict]:
    return [
        json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()
    ]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A search with Ray started in-process, one baseline made to fail."""
    out = tmp_path_factory.mktemp("search") / "out"
    failing = next(p for p in planned().points if p.kind == "depth only")
    key = f"{failing.name}-s0"
    done = run_archspec(
        "search", str(TINY), "--data", "digits", "-o", str(out), *GRID,
        "--tolerance", "0.1", "--epochs", "2", env={"ARCHSPEC_SEARCH_FAIL": key},
    )  # fmt: skip
    return out, done, key


def test_search_trains_every_network_and_reports_the_failed_one(searched):
    out, done, failed = searched
    assert done.returncode == 0, done.stderr
    assert "started here" in done.stderr
    p = planned()
    found = {r["trial"]: r for r in records(out)}
    # One record per network (one seed), written once.
    assert sorted(found) == sorted(f"{pt.name}-s0" for pt in p.points)
    assert len(records(out)) == len(found)
    assert found[failed]["status"] == "failed"
    assert "ARCHSPEC_SEARCH_FAIL" in found[failed]["error"]
    ok = [r for r in found.values() if r["status"] == "ok"]
    assert len(ok) == len(p.points) - 1
    # Trained for real: far above chance on held-out digits.
    assert min(r["accuracy"] for r in ok) > 5 * CHANCE, ok
    # Two trials at once on two cores: some pair of trials overlapped in time.
    spans = sorted((r["started"], r["ended"]) for r in ok)
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans))
    # Each network trained at the base's size times its gamma.
    for r in ok:
        assert r["train_size"] == int(16 * r["gamma"] + 0.5)

    report = (out / "report.md").read_text()
    rows = [line for line in report.splitlines() if re.match(r"\| (\d+|-) \|", line)]
    assert len(rows) == len(p.points)
    assert any("failed (1 of 1 seeds)" in row and failed[:-3] in row for row in rows)
    # Ranked by accuracy, best first.
    ranked = [float(row.split("|")[12]) for row in rows if not row.startswith("| - ")]
    assert ranked == sorted(ranked, reverse=True)
    svg = ET.parse(out / "search.svg").getroot()
    assert svg.tag.endswith("svg")


def test_flops_ratios_are_the_ones_summary_gives(searched, tmp_path):
    """Every trained network's FLOPs ratio and parameters, against `archspec
    summary` of a spec holding its coefficients (phi 1 over phi 0)."""
    out, _, _ = searched
    for r in records(out):
        if r["kind"] == "base":
            continue
        spec = tmp_path / f"{r['trial']}.yaml"
        spec.write_text(
            f"extends: {os.path.relpath(TINY, tmp_path)}\n"
            f"scaling: {{alpha: {r['alpha']}, beta: {r['beta']}, gamma: {r['gamma']}}}\n"
        )
        shown = run_here("summary", str(spec), "--phi", "0,1")
        assert shown.returncode == 0, shown.stderr
        phi1 = shown.stdout.splitlines()[-1].split()
        assert phi1[0] == "phi1"
        assert int(phi1[-4].replace(",", "")) == r["params"]
        assert float(phi1[-2]) == pytest.approx(round(r["flops_ratio"], 2), abs=1e-9)


def test_search_yaml_scales_by_the_winner(searched, tmp_path):
    out, _, _ = searched
    ok = [r for r in records(out) if r["status"] == "ok" and r["kind"] == "candidate"]
    best = max(ok, key=lambda r: r["accuracy"])
    found = pipeline.load_spec(out / "search.yaml")
    rule = found.spec.scaling
    assert (rule.alpha, rule.beta, rule.gamma) == (
        best["alpha"],
        best["beta"],
        best["gamma"],
    )
    # Its phi = 1 is the network trained as the winner.
    tiny = pipeline.load_spec(TINY)
    winner = search.network(tiny, best["alpha"], best["beta"], best["gamma"])
    assert search._structure(pipeline.network(found, 1)) == search._structure(winner)
    listed = run_here("summary", str(out / "search.yaml"))
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[2:]] == [
        f"phi{k}" for k in range(8)
    ]
    compiled = run_here(
        "compile", str(out / "search.yaml"), "--phi", "1", "--backend", "torch",
        "-o", str(tmp_path / "gen"),
    )  # fmt: skip
    assert compiled.returncode == 0, compiled.stderr
    assert list((tmp_path / "gen").glob("*.py"))


def test_interrupted_search_on_a_cluster_resumes(tmp_path):
    """`ray start --head`, a search on it (--ray ADDRESS, MNASNet's objective)
    interrupted after its first trial, then --resume: no finished trial runs
    again, every trial is recorded once."""
    ray_cli = Path(sys.executable).parent / "ray"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # A short folder of its own: Ray's socket paths must fit in 107 bytes, and
    # stopping the cluster must not stop any other Ray on this machine.
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    started = subprocess.run(
        [str(ray_cli), "start", "--head", "--port", str(port), "--num-cpus", "2",
         "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    # What `ray start` tells the user to connect with.
    address = re.search(
        r"ray start --address='([^']+)'", started.stdout + started.stderr
    )[1]
    out = tmp_path / "out"
    args = [
        sys.executable, "-m", "archspec", "search", str(TINY), "--data", "digits",
        "-o", str(out), *GRID, "--tolerance", "0.05", "--epochs", "1",
        "--ray", address, "--objective", "mnas",
        "--latency-target", "1",
    ]  # fmt: skip
    try:
        first = subprocess.Popen(
            args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        jsonl = out / "trials.jsonl"
        deadline = time.monotonic() + 300
        while not (jsonl.is_file() and jsonl.read_text().strip()):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
        assert first.returncode == 1, err
        assert "--resume continues" in err
        before = jsonl.read_text().splitlines()
        total = len(planned(0.05).points)
        assert 1 <= len(before) < total
        finished = [json.loads(line)["trial"] for line in before]
        results = {
            key: _digest(out, key) for key in finished
        }  # Tune's own record of each finished trial's run

        again = subprocess.run(
            [*args, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        assert again.returncode == 0, again.stderr
        assert f"cluster {address}" in again.stderr
        after = jsonl.read_text().splitlines()
        assert after[: len(before)] == before
        keys = [json.loads(line)["trial"] for line in after]
        assert sorted(keys) == sorted(f"{p.name}-s0" for p in planned(0.05).points)
        assert len(keys) == len(set(keys)) == total
        # No finished trial ran again: Tune's result files are untouched, and
        # the resumed run announced only the others.
        assert {key: _digest(out, key) for key in finished} == results
        progressed = re.findall(r"^\[\d+/\d+\] (\S+) ", again.stderr, re.M)
        assert sorted(progressed) == sorted(
            k.rsplit("-s", 1)[0] for k in keys[len(before) :]
        )
        # MNASNet's objective: accuracy * (latency / target)^-0.07.
        report = (out / "report.md").read_text()
        rows = [
            line.split("|")
            for line in report.splitlines()
            if re.match(r"\| \d+ \|", line)
        ]
        for row in rows:
            accuracy, latency, score = float(row[12]), float(row[14]), float(row[15])
            assert score == pytest.approx(accuracy * (latency / 1.0) ** -0.07, rel=2e-3)
        scores = [float(row[15]) for row in rows]
        assert scores == sorted(scores, reverse=True)
    finally:
        subprocess.run(
            [str(ray_cli), "stop", "--force"], capture_output=True, timeout=120
        )


def _digest(out: Path, key: str) -> str:
    tag = "trial=" + key.replace(".", "_")
    (folder,) = [p for p in (out / "ray" / "search").iterdir() if tag + "_" in p.name]
    return hashlib.sha256((folder / "result.json").read_bytes()).hexdigest()


# Mistakes: exit 2 with a message, before Ray starts ------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["specs/resnet.yaml", "--data", "digits"], "scales by the 'table' rule"),
        (["specs/b0.yaml", "--variant", "b3", "--data", "digits"], "which is 'b0'"),
        (["specs/b0.yaml", "--variant", "b9", "--data", "digits"], "no variant 'b9'"),
        (
            [str(TINY), "--data", "digits", "--grid-step", "0.5"],
            "no (alpha, beta, gamma) on the grid",
        ),
        (
            [str(TINY), "--data", "digits", "--objective", "mnas"],
            "--objective mnas needs --latency-target",
        ),
        ([str(TINY), "--data", "missing", *GRID], "found no such folder"),
    ],
)
def test_mistakes_are_exit_2(args, message, tmp_path):
    done = run_here("search", *args, "-o", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "out").exists()


def test_folder_data_mistakes_name_the_image(tmp_path):
    from PIL import Image

    root = tmp_path / "data"
    for name in ("cats", "dogs"):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (10, 12), (200, 10, 10)).save(root / name / "a.png")
    (root / "dogs" / "broken.png").write_bytes(b"not a png")
    done = run_here(
        "search", str(TINY), "--data", str(root), "-o", str(tmp_path / "o"), *GRID
    )
    assert done.returncode == 2
    assert f"{root / 'dogs' / 'broken.png'}: not a readable image" in done.stderr


def test_an_existing_search_needs_resume_and_resume_needs_one(tmp_path):
    out = tmp_path / "out"
    resumed = run_here(
        "search", str(TINY), "--data", "digits", "-o", str(out), "--resume"
    )
    assert resumed.returncode == 2
    assert "holds no search to resume" in resumed.stderr
    out.mkdir()
    (out / "search.json").write_text('{"settings": {}}')
    again = run_here("search", str(TINY), "--data", "digits", "-o", str(out))
    assert again.returncode == 2
    assert "already holds a search" in again.stderr


def test_without_ray_the_command_names_the_extra(tmp_path):
    fake = tmp_path / "fake" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no ray here')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(fake.parent), str(ROOT)])}
    done = run_archspec(
        "search",
        str(TINY),
        "--data",
        "digits",
        "-o",
        str(tmp_path / "o"),
        *GRID,
        env=env,
    )
    assert done.returncode == 2
    assert "pip install 'archspec[search]'" in done.stderr
