"""Shared fixtures and the test process's setup (the shared constants and
functions are in helpers.py). torch is imported before TensorFlow anywhere in a
test process: the CUDA build of torch segfaults loading triton after TensorFlow
(seen when pytest was given a Keras test file first)."""

from __future__ import annotations

import contextlib
import os
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
    # (XLA's own pool: pytest_configure, in the controlling process.)
# JAX compiles every model it runs (the Flax backend's tests, Keras on JAX):
# LLVM's cheap pipeline compiles a third faster (Flax DenseNet-121 at 34 px:
# 20 s -> 16 s a check); the code computes the same IEEE arithmetic (no
# fast-math either way), only less optimised, and runs once or twice here.
_XLA_FAST_COMPILE = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
)
if _XLA_FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):  # workers inherit it
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " " + _XLA_FAST_COMPILE
    ).strip()

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

# The shared constants and functions are in helpers.py, imported here after the
# environment above is set.
from helpers import ROOT  # noqa: E402

# `--dist loadfile` hands each worker whole files, by default those with the
# most tests first; what takes long here is a few files of few slow tests,
# which then came last and left one worker running alone for ten minutes.
# Handed out longest first (as measured), the workers finish together. The
# search's Ray trials slow down most beside the Flax compiles (its fixture
# 26 s alone, 118-294 s there): it starts beside the export tests instead.
LONGEST_FIRST = (
    "test_flax_backend.py",
    "test_export.py",
    "test_search.py",
    "test_finetune_keras.py",
    "test_generic.py",
    "test_flax_training.py",
    "test_keras_builders.py",
    "test_mobile_family.py",
    "test_parity_families.py",
    "test_nasnet.py",
    "test_keras_resnet.py",
    "test_keras_efficientnet_v2.py",
    "test_keras_backends.py",
    "test_nasnet_keras.py",
    "test_property.py",
    "test_hardening.py",
    "test_torch_backend.py",
    "test_parity.py",
    "test_resnet_v2.py",
    "test_keras_densenet.py",
    "test_api.py",
    "test_keras_backend.py",
    "test_resnet_family.py",
    "test_timm_api.py",
)


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False
    # XLA's CPU client runs an Eigen pool on every core whatever the thread
    # variables say: one thread per worker, set here in the controlling
    # process before it starts the workers (set inside a worker, the flags
    # came too late: the Flax training test took 191-325 s there beside the
    # other worker, 29 s with them in its environment from the start).
    workers = getattr(config.option, "numprocesses", None)
    if isinstance(workers, int) and workers and (os.cpu_count() or 1) // workers <= 1:
        one = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        if one not in os.environ["XLA_FLAGS"]:
            os.environ["XLA_FLAGS"] = f"{one} {os.environ['XLA_FLAGS']}"


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable


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
