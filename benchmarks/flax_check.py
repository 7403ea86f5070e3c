"""`archspec check --backends torch,flax` on every variant of every shipped
spec: the sweep behind issue 27's "every variant's Flax model equals the
PyTorch model" (the test suite checks each spec's smallest variant, and one
per family at its native size: tests/test_flax_backend.py).

    .venv/bin/python benchmarks/flax_check.py
    .venv/bin/python benchmarks/flax_check.py --specs resnet,se_resnet --size 34

Each spec is one `archspec check SPEC --variant all --size S` process, one
thread for PyTorch and for XLA. The size is the smallest that means
something for the spec: 34 px (odd maps at every stride) by default; 64 for
DenseNet (169 and 201 overflow to inf at 34 px, in PyTorch as in Flax: their
batch-norm statistics come from 1x1 maps); 128 for the deep EfficientNets
(B5-B7, V2-M/L are so poorly conditioned at 34 px that PyTorch's own float32
logits are 4-40% off its float64 ones, and `check` then tolerates as much).
Writes benchmarks/results/flax/check.md (a run of some specs replaces their
sections and keeps the others'): per spec, the exit code, the time
and `check`'s summary table (logits error per variant at S and S+1 px, train
mode and input gradients for the first variant).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {
    "densenet": 64,
    "densenet_keras": 64,
    "b0": 128,
    "b0_torchvision": 128,
    "efficientnet_v2": 128,
    "efficientnet_v2_keras": 128,
}
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}


def summary(output: str) -> list[str]:
    """`check`'s closing table: from its `variant` header to the end."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("variant ")]
    return lines[starts[-1] :] if starts else lines[-5:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--specs", help="comma-separated spec stems (default: all)")
    parser.add_argument("--size", type=int, help="one size for every spec")
    parser.add_argument(
        "--variant",
        help="these variants only, at their native size unless --size (a "
        "section of its own: SPEC VARIANTS)",
    )
    parser.add_argument(
        "--modes", default="first", help="check's --modes (none: eval only)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/flax")
    args = parser.parse_args()
    stems = (
        args.specs.split(",")
        if args.specs
        else [p.stem for p in sorted((ROOT / "specs").glob("*.yaml"))]
    )
    report = args.out / "check.md"
    sections = earlier(report)
    for stem in stems:
        command = [sys.executable, "-m", "archspec", "check", f"specs/{stem}.yaml"]
        command += ["--variant", args.variant or "all", "--backends", "torch,flax"]
        command += ["--modes", args.modes]
        size = args.size or (None if args.variant else SIZES.get(stem, 34))
        command += ["--size", str(size)] if size else []
        start = time.perf_counter()
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=os.environ | ONE_THREAD,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
        key = f"{stem} {args.variant}" if args.variant else stem
        where = f"{size} px" if size else "native size"
        head = f"## {key}: exit {done.returncode}, {where}, {seconds:.0f} s"
        body = summary(done.stdout) if done.stdout.strip() else []
        if done.returncode and not body:
            body = done.stderr.strip().splitlines()[-3:]
        sections[key] = "\n".join([head, "", "```text", *body, "```"])
        print(sections[key], flush=True)
    passed = sum(": exit 0, " in text for text in sections.values())
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_text(
        "# archspec check --backends torch,flax, every variant\n\n"
        f"{passed} of {len(sections)} runs: every variant ok\n\n"
        + "\n\n".join(sections[k] for k in sorted(sections))
        + "\n"
    )
    return 0 if passed == len(sections) else 1


def earlier(report: Path) -> dict[str, str]:
    """The sections of an earlier report, by spec (a run of some specs
    replaces theirs and keeps the others)."""
    if not report.exists():
        return {}
    parts = report.read_text().split("\n## ")[1:]
    return {p.split(":", 1)[0]: "## " + p.rstrip("\n") for p in parts}


if __name__ == "__main__":
    sys.exit(main())
