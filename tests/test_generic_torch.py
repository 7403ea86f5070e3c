"""The PyTorch generic emitter (backends/archspec_torch/generic.py) beyond what
tests/test_generic.py holds it to (the template's outputs for every spec):

- one class per block structure, and every block built from its structure's
  class, for the smallest variant of every shipped spec;
- a block using every op of the block language computes what the same graph
  written by hand in torch computes, on inputs that can be negative (so a
  max pool's zero fill shows), with a squeeze-excitation whose input is read
  again (so gating it in place would show), and the model folds its batch
  norms for inference;
- a strided convolution without batch norm pads as the module's rule says
  (TensorFlow's "same" here: PaddedConv2d), on the CPU and the CUDA path;
- node names a PyTorch module cannot hold are refused clearly, and Python's
  names are never shadowed;
- the stem and head checks both backends share (archspec.render.head) give
  one message.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from helpers import FAMILIES, IDS, smallest, variant  # noqa: E402

from archspec import analysis, backends, pipeline, structure  # noqa: E402
from archspec.errors import SpecError  # noqa: E402
from archspec.parity import randomize  # noqa: E402

EMIT = backends.get("torch").emit

# A block that uses every op; zmax pads zeros, avg does not count its padding,
# padded pads unevenly (2 rows above, none below), and relu is read by both se
# and alias.
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
      avg: {op: avg_pool, in: x, kernel: 3, stride: stride, pad: 1, count_pad: false}
      pooled: {op: concat, in: [zmax, pmax, avg]}
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


def load(source: str, folder, stem: str):
    path = folder / f"{stem}.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(
        f"_gt_{stem}_{time.monotonic_ns()}", path
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def network(text: str, folder):
    path = folder / "net.yaml"
    path.write_text(text, encoding="utf-8")
    return pipeline.network(pipeline.load_spec(path))


def only(files: dict[str, str]) -> str:
    ((_, source),) = files.items()
    return source


@pytest.mark.parametrize("spec", FAMILIES, ids=IDS)
def test_one_class_per_structure(spec):
    net = variant(spec, smallest(spec))
    generic = only(EMIT(net, generic=True))
    found = structure.structures(net.blocks, {b.kind for b in net.blocks})
    class_of = {
        b.name: s.name for group in found.values() for s in group for b in s.blocks
    }
    defined = re.findall(r"^class (\w+)\(nn\.Module\)", generic, re.M)
    names = [s.name for group in found.values() for s in group]
    assert len(set(names)) == len(names)
    assert set(names) <= set(defined)
    assert len(defined) == len(set(defined))
    # Blocks with one structure share one class: the stages build each block
    # with its structure's class, in order.
    stages = generic[generic.index("self.stages = nn.Sequential(") :]
    stages = stages[: stages.index("\n        )\n")]
    built = re.findall(r"^ {16}(\w+)\(", stages, re.M)
    assert built == [class_of[b.name] for b in net.blocks]


def reference_block(block, x: torch.Tensor, stride: int) -> torch.Tensor:
    """The mix block's graph written by hand, with the module's weights."""

    def bn(m, t):
        return F.batch_norm(
            t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps
        )

    def conv_bn(m, t, stride):
        conv = m.conv
        t = F.conv2d(t, conv.weight, None, stride, conv.kernel_size[0] // 2)
        return bn(m.bn, t)

    pre = F.relu(bn(block.pre.bn, x))
    branch = F.relu(conv_bn(block.branch, pre, stride))
    gated = branch * F.conv2d(branch, block.gate.weight, block.gate.bias)
    shifted = torch.zeros_like(x)
    shifted[:, :, :-1, :-1] = x[:, :, 1:, 1:]
    zmax = F.max_pool2d(F.pad(shifted, (1, 1, 1, 1)), 3, stride)  # zeros, not -inf
    n, c, h, w = x.shape
    padded = x.new_zeros(n, c, h + 2, w + 2)
    padded[:, :, 2:, 1:-1] = x  # 2 rows above, none below, 1 column each side
    pmax = F.max_pool2d(padded, 3, stride)
    avg = F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)
    proj = conv_bn(block.proj, torch.cat((zmax, pmax, avg), 1), 1)
    relu = F.relu(gated + proj)
    se = block.se
    squeezed = F.relu(
        F.conv2d(relu.mean((2, 3), keepdim=True), se.reduce.weight, se.reduce.bias)
    )
    gate = torch.sigmoid(F.conv2d(squeezed, se.expand.weight, se.expand.bias))
    return torch.cat((relu * gate, relu), 1)  # drop path: the identity in eval


def test_every_op_block_equals_the_graph_by_hand(tmp_path):
    net = network(MIX, tmp_path)
    assert [b.check() for b in net.blocks] == [[], [], []]
    source = only(EMIT(net))
    assert source == only(EMIT(net))
    assert source.count("class Mix(nn.Module)") == 1
    # relu is read again after the gate: that squeeze-excitation copies.
    assert "self.se = SqueezeExcitation(16, 4, inplace=False)" in source
    model = getattr(load(source, tmp_path, "mix"), net.class_name)()
    assert sum(p.numel() for p in model.parameters()) == analysis.params(net)
    randomize(model, 33, seed=0)
    blocks = [block for stage in model.stages for block in stage]
    torch.manual_seed(0)
    with torch.no_grad():
        for block, ir_block, size in zip(blocks, net.blocks, (17, 9, 9), strict=True):
            # Negative values too: zero fill and -inf fill differ on them.
            x = torch.randn(2, ir_block.in_channels, size, size)
            # In float64, so only the generated block's float32 rounding shows.
            truth = copy.deepcopy(block).double()
            expected = reference_block(truth, x.double(), ir_block.stride)
            scale = float(expected.abs().max())
            found = block(x).double()
            torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-6 * scale)
        x = torch.randn(2, 3, 33, 33)
        logits = model(x)
        assert logits.shape == (2, 10)
        # Batch norm folded once, for serving: the same outputs.
        folded = model.prepare_for_inference()(x)
        torch.testing.assert_close(folded, logits, rtol=1e-5, atol=1e-5)
    # Training: drop path draws, the graph still runs and back-propagates.
    model.train()
    model(x).sum().backward()
    assert blocks[-1].drop_path > 0


def test_node_names_python_cannot_hold(tmp_path):
    # A node without a module may take a keyword or a builtin's name: its
    # value gets another.
    text = MIX.replace("sum:", "total:").replace("pooled:", "sum:")
    net = network(text.replace("padded:", "lambda:"), tmp_path)
    source = only(EMIT(net, generic=True))
    assert "lambda_out = F.pad(x, (1, 1, 2, 0))" in source
    assert "pmax = self.pmax(lambda_out)" in source
    assert "sum_out = torch.cat((zmax, pmax, avg), 1)" in source
    getattr(load(source, tmp_path, "renamed"), net.class_name)()
    # A node holding a layer is an attribute of the module: not `train`.
    net = network(MIX.replace("proj", "train"), tmp_path)
    with pytest.raises(SpecError, match=r"the node 'train' .* nn\.Module's"):
        EMIT(net)


def test_module_attributes_are_nn_modules():
    from archspec_torch.generic import MODULE_ATTRIBUTES

    public = {
        name
        for name in dir(torch.nn.Module())
        if re.fullmatch(r"[a-z][a-z0-9_]*", name)
    }
    assert public <= MODULE_ATTRIBUTES


def test_both_backends_check_the_head_alike(tmp_path):
    net = network(MIX, tmp_path)
    pytest.importorskip("keras")
    broken = {
        "no global pool": net.model_copy(
            update={"head": tuple(n for n in net.head if n.kind != "global_pool")}
        ),
        "a conv after the pool": net.model_copy(
            update={"head": (*net.head[:1], net.stem[0], *net.head[1:])}
        ),
    }
    for case in broken.values():
        messages = []
        for backend in ("torch", "keras"):
            with pytest.raises(SpecError) as raised:
                backends.get(backend).emit(case)
            messages.append(str(raised.value).replace(f"{backend} backend: ", ""))
        assert messages[0] == messages[1], messages


# A convolution without norm that strides (padding: the network's, or its
# own), and one with norm padding its own way ("same_even", Keras's MobileNet).
DOWN = """\
name: net
class_name: Net
input: {channels: 3, resolution: 32}
stem: {channels: 8, kernel: 3, stride: 2}
blocks:
  down:
    out: channels * 2
    graph:
      conv: {op: conv, kernel: 3, stride: stride, channels: channels, norm: false, act: false, bias: true}
      relu: {op: act}
      even: {op: conv, in: x, kernel: 3, stride: stride, channels: channels, act: false, padding: same_even}
      cat: {op: concat, in: [relu, even]}
