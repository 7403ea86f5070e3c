"""The Flax NNX backend (backends/archspec_flax), written from primitives only:

- for every family (its smallest variant, at 34 px: odd and even maps at
  the strides, and at its native size), the Flax model has the IR's
  parameter count and computes the PyTorch model's logits and stage maps
  with the same weights;
- training mode (batch statistics) and input gradients equal PyTorch's on
  float64 copies, for the families whose code differs (SE and drop path,
  dense concatenation, cells, hard activations, pre-activation);
- a block written in the spec language with every op, through
  `archspec check --backends keras,flax`;
- a broken transfer is caught at the stage where it starts;
- the backend has no template per block kind; create_model, num_classes=0,
  feature_maps and batch-norm statistics behave as documented;
- weights move torch -> Flax -> torch unchanged, and bad ones are refused.
"""

from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")

import numpy as np  # noqa: E402
from helpers import FAMILIES, IDS, ROOT, SPECS, run_archspec, smallest, variant  # noqa: E402

import archspec  # noqa: E402
from archspec import analysis, backends, runtime  # noqa: E402
from archspec.errors import SpecError  # noqa: E402
from archspec.parity import configure  # noqa: E402
from archspec.parity.sides import Sides  # noqa: E402
from archspec.weights import flax_to_torch, torch_to_flax  # noqa: E402

SIZE = 34
# Families whose generated code differs in what training mode and gradients
# go through: squeeze-excitation and drop path, hard activations,
# pre-activation. (Cells and dense concatenation add no train-mode op: their
# batch norms are these; float64 NASNet-A Mobile costs 3 minutes to compile.)
MODES = ["b0", "mobilenet_v3", "resnet_v2"]
EVERY_OP = ROOT / "tests" / "blocks" / "every_op.yaml"


@pytest.fixture(scope="module", autouse=True)
def _exact():
    configure("cpu", keras=False)


def _sides(spec, size=SIZE):
    net = variant(spec, smallest(spec))
    return Sides.build(net, ("torch", "flax"), None, size=size)


# Every family (helpers.FAMILIES: NASNet-A Large and PNASNet-5 Large take the
# paths of NASNet-A Mobile, checked by hand: see docs/backends.md).
@pytest.mark.parametrize("spec", FAMILIES, ids=IDS)
def test_every_spec_equals_torch(spec):
    sides = _sides(spec)
    flax_model = sides.models[1]
    params = sum(
        int(np.prod(v.get_value().shape))
        for _, v in nnx.to_flat_state(nnx.state(flax_model, nnx.Param))
    )
    assert params == analysis.params(sides.network)
    result = sides.compare(SIZE)
    assert result.ok, [(r.where, r.max_rel) for r in result.rows]
    assert len(result.rows) == len(sides.network.stages) + 2  # stem, stages, logits
    # And at the variant's native size (one image: the cost is XLA's second
    # compile, not the pixels).
    native = sides.network.input.resolution
    result = sides.compare(native, batch=1)
    assert result.ok, (native, [(r.where, r.max_rel) for r in result.rows])


@pytest.mark.parametrize("name", MODES)
def test_training_mode_and_input_gradients_equal_torch(name):
    sides = _sides(SPECS / f"{name}.yaml")
    train = sides.compare(SIZE, train=True)
    gradient = sides.compare_input_gradients(SIZE)
    assert train.ok and gradient.ok, (train.logits, gradient.logits)
    # The float64 copies agree far below the bound, not by luck near it (the
    # gradient of ATen's hardsigmoid rounds 1/6 as a float: 7e-8 there).
    assert train.logits.max_rel < 1e-10


def test_a_broken_transfer_fails_where_it_starts():
    spec = SPECS / "mobilenet_v2.yaml"
    sides = _sides(spec)
    net = sides.network
    # The first block of stage 3 gets its depthwise kernel flipped.
    block = net.stages[2].blocks[0].name
    arrays = runtime.flax_arrays(sides.models[1])
    key = next(k for k in arrays if k.startswith(block) and k.endswith("conv.kernel"))
    kernel = arrays[key]
    arrays[key] = kernel[::-1, ::-1].copy()
    runtime.set_flax_arrays(sides.models[1], arrays)
    result = sides.compare(SIZE)
    assert not result.ok
    assert result.first_divergence == net.stages[2].name
    # A map that is not a number diverges there too (NaN compares false).
    arrays[key] = np.full_like(kernel, np.nan)
    runtime.set_flax_arrays(sides.models[1], arrays)
    result = sides.compare(SIZE)
    assert not result.ok and result.first_divergence == net.stages[2].name
    # Where the reference's own maps are not finite (random weights that
    # overflow at a small size), nothing can be judged: a clear error.
    with torch.no_grad():
        next(sides.models[0].stages[1].parameters()).fill_(np.inf)
    with pytest.raises(SpecError, match=r"torch's own stages\.1 is not finite"):
        sides.compare(SIZE)


def test_check_compares_keras_and_flax_on_every_op(tmp_path):
    result = run_archspec(
        "check", str(EVERY_OP), "--size", "33", "--backends", "keras,flax"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1].split()
    assert summary[-1] == "ok"
    # train and d/dx columns hold float64 errors far below 1e-6
    assert float(summary[-2]) < 1e-10 and float(summary[-3]) < 1e-10


