"""The Keras backend: generated source, and the generated models against
keras.applications' EfficientNet B0-B7 (TensorFlow backend in this process;
torch and JAX backends in subprocesses)."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import (
    B0,
    B0_TV,
    PARAMS,
    ROOT,
    TOLERANCE,
    draw_norms,
    emit,
    images,
    load_module,
    numpy,
    trainable,
)
from helpers import array_relative_error as relative_error

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# torch (and triton) before TensorFlow, should another test in this process use
# them: torch's CUDA build segfaults loading triton after TensorFlow.
for _first in ("torch", "triton"):
    if importlib.util.find_spec(_first) is not None:
        importlib.import_module(_first)

import archspec_keras  # noqa: E402

from archspec import __version__, blocks, ir  # noqa: E402
from archspec.blocks import registry  # noqa: E402
from archspec.errors import SpecError  # noqa: E402
from archspec.parity import keras_call  # noqa: E402
from archspec.pipeline import load_spec, network  # noqa: E402
from archspec.references.keras_applications import layer_names  # noqa: E402
from archspec.weights import torch_to_keras  # noqa: E402

keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

BACKEND = archspec_keras.BACKEND
PHIS = range(8)
APPLICATIONS = [getattr(keras.applications, f"EfficientNetB{phi}") for phi in PHIS]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def b0_spec():
    return load_spec(B0)


@pytest.fixture(scope="module")
def generated(b0_spec, tmp_path_factory) -> dict[int, tuple[ir.Network, Path]]:
    folder = tmp_path_factory.mktemp("keras")
    nets = {phi: network(b0_spec, phi) for phi in PHIS}
    return {phi: (net, emit(net, folder)) for phi, net in nets.items()}


def randomise(model, rng, x=None) -> None:
    """Random weights everywhere, including the BN statistics.

    Kernels keep their (seeded) random initialisation; BN scales, shifts and
    all biases are drawn at random. With `x`, the BN moving statistics are the
    batch statistics of `x` (one training-mode pass, momentum 0, dropout off),
    as random as the rest: statistics drawn blindly make a deep network blow
    up (B7's logits reach 1e6, and rounding, even in float64, then moves them
    by tens of percent) or lose its input. Without `x` they are drawn at
    random, which is fine for B0 and makes it less sensitive to rounding.
    """
    draw_norms(model, rng, statistics=x is None)
    if x is None:
        return
    norms = [n for n in model.layers if isinstance(n, keras.layers.BatchNormalization)]
    dropouts = [d for d in model.layers if isinstance(d, keras.layers.Dropout)]
    momentum, rates = [n.momentum for n in norms], [d.rate for d in dropouts]
    for layer in norms:
        layer.momentum = 0.0
    for layer in dropouts:
        layer.rate = 0.0
    keras_call(model, x, training=True)  # eagerly, B7 at 600 px took 8 GB
    for layer, value in zip(norms, momentum, strict=True):
        layer.momentum = value
    for layer, value in zip(dropouts, rates, strict=True):
        layer.rate = value


def set_normalization(app) -> None:
    (layer,) = [x for x in app.layers if isinstance(x, keras.layers.Normalization)]
    count = layer.get_weights()[2]
    # Squared in float64 and then rounded, as the generated module's constants
    # are: float32 squares differ in the last bit, and a deep random network
    # amplifies that to ~1e-5 of its logits.
    layer.set_weights([np.float64(IMAGENET_MEAN), np.float64(IMAGENET_STD) ** 2, count])
    layer.finalize_state()  # set_weights alone leaves call() on the old statistics


def copy_from_applications(net: ir.Network, app, model) -> int:
    names = layer_names(net, "efficientnet")
    weighted = {layer.name for layer in model.layers if layer.weights}
    assert set(names) == weighted
    app_weighted = {
        x.name
        for x in app.layers
        if x.weights and not isinstance(x, keras.layers.Normalization)
    }
    assert set(names.values()) == app_weighted
    for ours, theirs in names.items():
        model.get_layer(ours).set_weights(app.get_layer(theirs).get_weights())
    return len(names)


def reference_pair(phi: int, module, net: ir.Network, seed: int, x, input_shape=None):
    """keras.applications B{phi} with random weights (BN statistics from the
    batch `x`, or random if None), and ours with the same weights."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    app = APPLICATIONS[phi](
        weights=None, classifier_activation=None, input_shape=input_shape
    )
    set_normalization(app)
    randomise(app, rng, x)
    ours = getattr(module, net.module)(input_shape=(None, None, 3))
    copy_from_applications(net, app, ours)
    return app, ours


