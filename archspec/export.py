"""`archspec export`: a generated model with given weights, written as the file
a runtime serves, then run in that runtime and compared with the model.

    format        exported from         run in
    onnx          the PyTorch model     onnxruntime
    torch_export  the PyTorch model     torch.export's saved program (.pt2)
    saved_model   the Keras model       TensorFlow's SavedModel loader
    tflite        the Keras model       the LiteRT interpreter (ai-edge-litert)

Weights of any generated backend (PyTorch's state dict or safetensors,
Keras's .weights.h5, Flax's safetensors) reach the exported model as
`archspec weights convert` moves them. TFLite comes from the Keras model
because it is NHWC throughout: the converter folds batch norm into the
convolutions and leaves no TRANSPOSE, unlike routes from PyTorch's NCHW graph.

The file reaches OUT only once its runtime reproduced the model within the
bound (a file outside it is not written: a pipeline that ignores the exit code
must not ship it). Like the compiler's other tools, nothing here imports a
framework before it is needed.
"""

from __future__ import annotations

import contextlib
import importlib
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import images, ir, runtime
from .convert import read_weights, safetensors
from .errors import SpecError
from .weights import check_state, torch_to_keras

# format -> the backend whose generated model is exported.
FORMATS = {
    "onnx": "torch",
    "torch_export": "torch",
    "saved_model": "keras",
    "tflite": "keras",
}
# format -> the modules its route imports (the extra `archspec[export]`
# installs those archspec[test] lacks).
RUNTIMES = {
    "onnx": ("torch", "onnx", "onnxscript", "onnxruntime"),
    "torch_export": ("torch",),
    "saved_model": ("torch", "tensorflow", "keras"),
    "tflite": ("torch", "tensorflow", "keras", "ai_edge_litert"),
}
EXTRA = {
    "torch": "archspec[torch]",
    "tensorflow": "archspec[keras]",
    "keras": "archspec[keras]",
}
# Float formats: max |runtime - model| / max |model| over the check batches
# may be ROUNDING times what a one-ulp change of the input does to the model's
# logits (how far float32 summation order alone can move them: large for deep
# networks with poorly conditioned weights), and at least FLOAT_BOUND.
# Measured (docs/deploy.md): 2e-6 to 1.4e-4 on the families' smallest
# variants with random weights, each within its bound; a wrong op or weight
# gives errors of order 1.
FLOAT_BOUND, ROUNDING = 1e-4, 8.0
# ...but never above MAX_BOUND: a model that a one-ulp input change moves by
# more than MAX_BOUND / ROUNDING is too chaotic to vouch for a runtime with
# (EfficientNetV2-S with random weights at 64 px: 0.1, which would pass
# errors of 0.3), and exits 1 asking for a larger --size or trained weights.
# Measured bounds of the well-conditioned cases: at most 2e-3.
MAX_BOUND = 1e-2
# int8: the share of held-out calibration images whose top-1 class the int8
# model keeps; measured on a model trained on digits (docs/deploy.md).
INT8_AGREEMENT = 0.9
# Calibration: images for the representative dataset, then as many held out.
CALIBRATION_IMAGES = 64


@dataclass
class Exported:
    format: str
    path: Path
    batches: tuple[int, ...]  # the batch sizes the runtime was run at
    error: float  # max |runtime - model| / max |model|
    bound: float | None  # None: int8, judged by agreement
    ops: dict[str, int] = field(default_factory=dict)
    agreement: float | None = None  # int8: top-1 kept on held-out images
    held_out: int = 0

    @property
    def ok(self) -> bool:
        if self.agreement is not None:
            return self.agreement >= INT8_AGREEMENT
        return self.bound is not None and self.error <= self.bound


def require(fmt: str) -> None:
    """Exit 2 naming the extra when a module of `fmt`'s route is missing."""
    for module in RUNTIMES[fmt]:
        try:
            importlib.import_module(module)
        except ImportError:
            extra = EXTRA.get(module, "archspec[export]")
            raise SpecError(
                f"--format {fmt} needs the Python package `{module}`, which is not "
                f"installed: pip install '{extra}'"
            ) from None


