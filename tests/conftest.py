"""Shared fixtures. torch is imported before TensorFlow anywhere in a test
process: the CUDA build of torch segfaults loading triton after TensorFlow
(seen when pytest was given a Keras test file first)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Each xdist worker gets its share of the cores, its CLI subprocesses too (set
# before torch or TensorFlow starts a thread pool): two workers that each use
# every core slow each other down more than twofold (two `archspec check` runs
# side by side on 2 cores: 104 s, against 49 s with one thread each).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _WORKERS:
    _THREADS = str(max(1, (os.cpu_count() or 1) // _WORKERS))
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ.setdefault(_name, _THREADS)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

# Here, before any test module is collected: whatever order pytest is given
# the files in, torch and torchvision (which loads triton) come first. The
# suite without them still runs.
with contextlib.suppress(ImportError):
    import torch  # noqa: F401
    import torchvision  # noqa: F401

# TensorFlow's oneDNN allocator keeps the peak of every pass for the life of
# the process: a test worker that ran B7 at 600 px held 12 GB to the end of
# the suite. The system allocator gives memory back; set before any import of
# TensorFlow, and inherited by the CLI's subprocesses.
os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
B0 = SPECS / "b0.yaml"
B0_TV = SPECS / "b0_torchvision.yaml"
RESNET = SPECS / "resnet.yaml"
RESNET_KERAS = SPECS / "resnet_keras.yaml"
SE_RESNET = SPECS / "se_resnet.yaml"
MOBILENET_V2 = SPECS / "mobilenet_v2.yaml"
MOBILENET_V2_KERAS = SPECS / "mobilenet_v2_keras.yaml"
MNASNET = SPECS / "mnasnet.yaml"
MOBILENET_V1 = SPECS / "mobilenet_v1.yaml"
MOBILENET_V3 = SPECS / "mobilenet_v3.yaml"
MOBILENET_V3_KERAS = SPECS / "mobilenet_v3_keras.yaml"


@pytest.fixture(autouse=True, scope="module")
def _release_keras_state(request):
    """Keras keeps every model a process builds in its global state: release
    it after each test module, or the suite's one process outgrows the
    machine's memory (it was killed at 13 GB). ARCHSPEC_MEMLOG=FILE records
    each module's peak memory there (the suite runs two workers in 24 GB)."""
    yield
    if "keras" in sys.modules:
        from archspec import parity

        parity.release()
    if log := os.environ.get("ARCHSPEC_MEMLOG"):
        status = dict(
            line.split(":", 1)
            for line in Path("/proc/self/status").read_text().splitlines()
        )
        peak, now = (int(status[k].split()[0]) // 1024 for k in ("VmHWM", "VmRSS"))
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with open(log, "a") as out:
            out.write(
                f"{worker} {request.module.__name__} peak {peak} MB, after {now} MB\n"
            )
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # the next module's peak from here


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def run_archspec(
    *args: str, cwd: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "archspec", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )
