"""TFLite from a PyTorch model, two routes: the usual converter against archspec's
native-NHWC Keras model (issue 25).

The usual route converts torchvision's model with litert-torch (formerly
ai-edge-torch). PyTorch computes in NCHW and LiteRT in NHWC, so the converter
has to insert TRANSPOSE ops and then optimise them away (litert-torch issue
#179 is about those left behind); the model keeps torchvision's NCHW input,
unless litert_torch.to_channel_last_io makes it NHWC (measured as a second
row). archspec's route compiles the same architecture from its spec to a Keras
model that is NHWC throughout, exports it as a SavedModel and converts that
with tf.lite.TFLiteConverter (float32, no optimisations): no TRANSPOSE to
insert. The table counts what each route leaves in the flatbuffer.

    .venv/bin/python benchmarks/tflite_routes.py
    .venv/bin/python benchmarks/tflite_routes.py --networks mobilenet_v2 --runs 10

writes benchmarks/results/tflite/latest.md and latest.json and prints the table.

litert-torch cannot go into the project's venv: its dependency xdsl 0.28.0
pins typing-extensions<4.13, and pydantic (the compiler's own stack) needs
>=4.16, so pip would downgrade typing-extensions (and anyio) under pydantic.
It is installed beside the venv into a folder of its own, with --no-deps and
its new dependencies listed (typing-extensions and anyio left to the venv's;
xdsl runs with typing-extensions 4.16), and the conversion runs in a
subprocess with that folder on PYTHONPATH: --tools, default
$ARCHSPEC_TFLITE_TOOLS or else ~/.cache/archspec-tflite-tools. The command is
LITERT_TORCH_INSTALL below. Without it the usual routes are reported as not
measured and archspec's route still is.

Method
------
* Networks, 224x224, batch 1, float32: torchvision mobilenet_v2,
  mobilenet_v3_large and efficientnet_b0 against specs/mobilenet_v2.yaml
  (mobilenet_v2_100), specs/mobilenet_v3.yaml (mobilenet_v3_large_100) and
  specs/b0_torchvision.yaml (b0, module efficientnet_tv_b0).
* Weights: this machine reaches no model hub, so torchvision's models are
  randomly initialised (seed 0); their batch norms' statistics are then
  recalibrated on random normalised images and their affine parameters drawn
  at random, so that every layer carries O(1) activations and the logits are
  a real numeric check, not ~1e-10. archspec's model takes the same state dict
  through archspec.references.torchvision.from_torchvision and
  archspec.weights.torch_to_keras (what `archspec weights import` does).
* Input: one seeded image in [0, 1], normalised with ImageNet's mean and std
  outside the models (none of the three specs preprocesses inside the model:
  net.input.preprocess is None), as NCHW for the converted torchvision model
  (it keeps NCHW input) and NHWC for archspec's.
* Ops: counted by kind from the flatbuffer as the interpreter reads it before
  any delegate (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES).
* Latency: ai_edge_litert's Interpreter with its default XNNPACK delegate,
  num_threads 1 and 2: the median of --runs invocations after --warmup. The
  routes alternate per thread count, so drift of the machine falls on both.
* Error: max |a - b| / max |b| over the 1000 logits (relative to the logits'
  scale; an elementwise ratio is meaningless near zero), against the other
  route and against torchvision's model run eagerly in PyTorch.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch  # before TensorFlow and Keras, always (see archspec.parity)

ROOT = Path(__file__).resolve().parent.parent
RESOLUTION = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# Installed beside the venv, not into it: see the module docstring.
LITERT_TORCH_INSTALL = (
    ".venv/bin/pip install --no-deps --target DIR litert-torch==0.10.0 "
    "ai-edge-quantizer==0.10.0 litert-converter==0.5.0 litert-lm-builder==0.18.1 "
    "xdsl==0.28.0 ordered-set==4.1.0 immutabledict==4.2.1 lark==1.3.1 "
    "multipledispatch==1.0.0 torchao==0.18.0 jaxtyping==0.3.11 wadler_lindig==0.1.8 "
    "fire==0.7.1 tabulate==0.10.0 sentencepiece==0.2.3 kagglehub==1.0.3 "
    "kagglesdk==0.1.38 transformers==5.25.0 tokenizers==0.23.3 kernels==0.19.1 "
    "regex==2026.11.19 typer==0.28.0 annotated-doc==0.0.7 shellingham==1.5.4 "
    "tomlkit==0.15.3 tomli==2.5.0"
)


@dataclass(frozen=True)
class Network:
    title: str
    torchvision: str  # torchvision.models.<name>
    spec: str
    variant: str


NETWORKS = {
    "mobilenet_v2": Network(
        "MobileNetV2", "mobilenet_v2", "specs/mobilenet_v2.yaml", "mobilenet_v2_100"
    ),
    "mobilenet_v3_large": Network(
        "MobileNetV3-Large",
        "mobilenet_v3_large",
        "specs/mobilenet_v3.yaml",
        "mobilenet_v3_large_100",
    ),
    "efficientnet_b0": Network(
        "EfficientNet-B0", "efficientnet_b0", "specs/b0_torchvision.yaml", "b0"
    ),
}

# The usual route as users run it (NCHW input, as torchvision's model takes),
# and with litert-torch's own option for NHWC input.
USUAL = "litert-torch"
USUAL_NHWC = "litert-torch, to_channel_last_io"
USUAL_LAYOUTS = {USUAL: "NCHW", USUAL_NHWC: "NHWC"}
ARCHSPEC = "archspec Keras -> SavedModel"


@dataclass
class Result:
    network: str
    route: str
    ok: bool
    note: str = ""
    input_layout: str = ""
    transpose_ops: int | None = None
    total_ops: int | None = None
    ops: dict[str, int] = field(default_factory=dict)
    size_mb: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    rel_error_vs_other: float | None = None
    rel_error_vs_eager: float | None = None
    convert_s: float | None = None


# --- the reference: torchvision's model with O(1) activations ---------------


def torchvision_model(name: str, seed: int = 0) -> torch.nn.Module:
    """torchvision's `name`, randomly initialised, batch norms recalibrated."""
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)().eval()
    rng = np.random.default_rng(seed + 1)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in norms:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.1)
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative average over the batches
            bn.train()  # only the batch norms: dropout and stochastic depth stay off
        for _ in range(2):
            images = rng.random((8, RESOLUTION, RESOLUTION, 3), dtype=np.float32)
            model(torch.from_numpy(normalised(images)).permute(0, 3, 1, 2))
    return model.eval()