def written_by(path: Path) -> str:
    """The generated backend whose weight file `path` is: Keras's
    .weights.h5, a Flax safetensors file (archspec writes those with
    `framework: flax` metadata), else a PyTorch state dict (.pt, .safetensors)."""
    if path.name.endswith(".weights.h5"):
        return "keras"
    if path.suffix in (".h5", ".keras"):
        raise SpecError(
            f"{path}: Keras weights must be a .weights.h5 file (model.save_weights); "
            "keras.applications' own files go through `archspec weights import`"
        )
    if path.suffix == ".safetensors":
        try:
            with safetensors().safe_open(path, "np") as f:
                if (f.metadata() or {}).get("framework") == "flax":
                    return "flax"
        except SpecError:
            raise
        except Exception:  # not a safetensors file: the torch reader says so
            pass
    return "torch"


def load_state(network: ir.Network, path: Path) -> dict[str, Any]:
    """A weight file of any generated backend as a state dict of NumPy arrays
    (PyTorch's names and layout), every tensor present and shaped."""
    state = read_weights(network, written_by(path), path)
    check_state(network, state)
    return state


def source_model(network: ir.Network, fmt: str, state: dict[str, Any]) -> Any:
    """The generated model `fmt` is exported from, in eval mode, with `state`."""
    if FORMATS[fmt] == "torch":
        import torch

        model = runtime.torch_model(network)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        return model.eval()
    model = runtime.keras_model(network)
    for name, arrays in torch_to_keras(network, state).items():
        model.get_layer(name).set_weights(arrays)
    return model


def check_images(network: ir.Network, batch: int, size: int, seed: int) -> Any:
    """A float32 NCHW batch in the model's input range (as `archspec check`)."""
    import numpy as np

    from .parity.pair import images

    return images(network, np.random.default_rng(seed), batch, size)


def relative(got: Any, want: Any) -> float:
    import numpy as np

    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


# The name each format is made under (torch.export.load insists on .pt2).
SUFFIXES = {
    "onnx": ".onnx",
    "torch_export": ".pt2",
    "saved_model": "",
    "tflite": ".tflite",
}