stages:
  columns: [block, channels, layers, stride]
  rows:
    - [down, 16, 2, 2]
head: {classes: 10}
defaults: {activation: relu, padding: same, norm: {eps: 1.0e-3, momentum: 0.01}}
regularization: {dropout: 0.0, drop_path: 0.0}
scaling: {rule: table, variants: {net1: {layers: [2]}}}
"""


class _OnCuda(torch.Tensor):
    """A CPU tensor that says it is on a GPU, to run the CUDA branch."""

    @property
    def is_cuda(self) -> bool:
        return True


def same_padding(size: int, kernel: int = 3) -> tuple[int, int, int, int]:
    """TensorFlow's stride-2 "same": the extra row and column after."""
    total = max((-(-size // 2) - 1) * 2 + kernel - size, 0)
    return (total // 2, total - total // 2) * 2


@pytest.mark.parametrize(
    ("network_rule", "conv_rule"), [("same", None), ("symmetric", "same")]
)
def test_block_convolutions_pad_by_their_rule(network_rule, conv_rule, tmp_path):
    text = DOWN.replace("padding: same,", f"padding: {network_rule},")
    if conv_rule:
        text = text.replace("bias: true}", f"bias: true, padding: {conv_rule}}}")
    net = network(text, tmp_path)
    source = only(EMIT(net))
    # One class for both blocks (the stride is an argument); each convolution
    # pads as its rule says where it strides.
    assert source.count("class Down(nn.Module)") == 1
    own = f', padding="{conv_rule}"' if conv_rule else ""
    calls = re.sub(r"\(\s+", "(", re.sub(r"\s+\)", ")", source))
    assert (
        f"self.conv = PaddedConv2d(in_channels, 16, 3, stride=stride, bias=True{own})"
        in calls
    )
    assert (
        "self.even = ConvBNAct("
        'in_channels, 16, 3, stride, activation=False, padding="same_even")' in calls
    )
    model = getattr(load(source, tmp_path, "down"), net.class_name)()
    assert sum(p.numel() for p in model.parameters()) == analysis.params(net)
    randomize(model, 32, seed=0)
    torch.manual_seed(0)
    with torch.no_grad():
        for block, size in zip(model.stages[0], (16, 17), strict=True):
            stride = block.conv.stride[0]
            x = torch.randn(2, block.conv.in_channels, size, size)
            conv, even = block.conv, block.even
            padded = F.pad(x, same_padding(size)) if stride == 2 else F.pad(x, (1,) * 4)
            expected = torch.cat(
                (
                    F.relu(F.conv2d(padded, conv.weight, conv.bias, stride)),
                    F.batch_norm(
                        F.conv2d(
                            F.pad(x, (0, 1, 0, 1) if stride == 2 else (1,) * 4),
                            even.conv.weight,
                            None,
                            stride,
                        ),
                        even.bn.running_mean,
                        even.bn.running_var,
                        even.bn.weight,
                        even.bn.bias,
                        False,
                        0.0,
                        even.bn.eps,
                    ),
                ),
                1,
            )
            torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
            # On a GPU strided convolutions pad x instead of the kernel.
            on_cuda = block(x.as_subclass(_OnCuda))
            assert type(on_cuda) is _OnCuda  # the CUDA branch ran
            torch.testing.assert_close(
                on_cuda.as_subclass(torch.Tensor), expected, rtol=1e-5, atol=1e-5
            )
        model(torch.randn(2, 3, 32, 32))


def test_test_networks_are_ruff_clean(tmp_path):
    for name, text in (("mix", MIX), ("down", DOWN)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / f"{name}.py").write_text(only(EMIT(network(text, folder))))
    for command in (["check", "-q"], ["format", "--check", "-q"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "--isolated", str(tmp_path)],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr


# Two sums: the first (of `a`, a convolution without activation, read once)
# is taken in place; `r` ends in a ReLU, whose gradient needs its output, so
# the second is a new tensor; the block's input (a leaf here) is never written.
SUMS = """\
name: net
class_name: Net
input: {channels: 3, resolution: 16}
stem: {channels: 8, kernel: 3, stride: 1}
blocks:
  sums:
    out: channels
    graph:
      a: {op: conv, kernel: 3, channels: channels, act: false}
      s1: {op: add, in: [a, x]}
      r: {op: conv, kernel: 1, channels: channels}
      s2: {op: add, in: [r, x]}
stages:
  columns: [block, channels, layers, stride]
  rows:
    - [sums, 8, 1, 1]
head: {classes: 10}
defaults: {activation: relu, padding: symmetric, norm: {eps: 1.0e-5, momentum: 0.1}}
regularization: {dropout: 0.0, drop_path: 0.0}
scaling: {rule: table, variants: {net1: {layers: [1]}}}
"""


def test_sums_in_place_only_where_autograd_allows(tmp_path):
    net = network(SUMS, tmp_path)
    source = only(EMIT(net))
    assert source.count(" += ") == 1
    model = getattr(load(source, tmp_path, "sums"), net.class_name)()
    randomize(model, 16, seed=0)
    model.train()
    block = model.stages[0][0]
    reference = copy.deepcopy(block)

    def conv_bn(m, t):
        t = F.conv2d(t, m.conv.weight, None, 1, m.conv.kernel_size[0] // 2)
        bn = m.bn
        return F.batch_norm(t, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)

    torch.manual_seed(0)
    x = torch.randn(2, 8, 16, 16, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    found = block(x)
    s1 = conv_bn(reference.a, x_ref) + x_ref
    expected = F.relu(conv_bn(reference.r, s1)) + x_ref
    torch.testing.assert_close(found, expected)
    weights = torch.randn_like(found)
    (found * weights).sum().backward()  # raises if a sum overwrote a saved value
    (expected * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    for (name, p), q in zip(
        block.named_parameters(), reference.parameters(), strict=True
    ):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
