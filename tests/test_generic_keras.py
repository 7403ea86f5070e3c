"""The Keras generic emitter (backends/archspec_keras/generic.py and
templates/generic.py.j2) beyond what tests/test_generic.py holds it to (the
template's outputs with the template's weights, parameter counts and ruff,
for the smallest variant of every shipped spec):

- one helper per block structure, each block built by its structure's
  helper, names unique and deterministic, for every shipped spec;
- a block using every op of the block language (add, concat, multiply, pad,
  shift, max pooling filled with zeros and with -inf, average pooling that
  does not count its padding, a biased convolution without norm,
  squeeze-excitation, identity, drop path) computes what the same graph
  written in numpy computes, on inputs that can be negative (where -inf and
  zero fill differ), with its layers named by the nodes' weight paths;
- a convolution of a block with a padding rule of its own pads by it, a
  norm_act with an activation of its own applies it, node names Python
  cannot hold are renamed, names that would clash are refused or renamed.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time

import archspec_keras as keras_backend
import numpy as np
import pytest
from helpers import FAMILIES, IDS, smallest, variant

from archspec import analysis, pipeline, structure
from archspec.errors import SpecError

EMIT = keras_backend.KerasBackend().emit

# A block that uses every op. zmax pads zeros, nmax -inf (the default), avg
# leaves its padding out of the mean, padded pads unevenly (2 rows above,
# none below); relu is read by both se and alias.
MIX = """\
name: net
class_name: Net
input: {channels: 3, resolution: 33}
stem: {channels: 8, kernel: 3, stride: 2}
blocks:
  mix:
    out: channels * 2
    graph:
      pre: {op: norm_act}
      branch: {op: conv, kernel: 3, stride: stride, channels: channels}
      gate: {op: conv, kernel: 1, channels: channels, norm: false, act: false, bias: true}
      gated: {op: multiply, in: [branch, gate]}
      shifted: {op: shift, in: x}
      zmax: {op: max_pool, kernel: 3, stride: stride, pad: 1, fill: zero}
      padded: {op: pad, in: x, pad: [2, 0, 1, 1]}
      pmax: {op: max_pool, kernel: 3, stride: stride}
      nmax: {op: max_pool, in: x, kernel: 3, stride: stride, pad: 1}
      avg: {op: avg_pool, in: x, kernel: 3, stride: stride, pad: 1, count_pad: false}
      pooled: {op: concat, in: [zmax, pmax, nmax, avg]}
      proj: {op: conv, kernel: 1, channels: channels, act: false}
      sum: {op: add, in: [gated, proj]}
      relu: {op: act}
      se: {op: se, squeeze: 4}
      drop: {op: drop_path}
      alias: {op: identity, in: relu}
      cat: {op: concat, in: [drop, alias]}
stages:
  columns: [block, channels, layers, stride]
  rows:
    - [mix, 16, 1, 2]
    - [mix, 16, 2, 1]
