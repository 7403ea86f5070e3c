"""`archspec export` on every shipped spec, every format: the sweep behind
docs/deploy.md's table (issue 25: "every format for every family").

The test suite exports a subset chosen to cover every block kind and both
routes (tests/test_export.py); this runs the rest, by hand, once per change
to the export code. For each spec, its variant with the fewest multiply-adds
(PNASNet has only its Large one) gets calibrated random weights
(archspec.parity.randomize, seed 0) written as a safetensors file, then
`archspec.export.export` writes each format at --size px (64; 128 for
EfficientNetV2-S: SIZES) at batch 1 (ONNX with a dynamic batch, checked at
1 and 3) and runs it in its own runtime, as the
command does. A row is what the command would print: the error, the bound it
applied, the TFLite op count and TRANSPOSEs, and the seconds it took.

    .venv/bin/python benchmarks/exports.py
    .venv/bin/python benchmarks/exports.py --specs nasnet_keras,pnasnet --formats tflite

Each spec runs in a child process (a crash or a hang is a failed row, not a
lost sweep). Writes benchmarks/results/export/latest.md and latest.json (a
run of some specs replaces their rows and keeps the others').
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("onnx", "torch_export", "saved_model", "tflite")
# EfficientNetV2-S's random weights are chaotic at 64 px (a one-ulp input
# change moves its logits by 10%: beyond export.MAX_BOUND); 1e-6 at 128.
SIZES = {"efficientnet_v2": 128}


def smallest(spec: Path) -> str:
    from archspec import pipeline
    from archspec.expand import expand

    loaded = pipeline.load_spec(spec)
    nets = [expand(loaded, v) for v in pipeline.select(loaded)]
    return min(nets, key=lambda net: net.flops()).source.variant


def child(spec: Path, formats: list[str], size: int) -> None:
    """Export `spec`'s smallest variant in each format; a JSON line per format."""
    import torch  # before TensorFlow
    from safetensors.torch import save_file

    import archspec
    from archspec import export, pipeline
    from archspec.parity import randomize

    torch.set_num_threads(1)
    variant = smallest(spec)
    net = pipeline.network(pipeline.load_spec(spec), variant=variant)
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        model = archspec.create_model(net).eval()
        randomize(model, size, seed=0)
        weights = Path(folder) / "weights.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
        del model
        for fmt in formats:
            row = {"spec": spec.stem, "variant": variant, "title": net.title}
            row |= {"format": fmt, "size": size}
            out = Path(folder) / f"out{export.SUFFIXES[fmt]}"
            start = time.perf_counter()
            try:
                made = export.export(
                    net,
                    weights,
                    fmt,
                    out,
                    batch=None if fmt == "onnx" else 1,
                    size=size,
                )
            except Exception as exc:  # a row, whatever went wrong
                row |= {"ok": False, "failure": f"{type(exc).__name__}: {exc}"[:300]}
            else:
                row |= {
                    "ok": made.ok,
                    "written": out.exists(),
                    "error": made.error,
                    "bound": made.bound,
                    "batches": list(made.batches),
                }
                if fmt == "tflite":
                    row |= {"ops": sum(made.ops.values())}
                    row |= {"transpose": made.ops.get("TRANSPOSE", 0)}
            row["seconds"] = round(time.perf_counter() - start, 1)
            print(json.dumps(row), flush=True)


def table(rows: list[dict]) -> str:
    lines = [
        "| spec (variant) | px | format | max rel error | bound | TFLite ops | TRANSPOSE | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "failure" in r:
            error, bound = f"FAILED: {r['failure']}", ""
        else:
            error = f"{r['error']:.1e}" + ("" if r["ok"] else " (outside)")
            bound = f"{r['bound']:.0e}"
        ops = r.get("ops", "")
        lines.append(
            f"| {r['spec']} ({r['title']}) | {r.get('size', '')} | {r['format']} | "
            f"{error} | {bound} | "
            f"{ops} | {r.get('transpose', '')} | {r['seconds']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--specs", help="comma-separated spec stems (default: all)")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--size", type=int, help="one size for every spec")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds a spec")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/export")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    formats = args.formats.split(",")
    if args.child:
        child(args.child, formats, args.size)
        return 0
    specs = sorted((ROOT / "specs").glob("*.yaml"))
    if args.specs:
        specs = [ROOT / "specs" / f"{s}.yaml" for s in args.specs.split(",")]
    rows = []
    for spec in specs:
        command = [sys.executable, __file__, "--child", str(spec)]
        size = args.size or SIZES.get(spec.stem, 64)
        command += ["--formats", args.formats, "--size", str(size)]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=args.timeout
            )
            lines = [json.loads(x) for x in done.stdout.splitlines() if x[:1] == "{"]
            failure = done.stderr.strip().splitlines()[-1:] if done.returncode else []
        except subprocess.TimeoutExpired:
            lines, failure = [], [f"timed out after {args.timeout} s"]
        missing = [f for f in formats if f not in {r["format"] for r in lines}]
        for fmt in missing:  # the child died before this format's row
            lines.append({"spec": spec.stem, "title": "", "format": fmt})
            lines[-1] |= {"ok": False, "failure": " ".join(failure), "seconds": 0}
        for row in lines:
            print(table([row]).splitlines()[-1], flush=True)
        rows += lines
    args.out.mkdir(parents=True, exist_ok=True)
    report = args.out / "latest.json"
    if report.exists():
        ran = {spec.stem for spec in specs}
        kept = [r for r in json.loads(report.read_text()) if r["spec"] not in ran]
        rows = sorted(kept + rows, key=lambda r: r["spec"])  # stable: format order
    report.write_text(json.dumps(rows, indent=1) + "\n")
    passed = sum(r["ok"] for r in rows)
    summary = f"{passed} of {len(rows)} exports within their bound"
    (args.out / "latest.md").write_text(f"{table(rows)}\n\n{summary}\n")
    print(summary)
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