@contextlib.contextmanager
def staged(out: Path, fmt: str) -> Iterator[Path]:
    """A scratch path beside `out`; the caller installs it with `install`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        yield scratch / f"model{SUFFIXES[fmt]}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def install(made: Path, out: Path) -> None:
    """Move a verified file or SavedModel folder onto `out`, replacing it."""
    if out.is_dir() and not out.is_symlink():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    made.rename(out)


def export(
    network: ir.Network,
    weights: Path,
    fmt: str,
    out: Path,
    *,
    batch: int | None = 1,
    size: int | None = None,
    int8: bool = False,
    calibration: str | None = None,
) -> Exported:
    """Export `network` with `weights` as `fmt` to `out` and check it in its
    runtime. batch None: any batch size (checked at two)."""
    require(fmt)
    if int8 and fmt != "tflite":
        raise SpecError(f"--int8 is for --format tflite, not {fmt}")
    if int8 and calibration is None:
        raise SpecError("--int8 needs --calibration DIR (an ImageFolder) or digits")
    size = size or network.input.resolution
    import torch  # noqa: F401  (before TensorFlow, always)

    state = load_state(network, weights)
    calibrate = calibration_images(network, calibration, size) if int8 else None
    model = source_model(network, fmt, state)
    with staged(out, fmt) as made:
        result = ROUTES[fmt](network, model, made, batch, size, calibrate)
        result.path = out
        if result.ok:
            install(made, out)
    return result


# Routes: each writes `made` and returns what its runtime gave.


def _checks(batch: int | None) -> tuple[int, ...]:
    return (batch,) if batch else (1, 3)


def compare(
    network: ir.Network,
    batch: int | None,
    size: int,
    exported: Callable[[Any], Any],
    model: Callable[[Any], Any],
    nhwc: bool,
) -> tuple[float, float]:
    """(max relative error of `exported` against `model` over the check
    batches, the bound it must meet); both take NumPy batches."""
    import numpy as np

    error = bound = 0.0
    for i, n in enumerate(_checks(batch)):
        x = check_images(network, n, size, seed=1 + i)
        x = x.transpose(0, 2, 3, 1).copy() if nhwc else x
        want = model(x)
        error = max(error, relative(exported(x), want))
        nudged = relative(model(x * np.float32(1 + 2**-23)), want)
        bound = max(bound, FLOAT_BOUND, min(ROUNDING * nudged, MAX_BOUND))
    return error, bound


def _onnx(network, model, made, batch, size, _calibrate) -> Exported:
    import onnx
    import onnxruntime as ort
    import torch

    from .render import paddings

    example = torch.from_numpy(check_images(network, batch or 2, size, seed=0))
    dynamic = None if batch else ({0: torch.export.Dim("batch", min=1, max=1024)},)
    with contextlib.redirect_stdout(None):  # the exporter's progress lines
        torch.onnx.export(
            model,
            (example,),
            made,
            dynamo=True,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=dynamic,
            external_data=False,  # one file: every network here is under 2 GB
        )
    options = ort.SessionOptions()
    if "same" in paddings(network, "onnx").used:
        # onnxruntime 1.31's graph optimizer loses the Pad of a zero-padded
        # kernel ("Node input 'pad_4' is not a graph input"): TensorFlow's
        # "same" padding shifts stride-2 kernels so. Unoptimized, it runs.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        str(made), options, providers=["CPUExecutionProvider"]
    )
    error, bound = compare(
        network,
        batch,
        size,
        lambda x: session.run(["logits"], {"images": x})[0],
        lambda x: _torch_out(model, x),
        nhwc=False,
    )
    ops = Counter(node.op_type for node in onnx.load(str(made)).graph.node)
    return Exported("onnx", made, _checks(batch), error, bound, dict(ops))


def _torch_export(network, model, made, batch, size, _calibrate) -> Exported:
    import torch

    example = torch.from_numpy(check_images(network, batch or 2, size, seed=0))
    dynamic = None if batch else ({0: torch.export.Dim("batch", min=1, max=1024)},)
    program = torch.export.export(model, (example,), dynamic_shapes=dynamic)
    torch.export.save(program, made)
    loaded = torch.export.load(made).module()
    error, bound = compare(
        network,
        batch,
        size,
        lambda x: _torch_out(loaded, x),
        lambda x: _torch_out(model, x),
        nhwc=False,
    )
    ops = Counter(
        str(node.target) for node in program.graph.nodes if node.op == "call_function"
    )
    return Exported("torch_export", made, _checks(batch), error, bound, dict(ops))


def _torch_out(model: Any, x: Any) -> Any:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _keras_out(model: Any, x: Any) -> Any:
    import keras

    return keras.ops.convert_to_numpy(model(x, training=False))


def _saved_model(model: Any, made: Path, batch: int | None, size: int, channels: int):
    import keras

    spec = keras.InputSpec(shape=(batch, size, size, channels), dtype="float32")
    model.export(
        str(made), format="tf_saved_model", input_signature=[spec], verbose=False
    )


def _tf_saved_model(network, model, made, batch, size, _calibrate) -> Exported:
    import tensorflow as tf

    _saved_model(model, made, batch, size, network.input.channels)
    loaded = tf.saved_model.load(str(made))  # owns the variables serve reads
    error, bound = compare(
        network,
        batch,
        size,
        lambda x: loaded.serve(tf.constant(x)).numpy(),
        lambda x: _keras_out(model, x),
        nhwc=True,
    )
    return Exported("saved_model", made, _checks(batch), error, bound)


def tflite_ops(content: bytes) -> dict[str, int]:
    """Op kinds in a TFLite flatbuffer, as written (before any delegate)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=content,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    return dict(Counter(op["op_name"] for op in interpreter._get_ops_details()))