def normalised(images_nhwc: np.ndarray) -> np.ndarray:
    return ((images_nhwc - MEAN) / STD).astype(np.float32)


def sample_image(seed: int = 123) -> np.ndarray:
    """One normalised NHWC image: smooth gradients plus noise, values in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:RESOLUTION, 0:RESOLUTION] / RESOLUTION
    smooth = np.stack(
        [np.sin(6 * x + 2 * c) * np.cos(4 * y - c) for c in range(3)], axis=-1
    )
    image = np.clip(0.5 + 0.35 * smooth + 0.1 * rng.standard_normal(smooth.shape), 0, 1)
    return normalised(image[None].astype(np.float32))


# --- the usual route: litert-torch, in a subprocess --------------------------


def convert_with_litert_torch(
    name: str, layout: str, state_path: Path, out: Path
) -> None:
    """Subprocess body: torchvision's model with the saved weights -> out, with
    torchvision's NCHW input or, through to_channel_last_io, NHWC input."""
    import litert_torch
    import torchvision

    model = getattr(torchvision.models, name)()
    model.load_state_dict(torch.load(state_path, weights_only=True))
    model.eval()
    sample = torch.zeros(1, 3, RESOLUTION, RESOLUTION)
    if layout == "NHWC":
        model = litert_torch.to_channel_last_io(model, args=[0])
        sample = sample.permute(0, 2, 3, 1)
    litert_torch.convert(model, (sample,)).export(str(out))


