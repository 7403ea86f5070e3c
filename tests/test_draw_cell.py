"""`archspec draw --block KIND`: one block as its graph, as the NASNet paper
draws its cells (Figure 4). Every edge of the IR graph is drawn, every node
sits below its inputs and boxes never overlap; the labels say what the
paper's figure says; the SVG is the same bytes run to run; an unknown kind
is bad input naming the kinds there are."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from itertools import combinations

import pytest
from helpers import ROOT, SPECS, run_archspec

from archspec import draw, ir
from archspec.cli import _one_network, main

pytest.importorskip("matplotlib")

NASNET = SPECS / "nasnet_keras.yaml"
CASES = [  # (spec, variant, kind)
    (NASNET, "nasnet_mobile", "normal_cell"),
    (NASNET, "nasnet_mobile", "reduction_cell"),
    (NASNET, "nasnet_mobile", "sep_conv"),  # an op called inside the cells
    (SPECS / "nasnet.yaml", "nasnetalarge", "reduction_cell"),
    (SPECS / "pnasnet.yaml", None, "cell"),
    (SPECS / "resnet_v2.yaml", "resnetv2_50", "preact_bottleneck"),
    (SPECS / "se_resnet.yaml", "seresnet50", "bottleneck"),
    (SPECS / "densenet.yaml", "densenet121", "dense"),
    (SPECS / "b0.yaml", "b0", "mbconv"),
]


def _cli(*args) -> int:
    return main([*map(str, args)])


def texts(path) -> list[str]:
    """Every text of an SVG (which must parse), x for the sign of times.
    Mathtext ($h_i$) is a tspan a glyph, on lines of their own: joined."""
    root = ET.parse(path).getroot()
    return [
        "".join(part.strip() for part in element.itertext()).replace("\u00d7", "x")
        for element in root.iter("{http://www.w3.org/2000/svg}text")
    ]


def ir_edges(block: ir.Block) -> set[tuple[str, str]]:
    """(input, reader) for every node of the block's graph, read from the IR
    directly: no inputs is the node before, or the block's input."""
    edges, previous = set(), ir.BLOCK_INPUT
    for layer in block.graph():
        edges |= {(source, layer.name) for source in layer.inputs or (previous,)}
        previous = layer.name
    return edges


@pytest.mark.parametrize(
    ("spec", "variant", "kind"), CASES, ids=lambda c: getattr(c, "stem", c)
)
def test_layout_draws_every_edge_downwards(spec, variant, kind):
    network = _one_network(str(spec), "one", variant=variant)
    block = draw.find_block(network, kind)
    layout = draw.cell_layout(block)
    nodes = layout.nodes
    last = block.graph()[-1].name

    drawn = {(e.source, e.target) for e in layout.edges}
    assert drawn == ir_edges(block) | {(last, draw.OUTPUT)}
    assert len(drawn) == len(layout.edges)  # each once

    for edge in layout.edges:
        source, target = nodes[edge.source], nodes[edge.target]
        # Below all of its inputs, the box clear of theirs.
        assert target.row > source.row
        assert target.y + target.height / 2 < source.y - source.height / 2
        # The path leaves the source's bottom, enters the target's top, and
        # only goes down, one row at a time.
        (x0, y0), (x1, y1) = edge.points[0], edge.points[-1]
        assert y0 == pytest.approx(source.y - source.height / 2, abs=1e-3) or (
            source.round and y0 < source.y
        )
        assert y1 == pytest.approx(target.y + target.height / 2, abs=1e-3) or (
            target.round and y1 > target.y
        )
        assert abs(x0 - source.x) <= source.width / 2
        assert abs(x1 - target.x) <= target.width / 2
        ys = [y for _, y in edge.points]
        assert ys == sorted(ys, reverse=True) and len(set(ys)) == len(ys)
        assert len(edge.points) == target.row - source.row + 1

    # The inputs on top, the output alone at the bottom.
    top = [n for n in nodes.values() if n.row == 0]
    assert {n.name for n in top} <= {ir.BLOCK_INPUT, ir.BLOCK_PREV}
    assert ir.BLOCK_INPUT in nodes
    assert nodes[draw.OUTPUT].y == min(n.y for n in nodes.values())
    assert [n for n in nodes.values() if n.row == nodes[draw.OUTPUT].row] == [
        nodes[draw.OUTPUT]
    ]

    # No two things on a row overlap; everything is inside the picture.
    for a, b in combinations(nodes.values(), 2):
        if a.row == b.row:
            assert abs(a.x - b.x) >= (a.width + b.width) / 2 + 0.1, (a, b)
    for n in nodes.values():
        assert 0 < n.x - n.width / 2 <= n.x + n.width / 2 < layout.width
        assert 0 < n.y - n.height / 2 <= n.y + n.height / 2 < layout.height


def test_normal_cell_reads_like_figure_4(tmp_path):
    out = tmp_path / "normal.svg"
    args = ("draw", NASNET, "--variant", "nasnet_mobile", "--block", "normal_cell")
    assert _cli(*args, "-o", out) == 0
    labels = texts(out)
    # NASNet-A's normal cell: five pairwise combinations, all concatenated.
    assert labels.count("sep 5x5") == 2
    assert labels.count("sep 3x3") == 3
    assert labels.count("avg 3x3") == 3
    assert labels.count("+") == 5
    assert labels.count("concat") == 1
    # The first normal cell after a reduction halves its `prev` input first.
    assert "factorized reduction 1x1 /2" in labels
    assert "relu conv bn 1x1" in labels
    assert {"hi(x)", "hi\u22121(prev)", "hi+1(output)"} <= set(labels)
    assert "NASNet-A Mobile: normal_cell (stages.2.0)" in labels


def test_reduction_cell_reads_like_figure_4(tmp_path):
    out = tmp_path / "reduction.svg"
    args = ("draw", NASNET, "--variant", "nasnet_mobile", "--block", "reduction_cell")
    assert _cli(*args, "-o", out) == 0
    labels = texts(out)
    assert labels.count("sep 7x7 /2") == 2
    assert labels.count("sep 5x5 /2") == 2
    assert labels.count("max 3x3 /2") == 2
    assert labels.count("avg 3x3 /2") == 1
    assert labels.count("avg 3x3") == 1
    assert labels.count("sep 3x3") == 1
    assert labels.count("+") == 5


def test_cell_svg_is_deterministic_and_png_not_blank(tmp_path):
    from matplotlib.image import imread

    args = ("draw", SPECS / "pnasnet.yaml", "--block", "cell")
    for name in ("a.svg", "b.svg", "c.png"):
        assert _cli(*args, "-o", tmp_path / name) == 0
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()
    assert b"<dc:date>" not in (tmp_path / "a.svg").read_bytes()
    pixels = imread(tmp_path / "c.png")
    assert pixels.shape[0] > 300 and pixels.std() > 0.05


def test_unknown_kind_names_the_kinds(tmp_path):
    out = tmp_path / "x.svg"
    result = run_archspec(
        "draw",
        str(NASNET),
        "--variant",
        "nasnet_mobile",
        "--block",
        "bottleneck",
        "-o",
        str(out),
        cwd=ROOT,
    )
    assert result.returncode == 2, result.stderr
    assert "--block bottleneck" in result.stderr
    assert "normal_cell" in result.stderr and "reduction_cell" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