head: {classes: 10}
defaults: {activation: relu, padding: symmetric, norm: {eps: 1.0e-5, momentum: 0.1}}
regularization: {dropout: 0.0, drop_path: 0.1}
scaling: {rule: table, variants: {net1: {layers: [1, 2]}}}
"""


def network(text: str, folder):
    path = folder / "net.yaml"
    path.write_text(text, encoding="utf-8")
    return pipeline.network(pipeline.load_spec(path))


def only(files: dict[str, str]) -> str:
    ((_, source),) = files.items()
    return source


def load(source: str, folder, stem: str):
    path = folder / f"{stem}.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(
        f"_gk_{stem}_{time.monotonic_ns()}", path
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def helpers(source: str, net) -> list[str]:
    """The block helpers a module defines, in order."""
    module = {*keras_backend.MODULE_NAMES, net.module}
    return [
        name for name in re.findall(r"^def (\w+)\(", source, re.M) if name not in module
    ]


@pytest.mark.parametrize("spec", FAMILIES, ids=IDS)
def test_one_helper_per_structure(spec):
    net = variant(spec, smallest(spec))
    generic = only(EMIT(net, generic=True))
    # Deterministic, whatever the instance.
    assert only(keras_backend.KerasBackend().emit(net, generic=True)) == generic
    found = structure.structures(net.blocks, {b.kind for b in net.blocks})
    defined = helpers(generic, net)
    assert len(defined) == len(set(defined))
    assert len(defined) == sum(len(group) for group in found.values())
    # Each block is built by its structure's helper: blocks of one structure
    # call one helper, blocks of two structures two.
    builder = generic[generic.index(f"def {net.module}(") :]
    # (The stem and head call the layer helpers.)
    called = [
        name
        # a cell: x, prev = cell(x, prev, ...), x
        for name in re.findall(
            r"^    x(?:, prev)? = \(?\n?\s*(\w+)\(\n?\s*x,", builder, re.M
        )
        if name not in keras_backend.MODULE_NAMES
    ]
    assert len(called) == len(net.blocks)
    helper_of = dict(zip((b.name for b in net.blocks), called, strict=True))
    kinds = {b.kind for b in net.blocks}  # the rest are ops the blocks call
    for kind in kinds:
        for s in found[kind]:
            assert len({helper_of[b.name] for b in s.blocks}) == 1
    assert len(set(called)) == sum(len(found[kind]) for kind in kinds)
    assert set(called) <= set(defined)
    # The template path (no flag) is untouched by the generic one where a
    # kind has a template: tests/test_generated.py holds generated/ to it.


# numpy, channels last: the mix block's graph by hand ----------------------


def windows(x, kernel: int, stride: int):
    """(n, h, w, c, kernel * kernel): each output's window, of a padded x."""
    size = (x.shape[1] - kernel) // stride + 1
    views = [
        x[
            :,
            a : a + stride * (size - 1) + 1 : stride,
            b : b + stride * (size - 1) + 1 : stride,
        ]
        for a in range(kernel)
        for b in range(kernel)
    ]
    return np.stack(views, -1)


def pad(x, top: int, bottom: int, left: int, right: int, value: float = 0.0):
    return np.pad(
        x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value
    )


def conv(x, kernel, bias, stride: int):
    """A convolution with Keras's (kh, kw, in, out) kernel, on padded x."""
    k = kernel.shape[0]
    size = (x.shape[1] - k) // stride + 1
    out = np.zeros((x.shape[0], size, size, kernel.shape[-1]))
    for a in range(k):
        for b in range(k):
            patch = x[:, a : a + stride * (size - 1) + 1 : stride]
            patch = patch[:, :, b : b + stride * (size - 1) + 1 : stride]
            out += patch @ kernel[a, b]
    return out if bias is None else out + bias


def bn(x, gamma, beta, mean, variance, eps=1e-5):
    return (x - mean) / np.sqrt(variance + eps) * gamma + beta


def relu(x):
    return np.maximum(x, 0.0)


def mix_block(weights, x, stride: int):
    """The graph of MIX's block, from the Keras layers' weights by node."""
    pre = relu(bn(x, *weights("pre_bn")))
    branch = relu(
        bn(
            conv(pad(pre, 1, 1, 1, 1), *weights("branch_conv"), stride),
            *weights("branch_bn"),
        )
    )
    gated = branch * conv(branch, *weights("gate"), 1)
    shifted = np.zeros_like(x)
    shifted[:, :-1, :-1] = x[:, 1:, 1:]
    zmax = windows(pad(shifted, 1, 1, 1, 1), 3, stride).max(-1)
    pmax = windows(pad(x, 2, 0, 1, 1), 3, stride).max(-1)
    nmax = windows(pad(x, 1, 1, 1, 1, -np.inf), 3, stride).max(-1)
    inside = windows(pad(np.ones_like(x), 1, 1, 1, 1), 3, stride).sum(-1)
    avg = windows(pad(x, 1, 1, 1, 1), 3, stride).sum(-1) / inside
    pooled = np.concatenate([zmax, pmax, nmax, avg], -1)
    proj = bn(conv(pooled, *weights("proj_conv"), 1), *weights("proj_bn"))
    out = relu(gated + proj)
    squeezed = out.mean((1, 2), keepdims=True)
    squeezed = relu(conv(squeezed, *weights("se_reduce"), 1))
    gate = 1 / (1 + np.exp(-conv(squeezed, *weights("se_expand"), 1)))
    return np.concatenate([out * gate, out], -1)  # drop path: identity at inference


def randomize(model, rng) -> None:
    """Random weights, and batch-norm statistics that are not the identity."""
    for layer in model.layers:
        drawn = [w + rng.normal(0, 0.2, w.shape) for w in layer.get_weights()]
        if drawn and type(layer).__name__ == "BatchNormalization":
            drawn[-1] = rng.uniform(0.5, 2.0, drawn[-1].shape)
        layer.set_weights([w.astype("float32") for w in drawn])


def test_every_op_block_equals_the_graph_in_numpy(tmp_path):
    keras = pytest.importorskip("keras")
    net = network(MIX, tmp_path)
    assert [b.check() for b in net.blocks] == [[], [], []]
    source = only(EMIT(net))
    assert source == only(EMIT(net))
    # One helper for the three blocks: the stride varies (and the input
    # width, which Keras reads from the input).
    assert helpers(source, net) == ["mix"]
    assert "def mix(x, strides: int, drop_rate: float, name: str):" in source
    # The biased convolution without norm says so; the others keep CONV_BIAS.
    assert 'name=f"{name}_gate", activation=False, norm=False, bias=True' in source
    # -inf and uncounted padding: the stride-1 "same" pool, subsampled.
    assert (
        'pool(x, "max", 3, strides, 1, name=f"{name}_nmax", exclude_padding=True)'
        in source
    )
    assert 'zmax = pool(shifted, "max", 3, strides, 1, name=f"{name}_zmax")\n' in source
    module = load(source, tmp_path, "mix")
    model = module.net1(input_shape=(33, 33, 3))
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == analysis.params(net)
    rng = np.random.default_rng(0)
    randomize(model, rng)
    # Every weight has its IR path, "." -> "_".
    paths = {w.path.replace(".", "_") for w in net.weights()}
    named = {layer.name for layer in model.layers if layer.weights}
    assert named == paths
    for block in net.blocks:
        name = block.name.replace(".", "_")

        def weights(layer, name=name):
            found = model.get_layer(f"{name}_{layer}").get_weights()
            found = [np.asarray(w, "float64") for w in found]
            return found if len(found) != 1 else [found[0], None]

        inputs = keras.Input((block.in_size, block.in_size, block.in_channels))
        output = module.mix(
            inputs,
            strides=block.stride,
            drop_rate=0.0,
            name=f"{name}_alone",
        )
        alone = keras.Model(inputs, output)
        for layer in alone.layers:
            if layer.weights:
                own = layer.name.replace("_alone", "")
                layer.set_weights(model.get_layer(own).get_weights())
        # Negative values too: zero fill and -inf fill differ on them.
        x = rng.normal(0, 1, (2, block.in_size, block.in_size, block.in_channels))
        expected = mix_block(weights, x, block.stride)
        found = np.asarray(alone(x.astype("float32"), training=False), "float64")
        scale = np.abs(expected).max()
        np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-6 * scale)
        # The -inf pool and the zero pool really differ here.
        assert (windows(pad(x, 1, 1, 1, 1), 3, block.stride).max(-1) < 0).any()
    logits = np.asarray(model(rng.uniform(0, 1, (2, 33, 33, 3)), training=False))
    assert logits.shape == (2, 10) and np.isfinite(logits).all()
    keras.backend.clear_session()


# What differs from node to node -------------------------------------------

DOWN = """\
name: net
class_name: Net
input: {channels: 3, resolution: 32}
stem: {channels: 8, kernel: 3, stride: 2}
blocks:
  down:
    graph:
      pre: {op: norm_act, act: relu6}
      conv: {op: conv, kernel: 3, stride: stride, channels: channels, padding: same}
      pool: {op: max_pool, kernel: 3, stride: 1, pad: 1}
stages:
  columns: [block, channels, layers, stride]
  rows:
    - [down, 16, 2, 2]
head: {classes: 10}
defaults: {activation: relu, padding: symmetric, norm: {eps: 1.0e-3, momentum: 0.01}}
regularization: {dropout: 0.0, drop_path: 0.0}
scaling: {rule: table, variants: {net1: {layers: [2]}}}
"""