def usual_route(
    name: str, layout: str, state_path: Path, out: Path, tools: str | None
) -> tuple[bytes | None, str, float]:
    """(flatbuffer or None, what went wrong, seconds) of litert-torch's conversion."""
    env = dict(os.environ)
    if tools:
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [tools, env.get("PYTHONPATH")])
        )
    command = [
        sys.executable,
        __file__,
        "--litert-torch-convert",
        name,
        layout,
        str(state_path),
        str(out),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0 or not out.exists():
        lines = (done.stderr or done.stdout).strip().splitlines()
        problem = lines[-1] if lines else f"exit {done.returncode}"
        if "No module named 'litert_torch'" in problem:
            problem = "litert-torch not installed (LITERT_TORCH_INSTALL, --tools)"
        return None, problem, seconds
    return out.read_bytes(), "", seconds


def default_tools() -> str | None:
    if "ARCHSPEC_TFLITE_TOOLS" in os.environ:
        return os.environ["ARCHSPEC_TFLITE_TOOLS"]
    folder = Path.home() / ".cache/archspec-tflite-tools"
    return str(folder) if folder.is_dir() else None


def litert_torch_version(tools: str | None) -> str | None:
    paths = [tools] if tools else None
    for dist in importlib.metadata.distributions(path=paths):
        if dist.metadata["Name"] in ("litert-torch", "litert_torch"):
            return dist.version
    return None


# --- archspec's route: generated Keras -> SavedModel -> TFLite ---------------


def archspec_keras(network: Network, state: dict[str, np.ndarray]):
    """The generated Keras model with torchvision's weights, and its IR."""
    from archspec import pipeline, runtime
    from archspec.references.torchvision import from_torchvision
    from archspec.weights import torch_to_keras

    loaded = pipeline.load_spec(ROOT / network.spec)
    net = pipeline.network(loaded, variant=network.variant)
    if net.input.preprocess is not None:
        raise SystemExit(f"{network.spec}: expected no preprocessing in the model")
    # b0_torchvision.yaml names no reference; its layout is the default scheme.
    scheme = loaded.spec.references.get("torchvision") or "efficientnet"
    model = runtime.keras_model(net)
    layers = torch_to_keras(net, from_torchvision(net, state, scheme))
    for layer_name, arrays in layers.items():
        model.get_layer(layer_name).set_weights(arrays)
    return model


def archspec_route(
    network: Network, state: dict[str, np.ndarray]
) -> tuple[bytes, float]:
    import keras
    import tensorflow as tf

    start = time.perf_counter()
    model = archspec_keras(network, state)
    with tempfile.TemporaryDirectory(prefix="archspec-tflite-") as folder:
        spec = keras.InputSpec(shape=(1, RESOLUTION, RESOLUTION, 3), dtype="float32")
        model.export(
            folder, format="tf_saved_model", input_signature=[spec], verbose=False
        )
        flatbuffer = tf.lite.TFLiteConverter.from_saved_model(folder).convert()
    return flatbuffer, time.perf_counter() - start


# --- measuring a flatbuffer ----------------------------------------------------


def interpreter(flatbuffer: bytes, threads: int | None = None, delegates: bool = True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = (
        OpResolverType.AUTO
        if delegates
        else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    runner = Interpreter(
        model_content=flatbuffer,
        num_threads=threads,
        experimental_op_resolver_type=resolver,
    )
    runner.allocate_tensors()
    return runner


def op_counts(flatbuffer: bytes) -> dict[str, int]:
    ops = interpreter(flatbuffer, delegates=False)._get_ops_details()
    return dict(collections.Counter(op["op_name"] for op in ops).most_common())


def logits(flatbuffer: bytes, image: np.ndarray) -> np.ndarray:
    runner = interpreter(flatbuffer, threads=1)
    runner.set_tensor(runner.get_input_details()[0]["index"], image)
    runner.invoke()
    return runner.get_tensor(runner.get_output_details()[0]["index"]).reshape(-1)


def latencies(
    models: dict[str, tuple[bytes, np.ndarray]], threads: int, warmup: int, runs: int
) -> dict[str, float]:
    """Median ms per invocation of each model; the models alternate every run."""
    runners = {}
    for key, (flatbuffer, image) in models.items():
        runner = interpreter(flatbuffer, threads=threads)
        runner.set_tensor(runner.get_input_details()[0]["index"], image)
        for _ in range(warmup):
            runner.invoke()
        runners[key] = runner
    times: dict[str, list[float]] = {key: [] for key in runners}
    for _ in range(runs):
        for key, runner in runners.items():
            start = time.perf_counter()
            runner.invoke()
            times[key].append(time.perf_counter() - start)
    return {key: 1000 * statistics.median(t) for key, t in times.items()}


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def input_layout(flatbuffer: bytes) -> tuple[str, tuple[int, ...]]:
    details = interpreter(flatbuffer, delegates=False).get_input_details()[0]
    shape = tuple(int(d) for d in details["shape"])
    return ("NCHW" if shape[1] == 3 else "NHWC"), shape


# --- one network ---------------------------------------------------------------


def measure(name: str, args: argparse.Namespace, scratch: Path) -> list[Result]:
    network = NETWORKS[name]
    reference = torchvision_model(network.torchvision)
    state = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    state_path = scratch / f"{name}.pt"
    torch.save(reference.state_dict(), state_path)
    image = sample_image()
    with torch.no_grad():
        eager = (
            reference(torch.from_numpy(image).permute(0, 3, 1, 2)).numpy().reshape(-1)
        )

    flatbuffers: dict[str, bytes] = {}
    results: dict[str, Result] = {}
    for route, layout in USUAL_LAYOUTS.items():
        usual, problem, seconds = usual_route(
            network.torchvision,
            layout,
            state_path,
            scratch / f"{name}_{layout}.tflite",
            args.tools,
        )
        results[route] = Result(
            name, route, usual is not None, problem, convert_s=round(seconds, 1)
        )
        if usual is not None:
            flatbuffers[route] = usual
    flatbuffers[ARCHSPEC], seconds = archspec_route(network, state)
    results[ARCHSPEC] = Result(name, ARCHSPEC, True, convert_s=round(seconds, 1))

    inputs = {}
    outputs = {}
    for route, flatbuffer in flatbuffers.items():
        layout, shape = input_layout(flatbuffer)
        inputs[route] = (
            image.transpose(0, 3, 1, 2).copy() if layout == "NCHW" else image
        )
        ops = op_counts(flatbuffer)
        result = results[route]
        result.input_layout = f"{layout} {shape}"
        result.ops = ops
        result.total_ops = sum(ops.values())
        result.transpose_ops = ops.get("TRANSPOSE", 0)
        result.size_mb = round(len(flatbuffer) / 2**20, 2)
        outputs[route] = logits(flatbuffer, inputs[route])
        result.rel_error_vs_eager = rel_error(outputs[route], eager)
    for route in USUAL_LAYOUTS:
        if route in outputs:
            results[route].rel_error_vs_other = rel_error(
                outputs[route], outputs[ARCHSPEC]
            )
    if USUAL in outputs:
        results[ARCHSPEC].rel_error_vs_other = rel_error(
            outputs[ARCHSPEC], outputs[USUAL]
        )
    for threads in (1, 2):
        timed = latencies(
            {r: (flatbuffers[r], inputs[r]) for r in flatbuffers},
            threads,
            args.warmup,
            args.runs,
        )
        for route, ms in timed.items():
            results[route].latency_ms[str(threads)] = round(ms, 2)
    return list(results.values())


# --- reporting -----------------------------------------------------------------


def machine_line(tools: str | None) -> str:
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {
        p: importlib.metadata.version(p)
        for p in (
            "torch",
            "torchvision",
            "tensorflow-cpu",
            "keras",
            "ai-edge-litert",
            "numpy",
        )
    }
    versions["litert-torch"] = litert_torch_version(tools) or "not installed"
    listed = ", ".join(f"{k} {v}" for k, v in versions.items())
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} logical cores (load average at the end: {load}); "
        f"Python {platform.python_version()}; {listed}"
    )


def fmt(value, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def table(results: list[Result]) -> str:
    lines = [
        "| network | route | input | TRANSPOSE ops | total ops | size MB "
        "| latency 1 thread ms | latency 2 threads ms | max rel error vs the other route "
        "| max rel error vs PyTorch eager |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if not r.ok:
            lines.append(
                f"| {NETWORKS[r.network].title} | {r.route} | failed: "
                f"{r.note} | - | - | - | - | - | - | - |"
            )
            continue
        lines.append(
            f"| {NETWORKS[r.network].title} | {r.route} | {r.input_layout.split()[0]} "
            f"| {r.transpose_ops} | {r.total_ops} | {fmt(r.size_mb, '.2f')} "
            f"| {fmt(r.latency_ms.get('1'), '.2f')} | {fmt(r.latency_ms.get('2'), '.2f')} "
            f"| {fmt(r.rel_error_vs_other, '.1e')} | {fmt(r.rel_error_vs_eager, '.1e')} |"
        )
    return "\n".join(lines)


def op_table(results: list[Result]) -> str:
    lines = ["| network | route | ops by kind |", "|---|---|---|"]
    for r in results:
        if r.ok:
            kinds = ", ".join(f"{k} {v}" for k, v in r.ops.items())
            lines.append(f"| {NETWORKS[r.network].title} | {r.route} | {kinds} |")
    return "\n".join(lines)


def write(out: Path, results: list[Result], machine: str, args, seconds: float) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"Machine: {machine}. Run {stamp}, {seconds:.0f} s.\n\n"
        f"TFLite float32, batch 1, {RESOLUTION}x{RESOLUTION}. Latency: LiteRT "
        f"Interpreter, default XNNPACK delegate, median of {args.runs} invocations "
        f"after {args.warmup} warm-up, routes alternating. Ops: from the flatbuffer, "
        f"before delegation. Error: max |a - b| / max |b| over the logits (the other "
        f"route: archspec's for litert-torch's rows, litert-torch's NCHW one for "
        f"archspec's); same "
        f"normalised image (NCHW or NHWC per the model's input), torchvision's "
        f"randomly initialised weights (seed 0, batch norms recalibrated) in both."
    )
    body = f"{header}\n\n{table(results)}\n\nOps by kind:\n\n{op_table(results)}\n"
    notes = [f"- {r.network}, {r.route}: {r.note}" for r in results if r.note]
    if notes:
        body += "\nNot measured:\n\n" + "\n".join(notes) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.md").write_text(body)
    (out / "latest.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "run": stamp,
                "seconds": round(seconds, 1),
                "resolution": RESOLUTION,
                "runs": args.runs,
                "warmup": args.warmup,
                "litert_torch_install": LITERT_TORCH_INSTALL,
                "results": [asdict(r) for r in results],
            },
            indent=1,
        )
        + "\n"
    )
    return table(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--networks",
        default=",".join(NETWORKS),
        help=f"comma-separated, of: {', '.join(NETWORKS)}",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/tflite")
    parser.add_argument(
        "--tools",
        default=default_tools(),
        help="folder litert-torch was installed into with pip --target "
        "(default: $ARCHSPEC_TFLITE_TOOLS, else ~/.cache/archspec-tflite-tools)",
    )
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--litert-torch-convert", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.litert_torch_convert:
        name, layout, state_path, out = args.litert_torch_convert
        convert_with_litert_torch(name, layout, Path(state_path), Path(out))
        return 0
    names = [n.strip() for n in args.networks.split(",") if n.strip()]
    unknown = [n for n in names if n not in NETWORKS]
    if unknown:
        parser.error(
            f"unknown network {', '.join(unknown)}; known: {', '.join(NETWORKS)}"
        )

    start = time.perf_counter()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="tflite-routes-") as scratch:
        for name in names:
            print(f"{name} ...", file=sys.stderr, flush=True)
            results += measure(name, args, Path(scratch))
    print(
        write(
            args.out,
            results,
            machine_line(args.tools),
            args,
            time.perf_counter() - start,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
