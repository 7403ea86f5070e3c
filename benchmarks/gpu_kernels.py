"""Where a forward spends its GPU time: the generated model against its reference.

For each model and dtype, profiles a few eval forwards of the reference and of
the generated model (channels_last, batch 256, as bench.py --device cuda) with
torch.profiler, and prints for each: GPU time per forward, kernel launches per
forward, and the kernels that take the most time. What the generated model
launches beyond the reference is what to remove (issue 28).

    python benchmarks/gpu_kernels.py resnet50,mobilenet_v3_large_100 [--top 8]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench

FORWARDS = 3


def profile(call) -> tuple[float, int, Counter]:
    """GPU milliseconds and kernel launches per forward, and ms per kernel name."""
    import torch
    from torch.profiler import ProfilerActivity

    for _ in range(3):
        call()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(FORWARDS):
            call()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
    by_name: Counter = Counter()
    for e in kernels:
        by_name[e.name[:90]] += e.device_time / 1000 / FORWARDS
    total = sum(by_name.values())
    return total, len(kernels) // FORWARDS, by_name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", help="comma list, as bench.py --variants")
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--dtypes", default="bfloat16,float32")
    args = parser.parse_args()

    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    for m in map(bench.model, args.variants.split(",")):
        for dtype in (getattr(torch, d) for d in args.dtypes.split(",")):
            for c in bench.contenders(m, cuda=True):
                if c.folded:
                    continue
                net, resolution = bench.build_torch(c, m)
                net = net.to("cuda", dtype=dtype, memory_format=torch.channels_last)
                x = bench.make_input(
                    c, m, resolution, bench.CUDA_BATCH, device="cuda", dtype=dtype
                )
                ms, launches, by_name = profile(bench.forward_call(net, x))
                print(
                    f"\n{m.name} {str(dtype)[6:]} {c.label}: {ms:.2f} ms GPU, "
                    f"{launches} kernels per forward"
                )
                for name, t in by_name.most_common(args.top):
                    print(f"  {t:7.2f} ms  {name}")
                del net, x
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