class LiteRT:
    """One TFLite model in the LiteRT interpreter, float in and out whatever
    its input and output types (int8 ones are quantised and dequantised)."""

    def __init__(self, content: bytes) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=content)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = None

    def __call__(self, x: Any) -> Any:
        import numpy as np

        it = self.interpreter
        if self.batch != len(x):
            it.resize_tensor_input(self.input["index"], list(x.shape))
            it.allocate_tensors()
            self.batch = len(x)
        scale, zero = self.input["quantization"]
        if self.input["dtype"] != np.float32:
            info = np.iinfo(self.input["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        it.set_tensor(self.input["index"], x.astype(self.input["dtype"]))
        it.invoke()
        y = it.get_tensor(self.output["index"])
        scale, zero = self.output["quantization"]
        if self.output["dtype"] != np.float32:
            y = (y.astype(np.float32) - zero) * scale
        return y


def _tflite(network, model, made, batch, size, calibrate) -> Exported:
    import tensorflow as tf

    saved = made.with_name(made.name + ".saved_model")
    _saved_model(model, saved, batch, size, network.input.channels)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if calibrate is not None:
        represent, held_out = calibrate
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in represent)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(None):
        content = converter.convert()
    shutil.rmtree(saved)
    made.write_bytes(content)
    lite = LiteRT(content)
    error, bound = compare(
        network, batch, size, lite, lambda x: _keras_out(model, x), nhwc=True
    )
    if calibrate is None:
        return Exported(
            "tflite", made, _checks(batch), error, bound, tflite_ops(content)
        )
    want = _keras_out(model, held_out).argmax(-1)
    agreement = float((top1(lite, held_out, batch or 1) == want).mean())
    return Exported(
        "tflite",
        made,
        _checks(batch),
        error,
        None,
        tflite_ops(content),
        agreement=agreement,
        held_out=len(held_out),
    )


def top1(lite: LiteRT, x: Any, batch: int) -> Any:
    """Top-1 classes of `x` through a model of fixed `batch`, the last batch
    padded with copies of its last image."""
    import numpy as np

    out = []
    for start in range(0, len(x), batch):
        part = x[start : start + batch]
        pad = batch - len(part)
        if pad:
            part = np.concatenate([part, np.repeat(part[-1:], pad, axis=0)])
        out.append(lite(part).argmax(-1)[: batch - pad])
    return np.concatenate(out)


ROUTES = {
    "onnx": _onnx,
    "torch_export": _torch_export,
    "saved_model": _tf_saved_model,
    "tflite": _tflite,
}


# Calibration data for int8: NHWC float32 in the model's input convention.


def calibration_images(network: ir.Network, source: str, size: int) -> tuple[Any, Any]:
    """(representative images, held-out images) from an ImageFolder directory
    or scikit-learn's digits, resized to `size` and normalised as the weights
    expect."""
    import numpy as np

    pixels = images.load(source, size, "--calibration").pixels
    rng = np.random.default_rng(0)
    x = normalise(
        network, pixels[rng.permutation(len(pixels))][: 2 * CALIBRATION_IMAGES]
    )
    half = max(1, len(x) // 2)
    return x[:half], x[half:]


def normalise(network: ir.Network, pixels: Any) -> Any:
    """uint8 NHWC images -> float32 model input, with the spec's `input.data`
    mean and std (on 0-1 values, as timm's and torchvision's transforms)."""
    import numpy as np

    data = network.input.data
    if data is None or data.mean is None or data.std is None:
        raise SpecError(
            f"{network.title}: its spec states no `input.data` mean and std, so "
            "calibration images cannot be normalised as its weights expect"
        )
    x = pixels.astype(np.float32) / np.float32(255)
    return ((x - np.float32(data.mean)) / np.float32(data.std)).astype(np.float32)
