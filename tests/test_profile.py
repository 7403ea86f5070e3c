"""`archspec profile`: measured figures for every variant, JSON and CSV, and a
variant that cannot fit as a row of the table rather than a crash."""

from __future__ import annotations

import csv
import json

import pytest
from helpers import B0, MNASNET, MOBILENET_V2_KERAS, run_archspec

from archspec import analysis, profile
from archspec.expand import expand
from archspec.pipeline import load_spec, select

# Small and quick: 64px inputs, batch 1, one warm-up, three timed runs; one
# thread (several threads stall each other on a busy machine).
QUICK = ("--size", "64", "--batch", "1", "--warmup", "1", "--repeats", "3")
QUICK += ("--threads", "1")


def _networks(spec, size):
    import dataclasses

    valid = load_spec(spec)
    return [
        expand(valid, dataclasses.replace(v, resolution=size)) for v in select(valid)
    ]


@pytest.fixture(scope="module")
def mnasnet(tmp_path_factory):
    out = tmp_path_factory.mktemp("profile")
    written = {suffix: out / f"p.{suffix}" for suffix in ("json", "csv", "md")}
    result = run_archspec(
        "profile",
        str(MNASNET),
        *QUICK,
        "--json",
        str(written["json"]),
        "--csv",
        str(written["csv"]),
        "--markdown",
        str(written["md"]),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(written["json"].read_text())
    return result, report, written["csv"].read_text(), written["md"].read_text()


def test_profile_measures_every_variant(mnasnet):
    result, report, _, _ = mnasnet
    networks = _networks(MNASNET, 64)
    rows = report["variants"]
    assert [r["variant"] for r in rows] == [n.source.variant for n in networks]
    for row, net in zip(rows, networks, strict=True):
        assert row["status"] == "ok", row
        assert row["resolution"] == 64
        assert row["params"] == analysis.params(net)
        assert row["flops"] == analysis.flops(net) > 0
        assert row["runs"] == 3 == len(row["times_ms"])
        assert 0 < row["latency_min_ms"] <= row["latency_ms"] <= row["latency_max_ms"]
        assert row["latency_ms"] == pytest.approx(sorted(row["times_ms"])[1])
        assert row["images_per_s"] == pytest.approx(1000 / row["latency_ms"])
        # At least the float32 weights must have been resident.
        assert row["peak_memory_mib"] > row["params"] * 4 / 2**20
    assert report["settings"]["batch"] == 1
    assert report["machine"]["logical_cores"] >= 1
    assert report["settings"]["threads"] == report["machine"]["torch_threads"] == 1
    # The printed table has one line per variant after its two header lines.
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[2:]] == [r["variant"] for r in rows]


def test_profile_csv_and_markdown_match_json(mnasnet):
    _, report, text, markdown = mnasnet
    table = [line.split(" | ") for line in markdown.splitlines()[2:]]
    assert [cells[0].lstrip("| ") for cells in table] == [
        r["variant"] for r in report["variants"]
    ]
    for cells, full in zip(table, report["variants"], strict=True):
        assert float(cells[4]) == pytest.approx(full["images_per_s"], abs=0.05)
    rows = list(csv.DictReader(text.splitlines()))
    assert [r["variant"] for r in rows] == [r["variant"] for r in report["variants"]]
    for row, full in zip(rows, report["variants"], strict=True):
        assert float(row["images_per_s"]) == pytest.approx(full["images_per_s"])
        assert int(row["flops"]) == full["flops"]


def test_profile_reports_a_variant_that_does_not_fit(tmp_path):
    out = tmp_path / "p.json"
    result = run_archspec(
        "profile", str(B0), "--variant", "b7", "--batch", "65536", "--json", str(out)
    )
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(out.read_text())["variants"]
    assert row["status"] == "does not fit" and row["latency_ms"] is None
    assert "GiB at batch 65536" in row["message"]
    assert "b7" in result.stdout and "DOES NOT FIT" in result.stdout


def test_estimate_grows_with_batch_and_covers_the_weights():
    net = expand(load_spec(B0), select(load_spec(B0), variant="b0")[0])
    one = profile.estimate_bytes(net, 1, "float32")
    assert one > analysis.params(net) * 4
    assert profile.estimate_bytes(net, 8, "float32") > one
    assert profile.estimate_bytes(net, 1, "bfloat16") < one


def test_profile_keras_backend(tmp_path):
    out = tmp_path / "k.json"
    result = run_archspec(
        "profile",
        str(MOBILENET_V2_KERAS),
        "--variant",
        "mobilenet_v2_035",
        "--backend",
        "keras",
        *QUICK,
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    (row,) = report["variants"]
    assert row["status"] == "ok" and row["images_per_s"] > 0
    assert report["machine"]["keras_backend"]


def test_profile_cuda_without_a_device_is_bad_input():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    result = run_archspec(
        "profile", str(MNASNET), "--variant", "mnasnet0_5", "--device", "cuda"
    )
    assert result.returncode == 2
    assert "no CUDA device" in result.stderr and "Traceback" not in result.stderr
