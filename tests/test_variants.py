"""Variants as data: every rule lists its named variants, and every command
that takes variants selects them by name (issue: variant tables)."""

from __future__ import annotations

import pytest
from helpers import B0, RESNET, SE_RESNET, run_archspec

from archspec import analysis, ir
from archspec.errors import SpecError
from archspec.expand import expand
from archspec.pipeline import load_spec, network, select
from archspec.scaling import round_channels
from archspec.spec import Rounding


def test_variant_b3_is_phi_3(tmp_path):
    by_name = run_archspec("compile", str(B0), "--variant", "b3", "-o", "-")
    by_phi = run_archspec("compile", str(B0), "--phi", "3", "-o", "-")
    assert by_name.returncode == by_phi.returncode == 0
    assert by_name.stdout == by_phi.stdout
    assert network(load_spec(B0), variant="b3") == network(load_spec(B0), 3)


def test_every_rule_lists_its_variants():
    assert [v.name for v in select(load_spec(B0))] == [f"b{i}" for i in range(8)]
    assert [v.name for v in select(load_spec(RESNET))] == [
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "wide_resnet50_2",
        "wide_resnet101_2",
    ]
    result = run_archspec("summary", str(SE_RESNET))
    assert result.returncode == 0, result.stderr
    rows = [line.split()[0] for line in result.stdout.splitlines()[2:]]
    assert rows == [f"seresnet{d}" for d in (18, 34, 50, 101, 152)]


def test_table_variants_change_the_block_kind_and_the_inner_width():
    loaded = load_spec(RESNET)
    r18, r50, wide = (
        network(loaded, variant=name)
        for name in ("resnet18", "resnet50", "wide_resnet50_2")
    )
    assert {b.kind for b in r18.blocks} == {"basic"}
    assert {b.kind for b in r50.blocks} == {"bottleneck"}
    assert [len(s.blocks) for s in r50.stages] == [3, 4, 6, 3]
    # Wide ResNet doubles the 3x3's width and keeps the block outputs.
    assert [b.width_channels for b in wide.blocks] == [
        2 * b.width_channels for b in r50.blocks
    ]
    assert [b.out_channels for b in wide.blocks] == [b.out_channels for b in r50.blocks]
    assert (wide.module, wide.class_name, wide.title) == (
        "wide_resnet50_2",
        "WideResNet50_2",
        "Wide ResNet-50-2",
    )
    # Only the 3x3 of the first block of stages 2-4 strides (v1.5).
    first = r50.stages[1].blocks[0]
    strides = {n.name: n.stride for n in first.graph() if isinstance(n, ir.Conv)}
    assert strides == {"conv1": 1, "conv2": 2, "conv3": 1, "shortcut": 2}


@pytest.mark.parametrize(
    ("spec", "variant"),
    [(RESNET, "resnet50"), (RESNET, "wide_resnet101_2"), (SE_RESNET, "seresnet18")],
)
def test_expand_round_trips_for_table_variants(spec, variant, tmp_path):
    out = tmp_path / "net.yaml"
    result = run_archspec("expand", str(spec), "--variant", variant, "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert load_spec(out) == network(load_spec(spec), variant=variant)
    for backend in ("torch", "keras"):
        direct = run_archspec(
            "compile", str(spec), "--variant", variant, "--backend", backend, "-o", "-"
        )
        via = run_archspec("compile", str(out), "--backend", backend, "-o", "-")
        assert direct.returncode == via.returncode == 0
        assert direct.stdout == via.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--variant", "resnet5"], "no variant 'resnet5'; did you mean 'resnet50'?"),
        (["--phi", "3"], "scales by the 'table' rule; choose a variant with --variant"),
        (["--width", "0.5"], "not by a width multiplier"),
        (["--variant", "resnet50", "--phi", "3"], "--variant and --phi: give one"),
        (["--resolution", "160"], "--resolution goes with --width"),
    ],
)
def test_bad_selections_are_exit_2(args, message):
    result = run_archspec("summary", str(RESNET), *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_expand_needs_one_variant():
    result = run_archspec("expand", str(RESNET))
    assert result.returncode == 2
    assert "expand writes one network; give a single variant" in result.stderr


def test_compile_defaults_to_every_variant_in_a_folder_per_spec(tmp_path):
    result = run_archspec("compile", str(RESNET), "--backend", "torch", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = sorted(
        p.name for p in (tmp_path / "generated" / "torch" / "resnet").iterdir()
    )
    assert written == sorted(f"{v.name}.py" for v in select(load_spec(RESNET)))


def test_width_rule_and_free_multipliers(tmp_path):
    """The width rule: named multipliers and any other through --width, with
    the spec's rounding (here torchvision's MobileNetV2 rule, divisor 8 with the
    10% guard, on a ResNet-shaped table)."""
    spec = tmp_path / "thin.yaml"
    spec.write_text(
        f"extends: {RESNET.as_posix()}\n"
        "name: thin\nclass_name: Thin\n"
        "stages:\n  columns: [block, channels, layers, stride]\n"
        "  rows: [[basic, 64, 1, 1], [basic, 128, 1, 2]]\n"
        "scaling:\n  rule: width\n  rounding: {divisor: 8, guard: true}\n"
        "  variants: {thin_050: {width: 0.5}, thin_100: {width: 1.0}}\n"
    )
    loaded = load_spec(spec)
    assert [v.name for v in select(loaded)] == ["thin_050", "thin_100"]
    half = network(loaded, variant="thin_050")
    assert [b.out_channels for b in half.blocks] == [32, 64]
    (free,) = select(loaded, width=0.6, resolution=160)
    net = expand(loaded, free)
    assert (net.module, net.class_name) == ("thin_w0_6_r160", "ThinW0_6_r160")
    assert net.input.resolution == 160
    assert [b.out_channels for b in net.blocks] == [
        round_channels(64 * 0.6, Rounding(divisor=8)),
        round_channels(128 * 0.6, Rounding(divisor=8)),
    ]
    result = run_archspec(
        "compile", str(spec), "--width", "0.6", "--resolution", "160", "-o", "-"
    )
    assert result.returncode == 0, result.stderr
    assert "--width 0.6 --resolution 160" in result.stdout  # how to regenerate it
    assert analysis.params(net) < analysis.params(network(loaded, variant="thin_100"))


@pytest.mark.parametrize(
    ("value", "rounding", "expected"),
    [
        (19.2, Rounding(divisor=8), 24),  # the 10% guard: 16 < 0.9 * 19.2
        (19.2, Rounding(divisor=8, guard=False), 16),  # Keras's EfficientNetV2
        (4.0, Rounding(divisor=8, guard=False), 8),  # at least the divisor
        (0.25 * 130, Rounding(divisor=1, mode="floor", guard=False), 32),  # int(c * a)
        (2.0, Rounding(divisor=8, guard=False), 8),  # timm's SE: min 8
    ],
)
def test_rounding_rules(value, rounding, expected):
    assert round_channels(value, rounding) == expected


def test_a_selection_of_an_unknown_variant_names_the_spec():
    with pytest.raises(SpecError, match="its variants: b0, b1"):
        select(load_spec(B0), variant="b9")
