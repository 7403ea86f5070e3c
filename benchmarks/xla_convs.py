"""One convolution of each kind the three benchmarked models use, in PyTorch
(oneDNN, channels_last, inference_mode) and in XLA on the CPU (jax.jit of
lax.conv_general_dilated, NHWC/HWIO): where the Flax model's time goes
(docs/performance.md, "Flax NNX and Keras on JAX against PyTorch").

    .venv/bin/python benchmarks/xla_convs.py torch   # or: jax

Batch 8, float32, the median of 15 calls after 3; one framework per process.
Run each twice, alternating, with the thread settings of the model run.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

# name: (map size, in channels, out channels, kernel, groups)
LAYERS = {
    "depthwise 3x3, 112x112x96, stride 1": (112, 96, 96, 3, 96),
    "depthwise 3x3, 56x56x144": (56, 144, 144, 3, 144),
    "1x1 144->24, 56x56": (56, 144, 24, 1, 1),
    "3x3 64->64, 56x56 (ResNet-50)": (56, 64, 64, 3, 1),
    "1x1 256->64, 56x56 (ResNet-50)": (56, 256, 64, 1, 1),
}


def conv(framework: str, size: int, cin: int, cout: int, k: int, groups: int):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, size, size, cin), dtype=np.float32)
    w = rng.standard_normal((cout, cin // groups, k, k), dtype=np.float32)
    if framework == "torch":
        import torch

        tx = torch.from_numpy(x).permute(0, 3, 1, 2)  # NCHW, channels_last memory
        tw = torch.from_numpy(w).contiguous(memory_format=torch.channels_last)

        def call() -> None:
            with torch.inference_mode():
                torch.nn.functional.conv2d(tx, tw, padding=k // 2, groups=groups)

        return call
    import jax

    jx, jw = jax.device_put(x), jax.device_put(w.transpose(2, 3, 1, 0))
    f = jax.jit(
        lambda a, b: jax.lax.conv_general_dilated(
            a,
            b,
            (1, 1),
            [(k // 2, k // 2)] * 2,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
        )
    )
    return lambda: f(jx, jw).block_until_ready()


def main() -> None:
    framework = sys.argv[1]
    for name, shape in LAYERS.items():
        call = conv(framework, *shape)
        for _ in range(3):
            call()
        times = []
        for _ in range(15):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        print(f"{framework}\t{statistics.median(times) * 1e3:7.2f} ms\t{name}")


if __name__ == "__main__":
    main()