# Generated source --------------------------------------------------------------


def test_header_and_constants(generated):
    net, path = generated[3]
    text = path.read_text()
    assert text.startswith(
        f'"""EfficientNet-B3 for Keras 3, generated by archspec {__version__}.\n\n'
        "Compiled from b0.yaml (published coefficients: width 1.2, depth 1.4,\n"
        "resolution 300, dropout 0.3). Do not edit; regenerate with\n"
        "`archspec compile b0.yaml --variant b3 --backend keras`.\n\n"
        "Trainable parameters: 12,233,232. FLOPs: "
    )
    assert "G multiply-adds at 300x300.\n" in text
    for line in (
        "BN_EPSILON = 0.001",
        "BN_MOMENTUM = 0.99",
        'PADDING = "same"',
        'ACTIVATION = "silu"',
        "CONV_BIAS = False",
    ):
        assert f"\n{line}\n" in text
    assert (
        "def efficientnet_b3(\n    include_top: bool = True,\n    weights: str | None = None,\n"
        "    input_tensor: keras.KerasTensor | None = None,\n"
        "    input_shape: tuple[int | None, int | None, int] = (300, 300, 3),\n"
        "    pooling: str | None = None,\n    classes: int = 1000,\n"
        "    classifier_activation: str | None = None,\n"
        "    drop_rate: float = 0.3,\n    drop_path_rate: float = 0.2,\n) -> keras.Model:"
    ) in text
    # Every block is a call with literal arguments from the IR; its drop rate
    # is an expression of the builder's drop_path_rate (block i of n: i / n).
    block = net.stages[5].blocks[1]
    i = net.blocks.index(block)
    assert (
        "    x = mbconv(\n        x,\n"
        f"        filters={block.out_channels},\n        expanded_filters={block.expanded_channels},\n"
        f"        squeeze_filters={block.squeeze_channels},\n        kernel_size=5,\n        strides=1,\n"
        f"        drop_rate=drop_path_rate * {i} / {len(net.blocks)},\n"
        '        name="stages_5_1",\n    )\n'
    ) in text
    # The stem and the head, layer by layer.
    assert (
        '\n    x = conv_bn_act(x, filters=40, kernel_size=3, strides=2, name="stem")\n'
        in text
    )
    assert (
        '    x = conv_bn_act(x, filters=1536, kernel_size=1, strides=1, name="head")\n'
        "    if include_top:\n"
        '        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)\n'
        "        if drop_rate > 0:\n"
        '            x = keras.layers.Dropout(drop_rate, name="dropout")(x)\n'
        "        x = keras.layers.Dense(\n"
        '            classes, kernel_initializer=DENSE_INIT, name="classifier"\n'
        "        )(x)\n"
        "        if classifier_activation is not None:\n"
        '            x = keras.layers.Activation(classifier_activation, name="predictions")(x)\n'
        '    elif pooling == "avg":\n'
    ) in text
    assert text.count("x = mbconv(") == len(net.blocks)
    assert max(map(len, text.splitlines())) <= 88


def test_torchvision_conventions_reach_the_constants(tmp_path):
    net = network(load_spec(B0_TV), 0)
    assert (net.stem[0].norm.eps, net.stem[0].norm.momentum) == (1e-5, 0.1)
    text = emit(net, tmp_path).read_text()
    for line in ('PADDING = "symmetric"', "BN_EPSILON = 1e-05", "BN_MOMENTUM = 0.9"):
        assert f"\n{line}\n" in text


