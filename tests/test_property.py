"""Property: every valid spec compiles to two models that are one function.

hypothesis writes specs across block kinds, column values (edge values the
schema accepts included: no SE, expansion 1, stride 2 at odd sizes, one layer,
biased convolutions, a stem pool) and variants of a table rule. For each
variant both backends compile; each model's parameter count equals the IR's;
and with the same (calibrated random) weights the PyTorch and Keras models
agree within archspec check's tolerance at a small size, on every stage
boundary. Cases it found stay below as `@example`s.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("keras")

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from archspec import analysis  # noqa: E402
from archspec.expand import expand  # noqa: E402
from archspec.parity import Pair  # noqa: E402
from archspec.pipeline import load_spec, select  # noqa: E402

KINDS = ("mbconv", "basic", "bottleneck")


@st.composite
def rows(draw, kind: str, stride_on: str, mixed: bool) -> dict:
    row = {
        "block": kind,
        "channels": draw(st.integers(4, 24)),
        "layers": draw(st.integers(1, 2)),
        "stride": draw(st.sampled_from([1, 2])),
    }
    se = draw(st.sampled_from([0.0, 0.25, 0.5]))
    if kind == "mbconv":
        row |= {
            "expand": draw(st.integers(1, 4)),
            "kernel": draw(st.sampled_from([1, 3, 5])),
            "se": se,
            # Per-row activations (MobileNetV3); residual kinds take the
            # network's, so only all-MBConv tables mix them.
            "activation": draw(st.sampled_from([None, "relu", "hardswish", "relu6"]))
            if mixed
            else None,
        }
    elif kind == "basic":
        row["se"] = se
    else:
        row |= {
            "expansion": draw(st.integers(1, 4)),
            "width": draw(st.sampled_from([0.5, 1.0, 2.0])),
            "groups": draw(st.sampled_from([1, 2])),
            "stride_on": stride_on,
            "se": se,
        }
    return row


@st.composite
def specs(draw) -> dict:
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=3))
    # One stride position per network (torchvision's v1.5 or Keras's v1).
    stride_on = draw(st.sampled_from(["conv1", "conv2"]))
    mixed = set(kinds) == {"mbconv"}
    table = [draw(rows(kind, stride_on, mixed)) for kind in kinds]
    columns = sorted({c for row in table for c in row}, key=_column_order)
    pool = draw(st.booleans())
    # Max pooling pads like PyTorch (-inf); Keras pads with zeros, equal only
    # after a non-negative activation, so a pooled stem uses ReLU.
    activation = (
        "relu" if pool else draw(st.sampled_from(["relu", "silu", "hardswish"]))
    )
    stem = {
        "channels": draw(st.integers(4, 16)),
        "kernel": draw(st.sampled_from([1, 3, 5, 7])),
        "stride": draw(st.sampled_from([1, 2])),
    }
    if pool:
        stem["pool"] = {"op": "max", "kernel": 3, "stride": 2, "padding": 1}
    head = {"classes": draw(st.integers(2, 10))}
    if draw(st.booleans()):
        head["channels"] = draw(st.integers(4, 32))
    variants = {}
    for i in range(draw(st.integers(1, 2))):
        variant = {"layers": [draw(st.integers(1, 2)) for _ in table]}
        if draw(st.booleans()):
            variant["width"] = draw(st.sampled_from([0.5, 0.75, 1.5]))
        variants[f"net{i + 1}"] = variant
    return {
        "name": "net",
        "class_name": "Net",
        "input": {"channels": 3, "resolution": draw(st.integers(17, 40))},
        "stem": stem,
        "stages": {
            "columns": columns,
            "rows": [[row.get(c) for c in columns] for row in table],
        },
        "head": head,
        "defaults": {
            "activation": activation,
            "padding": draw(st.sampled_from(["same", "symmetric"])),
            "bias": draw(st.booleans()),
            "norm": {"eps": draw(st.sampled_from([1e-3, 1e-5])), "momentum": 0.1},
            "se": draw(
                st.sampled_from(
                    [
                        {},
                        {
                            "activation": "relu",
                            "rounding": {"divisor": 8, "guard": False},
                        },
                    ]
                )
            ),
        },
        "regularization": {"dropout": 0.1, "drop_path": 0.1},
        "scaling": {
            "rule": "table",
            "rounding": {"divisor": draw(st.sampled_from([1, 4, 8]))},
            "variants": variants,
        },
    }


def _column_order(column: str) -> tuple:
    first = ["block", "channels", "layers", "stride"]
    return (first.index(column), "") if column in first else (len(first), column)


def check_spec(spec: dict, folder: Path) -> None:
    path = folder / "spec.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    loaded = load_spec(path)
    for variant in select(loaded):
        net = expand(loaded, variant)
        pair = Pair.build(net, folder)
        count = analysis.params(net)
        assert sum(p.numel() for p in pair.torch_model.parameters()) == count
        keras_count = sum(
            int(w.numpy().size) for w in pair.keras_model.trainable_weights
        )
        assert keras_count == count
        size = net.input.resolution
        for at in (size, size | 1):
            result = pair.compare(at)
            assert result.ok, [(r.where, r.max_rel) for r in result.rows]


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(spec=specs())
@example(  # one layer, no SE, expansion 1, stride 2 at an odd size, biased convs
    spec={
        "name": "net",
        "class_name": "Net",
        "input": {"channels": 3, "resolution": 17},
        "stem": {"channels": 8, "kernel": 3, "stride": 2},
        "stages": {
            "columns": [
                "block",
                "channels",
                "layers",
                "stride",
                "expand",
                "kernel",
                "se",
            ],
            "rows": [["mbconv", 8, 1, 2, 1, 3, 0.0]],
        },
        "head": {"classes": 3},
        "defaults": {"activation": "silu", "padding": "same", "bias": True},
        "scaling": {"rule": "table", "variants": {"net1": {}}},
    }
)
@example(  # a pooled stem, Keras's v1 bottleneck with SE, and a basic block
    spec={
        "name": "net",
        "class_name": "Net",
        "input": {"channels": 3, "resolution": 33},
        "stem": {
            "channels": 8,
            "kernel": 7,
            "stride": 2,
            "pool": {"op": "max", "kernel": 3, "stride": 2, "padding": 1},
        },
        "stages": {
            "columns": ["block", "channels", "layers", "stride", "se", "stride_on"],
            "rows": [
                ["basic", 8, 1, 1, 0.25, None],
                ["bottleneck", 4, 2, 2, 0.5, "conv1"],
            ],
        },
        "head": {"classes": 4},
        "defaults": {
            "activation": "relu",
            "padding": "symmetric",
            "se": {"activation": "relu", "rounding": {"divisor": 8, "guard": False}},
        },
        "scaling": {"rule": "table", "variants": {"net1": {"width": 1.5}}},
    }
)
@example(  # found: a strided 1x1 projection under TensorFlow padding, even size
    spec={
        "name": "net",
        "class_name": "Net",
        "input": {"channels": 3, "resolution": 19},
        "stem": {
            "channels": 4,
            "kernel": 1,
            "stride": 1,
            "pool": {"op": "max", "kernel": 3, "stride": 2, "padding": 1},
        },
        "stages": {
            "columns": ["block", "channels", "layers", "stride", "se"],
            "rows": [["basic", 4, 1, 2, 0.0]],
        },
        "head": {"classes": 2},
        "defaults": {"activation": "relu", "padding": "same"},
        "scaling": {"rule": "table", "variants": {"net1": {}}},
    }
)
@example(  # MobileNetV3's mix: ReLU and hardswish rows, ReLU inside SE layers
    spec={
        "name": "net",
        "class_name": "Net",
        "input": {"channels": 3, "resolution": 32},
        "stem": {"channels": 16, "kernel": 3, "stride": 2},
        "stages": {
            "columns": [
                "block",
                "channels",
                "layers",
                "stride",
                "expand",
                "kernel",
                "se",
                "activation",
            ],
            "rows": [
                ["mbconv", 16, 1, 1, 1, 3, 0.25, "relu"],
                ["mbconv", 24, 2, 2, 4, 5, 0.0, "hardswish"],
                ["mbconv", 24, 1, 1, 3, 3, 0.25, None],
            ],
        },
        "head": {"channels": 64, "classes": 10},
        "defaults": {
            "activation": "hardswish",
            "padding": "symmetric",
            "se": {"activation": "relu"},
        },
        "scaling": {"rule": "table", "variants": {"net1": {}}},
    }
)
def test_both_backends_are_one_function(spec, tmp_path_factory):
    import keras

    try:
        check_spec(spec, tmp_path_factory.mktemp("spec"))
    finally:
        keras.backend.clear_session()