def test_a_node_states_what_differs_from_the_module(tmp_path):
    keras = pytest.importorskip("keras")
    net = network(DOWN, tmp_path)
    source = only(EMIT(net))
    # norm_act applies ACTIVATION: relu6 is a layer of its own.
    assert 'x = norm_act(x, name=f"{name}_pre", activation=False)' in source
    assert 'x = keras.layers.Activation("relu6", name=f"{name}_pre_act")(x)' in source
    # The module pads "symmetric" (the stem); this convolution "same".
    assert 'PADDING = "symmetric"' in source
    assert 'strides, name=f"{name}_conv", padding="same")' in source
    module = load(source, tmp_path, "down")
    model = module.net1(input_shape=(32, 32, 3))
    rng = np.random.default_rng(1)
    randomize(model, rng)
    inputs = keras.Input((16, 16, 8))
    alone = keras.Model(inputs, module.down(inputs, strides=2, name="b"))
    for layer in alone.layers:
        if layer.weights:
            own = model.get_layer(layer.name.replace("b_", "stages_0_0_", 1))
            layer.set_weights(own.get_weights())
    x = rng.normal(0, 1, (2, 16, 16, 8))
    weights = [
        np.asarray(w, "float64")
        for layer in ("pre_bn", "conv_conv", "conv_bn")
        for w in model.get_layer(f"stages_0_0_{layer}").get_weights()
    ]
    pre = np.clip(bn(x, *weights[0:4], eps=1e-3), 0, 6)
    # TensorFlow's "same" at stride 2 on an even map: the extra row and
    # column after (symmetric would pad one on each side).
    out = conv(pad(pre, 0, 1, 0, 1), weights[4], None, 2)
    out = relu(bn(out, *weights[5:9], eps=1e-3))
    expected = windows(pad(out, 1, 1, 1, 1, -np.inf), 3, 1).max(-1)
    found = np.asarray(alone(x.astype("float32"), training=False), "float64")
    np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-5)
    keras.backend.clear_session()


def test_node_names_python_cannot_hold(tmp_path):
    # Off the main path, a node is its own variable: not a keyword or a
    # builtin, and never a helper of the module; its layer keeps its name.
    text = MIX.replace("sum:", "total:").replace("pooled:", "sum:")
    text = text.replace("padded:", "lambda:").replace("pmax:", "pool:")
    text = text.replace("[zmax, pmax,", "[zmax, pool,")
    source = only(EMIT(network(text, tmp_path)))
    assert (
        'lambda_out = keras.layers.ZeroPadding2D(((2, 0), (1, 1)), name=f"{name}_lambda")(x)'
        in source
    )
    assert (
        'pool_out = pool(lambda_out, "max", 3, strides, 0, name=f"{name}_pool")'
        in source
    )
    assert "sum_out = keras.layers.Concatenate(" in source
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "-q", "-"],
        input=source,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


def test_names_that_would_clash(tmp_path):
    # A kind named as a helper of the module gets a helper of its own name.
    text = DOWN.replace("  down:", "  pool:").replace("[down,", "[pool,")
    source = only(EMIT(network(text, tmp_path)))
    assert "def pool_block(x, strides: int, name: str):" in source
    assert "x = pool_block(x, strides=2, name=" in source
    assert source.count("def pool(") == 1
    # Two nodes whose Keras layers would share a name: refused, both named.
    text = DOWN.replace("pool: {op: max_pool", "conv_bn: {op: max_pool")
    with pytest.raises(SpecError, match="nodes 'conv' and 'conv_bn' would both make"):
        EMIT(network(text, tmp_path))


def test_structures_differing_in_a_word_are_named_by_it():
    spec = next(s for s in FAMILIES if s.stem == "mobilenet_v3_keras")
    net = variant(spec, "mobilenet_v3_large_100")
    defined = helpers(only(EMIT(net, generic=True)), net)
    assert "mbconv_expand_relu" in defined and "mbconv_expand_hardswish" in defined
    assert len(defined) == len(set(defined))
