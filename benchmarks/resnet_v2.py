"""ResNetV2, whose blocks are written in the specs, against its references.

PyTorch: generated/torch/resnet_v2/resnetv2_50.py (emitted from the blocks'
graphs) against timm's resnetv2_50, with timm's weights brought in by name,
contiguous and channels_last. Keras: generated/keras/resnet_v2_keras/
resnet50v2.py, and its prepare_for_inference() copy (batch norms folded),
against keras.applications.ResNet50V2 (predict_on_batch, a subprocess:
TensorFlow never beside torch). CPU, eval, float32, batch 8,
224 px, rounds alternated as benchmarks/bench.py does (its helpers), median
reported. Writes benchmarks/results/resnet_v2/latest.json and prints a table:

    .venv/bin/python benchmarks/resnet_v2.py [--rounds 11] [--warmup 3]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import CPU_BATCH, ROOT, alternate, machine, summarise

RESULTS = ROOT / "benchmarks" / "results" / "resnet_v2"


def torch_contenders(warmup: int, rounds: int) -> dict:
    import timm
    import torch

    sys.path.insert(0, str(ROOT))
    from archspec.pipeline import load_spec, network
    from archspec.references.torchvision import from_torchvision

    torch.manual_seed(0)
    net = network(load_spec(ROOT / "specs" / "resnet_v2.yaml"), variant="resnetv2_50")
    module = importlib.import_module("generated.torch.resnet_v2.resnetv2_50")
    ours = module.ResNetV2_50().eval()
    theirs = timm.create_model("resnetv2_50").eval()
    ours.load_state_dict(from_torchvision(net, theirs.state_dict(), "resnetv2"))
    x = torch.randn(CPU_BATCH, 3, 224, 224)
    out = {}
    with torch.inference_mode():
        assert (ours(x) - theirs(x)).abs().max() < 1e-3 * theirs(x).abs().max()
        for layout in ("contiguous", "channels_last"):
            fmt = (
                torch.channels_last
                if layout == "channels_last"
                else torch.contiguous_format
            )
            xl = x.contiguous(memory_format=fmt)
            models = {
                "generated": ours.to(memory_format=fmt),
                "timm": theirs.to(memory_format=fmt),
            }
            times = alternate(
                {k: (lambda m=m, xl=xl: m(xl)) for k, m in models.items()},
                warmup,
                rounds,
            )
            out[layout] = {k: summarise(t, CPU_BATCH) for k, t in times.items()}
    out["versions"] = {"torch": torch.__version__, "timm": timm.__version__}
    return out


def keras_contenders(warmup: int, rounds: int) -> dict:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    sys.path.insert(0, str(ROOT))
    module = importlib.import_module("generated.keras.resnet_v2_keras.resnet50v2")
    ours = module.resnet50v2()
    folded = module.prepare_for_inference(ours)
    theirs = keras.applications.ResNet50V2(weights=None)
    x = np.random.default_rng(0).uniform(-1, 1, (CPU_BATCH, 224, 224, 3))
    x = x.astype("float32")
    times = alternate(
        {
            "generated": lambda: ours.predict_on_batch(x),
            "generated, prepare_for_inference()": lambda: folded.predict_on_batch(x),
            "keras.applications": lambda: theirs.predict_on_batch(x),
        },
        warmup,
        rounds,
    )
    out = {k: summarise(t, CPU_BATCH) for k, t in times.items()}
    out["versions"] = {"keras": keras.__version__}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--child", choices=["torch", "keras"])
    args = parser.parse_args()
    if args.child:
        run = torch_contenders if args.child == "torch" else keras_contenders
        print(json.dumps(run(args.warmup, args.rounds)))
        return 0
    report = {"machine": machine()}
    for child in ("torch", "keras"):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", child, "--rounds", str(args.rounds),
             "--warmup", str(args.warmup)],
            capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            return 1
        report[child] = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = []
    for layout in ("contiguous", "channels_last"):
        r = report["torch"][layout]
        ratio = r["generated"]["images_per_s"] / r["timm"]["images_per_s"]
        rows.append(
            (f"PyTorch resnetv2_50 ({layout})", r["generated"], r["timm"], ratio)
        )
    k = report["keras"]
    for contender, name in (
        ("generated", "Keras ResNet50V2"),
        ("generated, prepare_for_inference()", "Keras ResNet50V2, folded"),
    ):
        ratio = k[contender]["images_per_s"] / k["keras.applications"]["images_per_s"]
        rows.append((name, k[contender], k["keras.applications"], ratio))
    report["ratios"] = {name: ratio for name, *_, ratio in rows}
    print(f"{'model':36} {'generated img/s':>16} {'reference img/s':>16} {'ratio':>7}")
    for name, ours, theirs, ratio in rows:
        print(
            f"{name:36} {ours['images_per_s']:16.1f} {theirs['images_per_s']:16.1f}"
            f" {ratio:6.2f}x"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