def test_check_refuses_a_bad_pair():
    result = run_archspec(
        "check", "specs/resnet.yaml", "--variant", "resnet18", "--backends", "flax"
    )
    assert result.returncode == 2
    assert "--backends: expected two different backends" in result.stderr
    result = run_archspec(
        "check",
        "specs/resnet.yaml",
        "--variant",
        "resnet18",
        "--backends",
        "torch,flax",
        "--dtype",
        "bfloat16",
    )
    assert result.returncode == 2
    assert "compared in float32 on the CPU only" in result.stderr


def test_xla_running_out_of_memory_is_a_clear_error():
    """In float64, XLA's CPU backend expands depthwise convolutions into dense
    ones, and EfficientNetV2-L's float64 input gradient asks for 35 GB (the check is
    killed on this machine): an out-of-memory error names the way round it,
    and `--modes none` is that way (eval-mode outputs only)."""
    from archspec_flax.runtime import _xla_memory

    with (
        pytest.raises(SpecError, match=r"ran out of memory .*--modes none"),
        _xla_memory(),
    ):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory")
    # Other XLA errors pass through.
    with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"), _xla_memory():
        raise jax.errors.JaxRuntimeError("INTERNAL: something else")
    result = run_archspec(
        "check", "specs/mobilenet_v1.yaml", "--variant", "mobilenet_v1_025",
        "--size", "34", "--backends", "torch,flax", "--modes", "none",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    row = result.stdout.splitlines()[-1]  # the summary's one variant
    assert row.startswith("MobileNetV1-0.25")
    assert row.split()[-3:] == ["-", "-", "ok"]  # no train, no d/dx column


def test_no_template_per_block_kind():
    folder = ROOT / "backends" / "archspec_flax" / "templates"
    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == [
        "layers.py.j2",
        "model.py.j2",
        "module.py.j2",
    ]


def test_source_imports_only_jax_and_flax():
    net = variant(SPECS / "nasnet_keras.yaml", "nasnet_mobile")
    ((_, source),) = backends.get("flax").emit(net).items()
    imports = [
        line for line in source.splitlines() if line.startswith(("import", "from"))
    ]
    assert imports == [
        "import jax",
        "import jax.numpy as jnp",
        "from flax import nnx",
    ]
    assert "class Cells(nnx.List):" in source
    assert source == backends.get("flax").emit(net)[f"{net.module}.py"]


def test_the_docs_example_runs(monkeypatch):
    text = (ROOT / "docs" / "backends.md").read_text()
    section = text.split("## The Flax NNX module")[1].split("\n## ")[0]
    (code,) = re.findall(r"^```python\n(.*?)\n```$", section, re.M | re.S)
    monkeypatch.chdir(ROOT)
    exec(compile(code, "docs/backends.md", "exec"), {})


def test_create_model_heads_and_feature_maps():
    spec = SPECS / "resnet.yaml"
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
    features = archspec.create_model(spec, "resnet18", backend="flax", num_classes=0)
    pooled = features(x)
    assert pooled.shape == (2, 512)
    np.testing.assert_allclose(
        pooled, features.forward_features(x).mean((1, 2)), rtol=1e-6, atol=1e-6
    )
    maps = features.feature_maps(x)
    assert [(m.shape[-1], 64 // m.shape[1]) for m in maps] == [
        (info["num_chs"], info["reduction"]) for info in features.feature_info
    ]


def test_batch_norm_updates_running_mean_as_torch_does():
    """Flax's momentum is 1 - PyTorch's; the running means move alike (the
    running variances differ by design: Flax keeps the biased batch variance,
    PyTorch the unbiased one, as Keras does the biased)."""
    net = variant(SPECS / "resnet.yaml", "resnet18")
    torch_model = runtime.torch_model(net)
    state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    flax_model = backends.get("flax").runtime.build(net, state)
    x = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
    torch_model.train()
    torch_model(torch.from_numpy(x))
    flax_model(jax.numpy.asarray(x.transpose(0, 2, 3, 1)), train=True)
    ours = runtime.flax_arrays(flax_model)["stem.bn.mean"]
    theirs = torch_model.stem.bn.running_mean.detach().numpy()
    assert np.abs(theirs).max() > 1e-3  # it moved
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


def test_weights_round_trip_and_refusals():
    net = variant(SPECS / "mobilenet_v3.yaml", smallest(SPECS / "mobilenet_v3.yaml"))
    state = {k: v.numpy() for k, v in runtime.torch_model(net).state_dict().items()}
    arrays = torch_to_flax(net, state)
    back = flax_to_torch(net, arrays)
    assert set(back) == set(state)
    for key, value in state.items():
        if not key.endswith("num_batches_tracked"):
            assert np.array_equal(back[key], value), key
    missing = dict(arrays)
    key = next(iter(missing))
    del missing[key]
    with pytest.raises(
        SpecError, match=f"missing Flax variable {re.escape(repr(key))}"
    ):
        flax_to_torch(net, missing)
    wrong = dict(state)
    wrong["classifier.weight"] = wrong["classifier.weight"][:, :-1]
    with pytest.raises(SpecError, match=r"'classifier\.weight' has shape"):
        torch_to_flax(net, wrong)
    # Into a model, one-to-one: an array the model has no variable for is
    # refused (a model that loads has the weights' parameter count).
    model = backends.adapter("flax").build(net, state)
    extra = dict(arrays) | {"stages.0.0.nosuch.kernel": np.zeros(3, np.float32)}
    with pytest.raises(SpecError, match=r"no Flax variables \['stages\.0\.0\.nosuch"):
        runtime.set_flax_arrays(model, extra)
    runtime.set_flax_arrays(model, arrays)
