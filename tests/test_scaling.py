"""Rounding, coefficients and expansion against the figures in REFERENCE.md."""

from __future__ import annotations

import pytest
from helpers import B0, B0_TV, PARAMS

from archspec import analysis
from archspec.errors import SpecError
from archspec.pipeline import load_spec, network
from archspec.scaling import make_divisible

# REFERENCE.md, "Figures to match exactly" (PARAMS: in helpers.py).
PAPER_FLOPS = [0.39e9, 0.70e9, 1.0e9, 1.8e9, 4.2e9, 9.9e9, 19e9, 37e9]
STEM = [32, 32, 32, 40, 48, 48, 56, 64]
HEAD = [1280, 1280, 1408, 1536, 1792, 2048, 2304, 2560]
# REFERENCE.md, published coefficient table.
PUBLISHED = [
    (1.0, 1.0, 224, 0.2),
    (1.0, 1.1, 240, 0.2),
    (1.1, 1.2, 260, 0.3),
    (1.2, 1.4, 300, 0.3),
    (1.4, 1.8, 380, 0.4),
    (1.6, 2.2, 456, 0.4),
    (1.8, 2.6, 528, 0.5),
    (2.0, 3.1, 600, 0.5),
]


@pytest.fixture(scope="module")
def b0():
    return load_spec(B0)


@pytest.mark.parametrize(
    ("value", "expected"),
    # The rule from REFERENCE.md: round half up to a multiple of 8, at least 8,
    # and never more than 10% below the value.
    [
        (32 * 1.1, 32),
        (40 * 1.1, 48),
        (16 * 1.2, 24),
        (1280 * 1.1, 1408),
        (3.0, 8),
        (76.0, 80),
        (67.0, 64),
        (68.0, 72),
        (12 * 1.0, 16),
        (20 * 1.8, 40),
    ],
)
def test_make_divisible(value, expected):
    assert make_divisible(value, 8) == expected


def test_make_divisible_never_drops_more_than_ten_percent():
    for tenths in range(80, 4000):
        value = tenths / 10
        rounded = make_divisible(value, 8)
        assert rounded % 8 == 0 and rounded >= 0.9 * value


@pytest.mark.parametrize("phi", range(8))
def test_published_variant_matches_reference(b0, phi):
    net = network(b0, phi)
    width, depth, resolution, dropout = PUBLISHED[phi]
    s = net.source
    assert (s.rule, s.width, s.depth, s.resolution, s.dropout) == (
        "compound",
        width,
        depth,
        resolution,
        dropout,
    )
    assert net.input.resolution == resolution
    assert net.dropout == dropout
    assert net.stem[0].out_channels == STEM[phi]
    assert net.head[0].out_channels == HEAD[phi]
    assert analysis.params(net) == PARAMS[phi]
    assert abs(analysis.flops(net) / PAPER_FLOPS[phi] - 1) < 0.05


def test_layers_per_stage_b0_and_b7(b0):
    assert analysis.layers_per_stage(network(b0, 0)) == [1, 2, 2, 3, 3, 4, 1]
    assert analysis.layers_per_stage(network(b0, 7)) == [4, 7, 7, 10, 10, 13, 4]


def test_formula_for_unpublished_and_forced_phi(b0):
    net = network(b0, 2.5)
    assert net.source.rule == "formula"
    assert net.source.width == pytest.approx(1.1**2.5)
    assert net.source.depth == pytest.approx(1.2**2.5)
    assert net.input.resolution == round(224 * 1.15**2.5)
    assert (net.module, net.class_name) == ("efficientnet_phi2_5", "EfficientNetPhi2_5")
    forced = network(b0, 3, formula=True)
    assert forced.source.rule == "formula" and forced.source.width == pytest.approx(
        1.1**3
    )
    assert forced.module == "efficientnet_phi3"
    # phi 3 by formula is wider than the hand-rounded B3.
    assert analysis.params(forced) > PARAMS[3]


def test_phi_out_of_range_is_an_error(b0):
    with pytest.raises(SpecError, match="expected a number from 0 to 16"):
        network(b0, -1)


def test_block_details_b0(b0):
    net = network(b0, 0)
    blocks = net.blocks
    assert len(blocks) == 16
    first, second = blocks[0], blocks[1]
    # MBConv1: no expansion; squeeze from the block's input channels.
    assert (
        first.in_channels,
        first.expanded_channels,
        first.squeeze_channels,
        first.out_channels,
    ) == (32, 32, 8, 16)
    assert (
        second.in_channels,
        second.expanded_channels,
        second.squeeze_channels,
        second.stride,
    ) == (16, 96, 4, 2)
    assert net.drop_path == 0.2
    assert [b.residual for b in blocks].count(True) == 9
    sizes = [(b.in_size, b.out_size) for b in blocks if b.stride == 2]
    assert sizes == [(112, 56), (56, 28), (28, 14), (14, 7)]
    assert blocks[-1].name == "stages.6.0"


def test_odd_resolution_sizes(b0):
    net = network(b0, 3)  # 300 -> 150 -> 75 -> 38 -> 19 -> 10
    sizes = [net.stem[0].out_size] + [b.out_size for b in net.blocks if b.stride == 2]
    assert sizes == [150, 75, 38, 19, 10]


def test_torchvision_flavour_changes_conventions_only(b0):
    tv = load_spec(B0_TV)
    for phi in range(8):
        ours, theirs = network(b0, phi), network(tv, phi)
        assert analysis.params(ours) == analysis.params(theirs)
        stem = theirs.stem[0]
        assert stem.padding == "symmetric" and theirs.input.preprocess is None
        # torchvision builds B5-B7 with eps 1e-3, momentum 0.01, the rest with torch defaults.
        expected = (1e-3, 0.01) if phi >= 5 else (1e-5, 0.1)
        assert (stem.norm.eps, stem.norm.momentum) == expected
        assert {(b.norm.eps, b.norm.momentum) for b in theirs.blocks} == {expected}