def test_generated_imports_only_keras(generated):
    for _, path in generated.values():
        tree = ast.parse(path.read_text())
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in (
                node.names
                if isinstance(node, ast.Import)
                else [ast.alias(node.module or "")]
            )
        }
        assert imported == {"keras"}, path.name


def test_ruff_clean(generated, tmp_path):
    paths = [str(path) for _, path in generated.values()]
    config = str(ROOT / "pyproject.toml")
    for args in (["check"], ["format", "--check"]):
        proc = subprocess.run(
            [sys.executable, "-m", "ruff", *args, "--config", config, *paths],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_output_is_byte_identical_across_hash_seeds(generated):
    specs = ROOT / "specs"
    script = textwrap.dedent(
        f"""
        import sys
        import archspec_keras
        from archspec.pipeline import load_spec, network
        for spec, variant in (
            ({str(B0)!r}, "b7"),
            ({str(specs / "resnet_keras.yaml")!r}, "resnet152"),
            ({str(specs / "se_resnet.yaml")!r}, "seresnet18"),
        ):
            net = network(load_spec(spec), variant=variant)
            sys.stdout.write("".join(archspec_keras.BACKEND.emit(net).values()))
        """
    )
    expected = generated[7][1].read_text() + "".join(
        "".join(BACKEND.emit(network(load_spec(specs / spec), variant=v)).values())
        for spec, v in (
            ("resnet_keras.yaml", "resnet152"),
            ("se_resnet.yaml", "seresnet18"),
        )
    )
    for seed in ("0", "12345"):
        proc = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert proc.stdout == expected


def test_non_uniform_norm_is_rejected(b0_spec):
    net = network(b0_spec, 0)
    block = net.stages[2].blocks[1]
    odd = block.model_copy(update={"norm": ir.Norm(eps=1e-5, momentum=0.1)})
    stage = net.stages[2].model_copy(update={"blocks": (net.stages[2].blocks[0], odd)})
    stages = (*net.stages[:2], stage, *net.stages[3:])
    with pytest.raises(SpecError, match=r"share one norm.*at stages\.2\.1"):
        BACKEND.emit(net.model_copy(update={"stages": stages}))


def test_a_block_padding_its_own_way_is_rejected(b0_spec):
    """Stem and head layers may name a padding rule (Keras's MobileNet); block
    templates use the module's."""
    net = network(b0_spec, 0)
    strided = net.stages[1].blocks[0]
    stage = net.stages[1].model_copy(
        update={"blocks": (strided.model_copy(update={"padding": "symmetric"}),)}
    )
    stages = (net.stages[0], stage, *net.stages[2:])
    with pytest.raises(SpecError, match=r"stages\.1\.0\.depthwise pads 'symmetric'"):
        BACKEND.emit(net.model_copy(update={"stages": stages}))


def with_everywhere(net: ir.Network, **update) -> ir.Network:
    """`net` with `update` applied to every stem and head layer and block that
    has the fields (blocks derive their sub-layers from their own fields)."""

    def change(node):
        fields = {k: v for k, v in update.items() if k in type(node).model_fields}
        return node.model_copy(update=fields)

    stages = tuple(
        s.model_copy(update={"blocks": tuple(change(b) for b in s.blocks)})
        for s in net.stages
    )
    return net.model_copy(
        update={
            "stem": tuple(change(n) for n in net.stem),
            "head": tuple(change(n) for n in net.head),
            "stages": stages,
        }
    )


def test_activations_map_to_keras_names(b0_spec):
    """Each IR activation becomes the Keras activation that computes it
    (hardswish is Keras's hard_silu; the property test checks the numbers)."""
    net = network(b0_spec, 0)
    for ours, theirs in [("hardswish", "hard_silu"), ("relu", "relu")]:
        changed = with_everywhere(net, activation=ours, se_activation=ours)
        text = BACKEND.emit(changed)["efficientnet_b0.py"]
        assert f'\nACTIVATION = "{theirs}"\n' in text


def test_hard_sigmoid_gate(b0_spec):
    net = with_everywhere(network(b0_spec, 0), se_gate="hardsigmoid")
    assert 'activation="hard_sigmoid"' in BACKEND.emit(net)["efficientnet_b0.py"]


def test_padded_max_pool_pads_zeros_after_a_relu_only():
    """Zero padding equals PyTorch's -inf padding after a ReLU; elsewhere the
    pool leaves its padding out (tests/test_primitives.py checks the values)."""
    net = network(load_spec(ROOT / "specs" / "resnet.yaml"), variant="resnet18")
    conv, pool = net.stem
    text = BACKEND.emit(net)["resnet18.py"]
    assert (
        '\n    x = pool(x, "max", pool_size=3, strides=2, padding=1, name="stem_pool")\n'
        in text
    )
    assert "exclude_padding" not in text
    relu6 = with_everywhere(net, activation="relu6")
    assert 'x = pool(x, "max"' in BACKEND.emit(relu6)["resnet18.py"]
    linear = net.model_copy(
        update={"stem": (conv.model_copy(update={"activation": None}), pool)}
    )
    alone = net.model_copy(update={"stem": (pool, conv)})
    for changed in (linear, alone):
        assert "exclude_padding=True," in BACKEND.emit(changed)["resnet18.py"]
    zeros = linear.model_copy(
        update={"stem": (linear.stem[0], pool.model_copy(update={"fill": "zero"}))}
    )
    text = BACKEND.emit(zeros)["resnet18.py"]
    assert "exclude_padding" not in text
    assert "keras.applications' ZeroPadding2D" in text
    unpadded = net.model_copy(
        update={"stem": (pool.model_copy(update={"pad": 0}), conv)}
    )
    assert (
        'x = pool(x, "max", pool_size=3, strides=2, padding=0'
        in BACKEND.emit(unpadded)["resnet18.py"]
    )
    ceil = net.model_copy(
        update={"stem": (conv, pool.model_copy(update={"ceil_mode": True}))}
    )
    with pytest.raises(SpecError, match="ceil_mode pooling is not supported"):
        BACKEND.emit(ceil)


class Identity(ir.Block):
    """A block kind unknown to archspec_keras, to check a kind brings its template."""

    kind: str = "identity"

    def layers(self) -> list[ir.Layer]:
        return []


IDENTITY_TEMPLATE = (
    "{% macro definitions() %}\n"
    "def identity(x, name: str):\n"
    "    return keras.layers.Identity(name=name)(x)\n"
    "{% endmacro %}\n"
    "{% macro build(block) %}\n"
    '{{ call("x = identity", "x", indent=4, name=block.name | keras_name) -}}\n'
    "{% endmacro %}\n"
)


def test_new_block_kind_brings_its_own_template(b0_spec, tmp_path, monkeypatch):
    net = network(b0_spec, 0)
    first = net.stages[0].blocks[0]
    extra = Identity(
        name="stages.0.1",
        in_channels=16,
        out_channels=16,
        stride=1,
        in_size=first.out_size,
        out_size=first.out_size,
    )
    stage = net.stages[0].model_copy(update={"blocks": (first, extra)})
    net = net.model_copy(update={"stages": (stage, *net.stages[1:])})
    with pytest.raises(
        SpecError, match=r"'identity' has no template here and its graph"
    ):
        BACKEND.emit(net)
    (tmp_path / "blocks").mkdir()
    (tmp_path / "blocks" / "identity.py.j2").write_text(IDENTITY_TEMPLATE)
    backend = archspec_keras.KerasBackend([tmp_path, archspec_keras.TEMPLATES])
    text = backend.emit(net)["efficientnet_b0.py"]
    # A registered kind brings its folder itself (BlockKind.templates).
    kind = blocks.BlockKind(
        "identity", blocks.StageRow, Identity, lambda row, at: None, {"keras": tmp_path}
    )
    monkeypatch.setitem(registry._kinds, "identity", kind)
    assert BACKEND.emit(net)["efficientnet_b0.py"] == text
    assert "\n\n\ndef identity(x, name: str):\n" in text
    assert '\n    x = identity(x, name="stages_0_1")\n' in text
    model = load_module(emit_text(text, tmp_path)).efficientnet_b0(
        input_shape=(32, 32, 3)
    )
    assert model.get_layer("stages_0_1").__class__.__name__ == "Identity"


def emit_text(text: str, folder: Path) -> Path:
    path = folder / "with_identity.py"
    path.write_text(text)
    return path


def test_layer_names_follow_keras_applications(b0_spec):
    names = layer_names(network(b0_spec, 7), "efficientnet")
    assert names["stem_conv"] == "stem_conv"
    assert names["stages_0_0_depthwise_conv"] == "block1a_dwconv"
    assert names["stages_1_0_expand_bn"] == "block2a_expand_bn"
    assert names["stages_3_9_se_reduce"] == "block4j_se_reduce"
    assert names["stages_5_12_project_conv"] == "block6m_project_conv"
    assert names["head_bn"] == "top_bn"
    assert names["classifier"] == "predictions"
    assert len(names) == len(network(b0_spec, 7).weights())


# The generated models ---------------------------------------------------------


# B0 and B3 at their resolutions (224, 300) meet stride-2 layers at even and
# odd sizes, where TensorFlow's "same" padding differs; B7 is the deepest and
# widest, run at 192 px (even at every stride-2 layer, as B0 at 224: 96, 48,
# 24, 12, 6), which keeps every one of its layers and its parameter count; the
# size only scales the maps (23 s, against 62 s at 300 px with predict(); at
# its own 600 px a minute more again). B1, B2 and B4-B6 repeat those layers: test_scaling holds
# their parameter counts to REFERENCE.md's, and test_parity checks B0-B3 at both.
SIZES = {0: 224, 3: 300, 7: 192}


@pytest.mark.parametrize("phi", SIZES)
def test_matches_keras_applications(phi, generated):
    """Same trainable parameter count as keras.applications.EfficientNetB{phi},
    and the same logits with random weights copied layer by layer, at an even
    resolution, where TensorFlow's asymmetric padding matters. On TensorFlow
    the two run the same operations, so the logits agree exactly (seen: 0.0);
    the tolerance leaves room for other CPUs' kernels."""
    net, path = generated[phi]
    module = load_module(path)
    size = SIZES[phi]
    x = images(np.random.default_rng(100 + phi), 2, size)
    app, ours = reference_pair(
        phi, module, net, seed=phi, x=x, input_shape=(size, size, 3)
    )
    assert trainable(ours) == trainable(app) == PARAMS[phi]
    # Called eagerly, as the calibration pass above is: predict() would trace
    # a graph of each model first (9 s each for B7), for one call. Eagerly, a
    # functional model holds all its maps until it returns: 2 images at these
    # sizes take well under 1 GB (B7 at 600 px: 8 GB per model).
    a = numpy(ours(x, training=False))
    b = numpy(app(x, training=False))
    error = relative_error(a, b)
    print(f"B{phi} @{size}: trainable {trainable(ours):,}, relative error {error:.2e}")
    assert b.shape == (2, 1000)
    # The logits depend on the input, far beyond the tolerance.
    assert relative_error(b[0], b[1]) > 1e-2
    assert error <= TOLERANCE


def test_padding_constant_switches_to_symmetric(generated):
    """PADDING = "symmetric" equals keras.applications at odd sizes (both rules
    pad k//2 on each side there) and differs at even sizes. In float32: this is
    also the float32 parity check of the default ("same") B0 at 224."""
    net, path = generated[0]
    module = load_module(path)
    x225 = images(np.random.default_rng(11), 2, 225)
    x224 = x225[:, :224, :224]
    app225, same = reference_pair(0, module, net, 10, x225, input_shape=(225, 225, 3))
    module.PADDING = "symmetric"
    symmetric = module.efficientnet_b0(input_shape=(None, None, 3))
    symmetric.set_weights(same.get_weights())
    assert "stem_pad" in [layer.name for layer in symmetric.layers]
    app224 = APPLICATIONS[0](weights=None, classifier_activation=None)
    app224.set_weights(app225.get_weights())
    set_normalization(app224)
    odd = relative_error(numpy(symmetric(x225)), numpy(app225(x225)))
    even_same = relative_error(numpy(same(x224)), numpy(app224(x224)))
    even_symmetric = relative_error(numpy(symmetric(x224)), numpy(app224(x224)))
    print(
        f"symmetric @225 {odd:.2e}, same @224 {even_same:.2e}, symmetric @224 {even_symmetric:.2e}"
    )
    assert odd <= TOLERANCE and even_same <= TOLERANCE
    assert even_symmetric > 1e-3


def test_fit_one_step_then_keras_round_trip(generated, tmp_path):
    module = load_module(generated[0][1])
    keras.utils.set_random_seed(0)
    model = module.efficientnet_b0(input_shape=(64, 64, 3))
    model.compile(
        optimizer="adam",
        run_eagerly=True,  # one step: tracing a graph would cost more than it saves
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = [numpy(w).copy() for w in model.weights]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    y = rng.integers(0, 1000, (4,))
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    loss = history.history["loss"][0]
    assert np.isfinite(loss) and 1.0 < loss < 100.0
    changed = {
        w.path
        for w, old in zip(model.weights, before, strict=True)
        if not np.array_equal(numpy(w), old)
    }
    assert {
        w.path for w in model.trainable_weights
    } <= changed  # every trainable weight moved
    assert "stem_bn/moving_mean" in changed  # and the BN statistics

    path = tmp_path / "efficientnet_b0.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # built-in layers only: no custom objects
    assert [layer.name for layer in loaded.layers] == [
        layer.name for layer in model.layers
    ]
    a, b = numpy(model(x, training=False)), numpy(loaded(x, training=False))
    assert np.array_equal(a, b)


WORKER = """
import importlib.util, sys
import numpy as np
import keras
if keras.backend.backend() == "jax":
    # Eagerly, every layer's op (and every initializer) compiles on its own:
    # unoptimized XLA compiles in half the time.
    import jax
    jax.config.update("jax_disable_most_optimizations", True)
folder = sys.argv[1]
spec = importlib.util.spec_from_file_location("generated_b0", sys.argv[2])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
model = module.efficientnet_b0(input_shape=(None, None, 3))
model.load_weights(folder + "/b0.weights.h5")
x = np.load(folder + "/x.npy")
np.save(folder + "/" + keras.backend.backend() + ".npy", keras.ops.convert_to_numpy(model(x, training=False)))
"""


@pytest.fixture(scope="module")
def tensorflow_logits(generated, tmp_path_factory):
    """B0 with keras.applications' random weights, saved as .weights.h5, and its
    TensorFlow logits for a batch of two at 224.

    The BN statistics are drawn at random here, not calibrated: the backends'
    float32 kernels round differently (already 6e-8 after Rescaling), and the
    calibrated networks amplify that about a hundredfold, to the tolerance.
    """
    folder = tmp_path_factory.mktemp("backends")
    net, path = generated[0]
    x = images(np.random.default_rng(21), 2, 224)
    _, ours = reference_pair(0, load_module(path), net, seed=20, x=None)
    ours.save_weights(folder / "b0.weights.h5")
    np.save(folder / "x.npy", x)
    logits = numpy(ours(x, training=False))
    assert relative_error(logits[0], logits[1]) > 1e-3  # the input matters
    return folder, path, logits


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_same_logits_on_other_backends(backend, tensorflow_logits):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(
            f"{backend} is not installed, so Keras's {backend} backend cannot run"
        )
    folder, path, expected = tensorflow_logits
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(folder), str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "KERAS_BACKEND": backend},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    logits = np.load(folder / f"{backend}.npy")
    error = relative_error(logits, expected)
    print(f"{backend} vs tensorflow: relative error {error:.2e}")
    assert error <= TOLERANCE


def test_every_layer_kind_in_stem_and_head(tmp_path):
    """Layer kinds no shipped spec puts in its stem or head: a convolution
    without batch norm, norm + activation, average pooling, squeeze-excitation,
    a hidden dense layer with its own dropout, a classifier without bias. The
    module is ruff-clean, builds, and takes weights by name."""
    net = network(load_spec(ROOT / "specs" / "resnet.yaml"), variant="resnet18")
    conv, pool = net.stem
    stem = (
        conv.model_copy(update={"norm": None, "activation": None}),
        ir.NormAct(name="stem_norm", channels=64, norm=conv.norm, activation="relu"),
        pool,
        pool.model_copy(update={"name": "stem_avg", "op": "avg", "stride": 1}),
    )
    head = (
        ir.SqueezeExcite(
            name="head_se", channels=512, squeeze_channels=32, activation="relu"
        ),
        ir.GlobalPool(name="pool", op="max", channels=512),
        ir.Dense(name="hidden", in_features=512, out_features=256, activation="relu"),
        ir.Dropout(name="hidden_dropout", rate=0.1),
        ir.Dropout(name="dropout", rate=0.0),
        ir.Dense(name="classifier", in_features=256, out_features=1000, bias=False),
    )
    net = net.model_copy(update={"stem": stem, "head": head})
    path = emit(net, tmp_path)
    text = path.read_text()
    for line in (
        'name="stem",\n        activation=False,\n        norm=False,\n',
        'x = norm_act(x, name="stem_norm")',
        'x = pool(x, "avg", pool_size=3, strides=1, padding=1, name="stem_avg")',
        'x = squeeze_excitation(x, squeeze_filters=32, name="head_se")',
        'x = keras.layers.GlobalMaxPooling2D(name="pool")(x)',
        'x = keras.layers.Dropout(0.1, name="hidden_dropout")(x)',
        "use_bias=False,",
    ):
        assert line in text, line
    config = str(ROOT / "pyproject.toml")
    for args in (["check"], ["format", "--check"]):
        proc = subprocess.run(
            [sys.executable, "-m", "ruff", *args, "--config", config, str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    model = load_module(path).resnet18(input_shape=(64, 64, 3))
    rng = np.random.default_rng(0)
    state = {}
    for w in net.weights():  # He-scaled kernels; batch norms and biases neutral
        if isinstance(w, ir.BatchNormWeights):
            c = (w.channels,)
            state |= {
                f"{w.path}.weight": np.ones(c, "float32"),
                f"{w.path}.bias": np.zeros(c, "float32"),
                f"{w.path}.running_mean": np.zeros(c, "float32"),
                f"{w.path}.running_var": np.ones(c, "float32"),
            }
            continue
        if isinstance(w, ir.Conv2dWeights):
            shape, fan_in, out = w.shape, np.prod(w.shape[1:]), w.out_channels
        else:
            shape, fan_in, out = (
                (w.out_features, w.in_features),
                w.in_features,
                w.out_features,
            )
        kernel = rng.normal(0, np.sqrt(2 / fan_in), shape).astype("float32")
        state[f"{w.path}.weight"] = kernel
        if w.bias:
            state[f"{w.path}.bias"] = np.zeros(out, "float32")
    layers = torch_to_keras(net, state)
    assert set(layers) == {layer.name for layer in model.layers if layer.weights}
    for name, arrays in layers.items():
        model.get_layer(name).set_weights(arrays)
    y = numpy(model(rng.standard_normal((1, 64, 64, 3)).astype("float32")))
    assert y.shape == (1, 1000) and np.isfinite(y).all()
