"""Every built-in block kind also compiles through the generic emitter (its
graph, no template), and computes what its hand-written template computes.

For the smallest variant of every shipped spec, in both backends: the model
written from graphs takes the template model's weights by name, strictly,
and gives the same outputs; one class (PyTorch) or helper (Keras) per block
structure; the output is ruff-clean and byte-identical on every emit.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers import FAMILIES, IDS, relative_error, smallest, variant  # noqa: E402

from archspec import analysis, backends, structure  # noqa: E402
from archspec.parity import randomize  # noqa: E402

SIZE = 67  # odd at every stride


def load(source: str, folder, stem: str):
    path = folder / f"{stem}.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(
        f"_g_{stem}_{time.monotonic_ns()}", path
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sources(net, backend: str) -> tuple[str, str]:
    emit = backends.get(backend).emit
    ((_, template),) = emit(net).items()
    ((_, generic),) = emit(net, generic=True).items()
    assert emit(net, generic=True) == {f"{net.module}.py": generic}  # deterministic
    return template, generic


def templated(net, template: str, generic: str) -> None:
    """Skip a network without a templated kind: both renderings are the
    generic one (kinds written in a spec: ResNetV2, NASNet)."""
    if template == generic:
        kinds = sorted({b.kind for b in net.blocks})
        pytest.skip(f"no kind with a template ({', '.join(kinds)}): one rendering")


@pytest.mark.parametrize("spec", FAMILIES, ids=IDS)
def test_torch_generic_equals_template(spec, tmp_path):
    net = variant(spec, smallest(spec))
    template, generic = sources(net, "torch")
    templated(net, template, generic)
    ours = getattr(load(generic, tmp_path, "generic"), net.class_name)().eval()
    theirs = getattr(load(template, tmp_path, "template"), net.class_name)().eval()
    randomize(theirs, SIZE, seed=0)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert sum(p.numel() for p in ours.parameters()) == analysis.params(net)
    x = torch.randn(2, net.input.channels, SIZE, SIZE)
    with torch.no_grad():
        assert relative_error(ours(x), theirs(x)) < 1e-5
        # Train-mode batch norm, dropout and drop path off: the same batch
        # statistics.
        for model in (ours, theirs):
            model.train()
            for m in model.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.p = 0.0
                if isinstance(getattr(m, "drop_path", None), float):
                    m.drop_path = 0.0
        assert relative_error(ours(x), theirs(x)) < 1e-5
    # One class per structure: every class the generic path wrote is built.
    found = structure.structures(net.blocks, {b.kind for b in net.blocks})
    names = {s.name for group in found.values() for s in group}
    classes = set(re.findall(r"^class (\w+)\(nn\.Module\)", generic, re.M))
    assert names <= classes
    built = {type(b).__name__ for stage in ours.stages for b in stage}
    assert names <= built | {"DenseBlock"}


@pytest.mark.parametrize("spec", FAMILIES, ids=IDS)
def test_keras_generic_equals_template(spec, tmp_path):
    keras = pytest.importorskip("keras")
    net = variant(spec, smallest(spec))
    template, generic = sources(net, "keras")
    templated(net, template, generic)
    size = (SIZE, SIZE, net.input.channels)
    theirs = getattr(load(template, tmp_path, "template"), net.module)(input_shape=size)
    ours = getattr(load(generic, tmp_path, "generic"), net.module)(input_shape=size)
    rng = np.random.default_rng(0)
    for layer in theirs.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        drawn = []
        for w in weights:
            if isinstance(layer, keras.layers.BatchNormalization) and w is weights[-1]:
                drawn.append(rng.uniform(0.5, 2.0, w.shape).astype(w.dtype))  # variance
            else:
                drawn.append((w + rng.normal(0, 0.05, w.shape)).astype(w.dtype))
        layer.set_weights(drawn)
        ours.get_layer(layer.name).set_weights(drawn)
    mine = [w for w in ours.weights if w.trainable]
    assert sum(int(np.prod(w.shape)) for w in mine) == analysis.params(net)
    x = rng.uniform(0, 255 if net.input.preprocess else 1, (2, *size)).astype("float32")
    # Called eagerly: for one small batch, tracing predict()'s graph costs more.
    expected = np.asarray(theirs(x, training=False), dtype="float64")
    found = np.asarray(ours(x, training=False), dtype="float64")
    assert np.abs(found - expected).max() <= 1e-5 * np.abs(expected).max()
    keras.backend.clear_session()


def test_generic_output_is_ruff_clean(tmp_path):
    for spec in FAMILIES:
        net = variant(spec, smallest(spec))
        for backend in ("torch", "keras"):
            _, generic = sources(net, backend)
            (tmp_path / f"{backend}_{spec.stem}.py").write_text(generic)
    for command in (["check", "-q"], ["format", "--check", "-q"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "--isolated", str(tmp_path)],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr
