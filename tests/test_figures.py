"""`archspec plot` and `archspec draw`: a figure for every shipped spec, valid
SVG with the labels it should carry, deterministic bytes, a PNG that is not
blank, and a clear message where matplotlib is missing."""

from __future__ import annotations

import json
import re
import shlex
import xml.etree.ElementTree as ET

import pytest
from helpers import B0, MNASNET, RESNET, ROOT, SE_RESNET, SPECS, run_archspec

from archspec import scaling
from archspec.cli import main
from archspec.pipeline import load_spec

pytest.importorskip("matplotlib")

SHIPPED = sorted(SPECS.glob("*.yaml"))
SVG = "{http://www.w3.org/2000/svg}"


def texts(path) -> list[str]:
    """Every text line in an SVG (which must parse)."""
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    lines = []
    for element in root.iter(f"{SVG}text"):
        lines += "".join(element.itertext()).splitlines()
    # The figures write a multiplication sign (3\u00d73); x reads the same here.
    return [line.strip().replace("\u00d7", "x") for line in lines]


def _cli(*args: str) -> int:
    return main([*map(str, args)])


@pytest.mark.parametrize("spec", SHIPPED, ids=lambda p: p.stem)
def test_plot_every_spec_labels_every_variant(spec, tmp_path):
    out = tmp_path / "plot.svg"
    assert _cli("plot", spec, "--x", "params", "--y", "flops", "-o", out) == 0
    labels = texts(out)
    valid = load_spec(spec)
    for name in scaling.named(valid):
        assert name in labels
    assert (valid.spec.title or valid.spec.class_name) in labels
    assert "FLOPs against parameters" in labels


def test_accuracy_plot_has_exactly_the_published_variants(tmp_path):
    out = tmp_path / "accuracy.svg"
    assert _cli("plot", B0, RESNET, MNASNET, SE_RESNET, "-o", out) == 0
    labels = set(texts(out))
    assert {f"b{phi}" for phi in range(8)} <= labels
    assert {"resnet18", "resnet50", "wide_resnet101_2", "mnasnet1_3"} <= labels
    # SE-ResNet has no published top1 in its spec: no point, no legend entry.
    assert not any(label.startswith("seresnet") for label in labels)
    assert "SE-ResNet" not in labels and "ResNet" in labels


def test_accuracy_plot_without_any_accuracy_is_bad_input(capsys, tmp_path):
    assert _cli("plot", SE_RESNET, "-o", tmp_path / "x.svg") == 2
    assert (
        "no variant of the given specs has a published top1" in capsys.readouterr().err
    )
    assert not (tmp_path / "x.svg").exists()


def test_latency_plot_reads_profile_json(tmp_path):
    # A profile document as `archspec profile --json` writes it (two variants).
    profile = {
        "format": "archspec.profile/1",
        "spec": str(MNASNET),
        "variants": [
            {"variant": "mnasnet0_5", "status": "ok", "latency_ms": 3.0},
            {"variant": "mnasnet1_0", "status": "ok", "latency_ms": 5.0},
            {"variant": "mnasnet1_3", "status": "does not fit", "latency_ms": None},
        ],
    }
    path = tmp_path / "p.json"
    path.write_text(json.dumps(profile))
    out = tmp_path / "latency.svg"
    assert _cli("plot", MNASNET, "--x", "latency", "--profile", path, "-o", out) == 0
    labels = set(texts(out))
    assert {"mnasnet0_5", "mnasnet1_0"} <= labels
    assert "mnasnet1_3" not in labels and "mnasnet0_75" not in labels
    assert "latency per batch (ms)" in labels


def test_plot_rejects_a_bad_profile_and_suffix(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert _cli("plot", B0, "--profile", bad, "-o", tmp_path / "x.svg") == 2
    assert "format archspec.profile/1" in capsys.readouterr().err
    assert _cli("plot", B0, "-o", tmp_path / "x.pdf") == 2
    assert "expected a file ending in .svg or .png" in capsys.readouterr().err


@pytest.mark.parametrize("spec", SHIPPED, ids=lambda p: p.stem)
def test_draw_every_spec(spec, tmp_path):
    valid = load_spec(spec)
    variants = list(scaling.named(valid))
    for variant in (variants[0], variants[-1]):
        out = tmp_path / f"{variant}.svg"
        assert _cli("draw", spec, "--variant", variant, "-o", out) == 0
        labels = texts(out)
        # A variant may bring its own table (MobileNetV3-Small); compound
        # variants all use the spec's.
        stages = len(valid.rows.get(variant, valid.rows.get("")))
        for i in range(1, stages + 1):
            assert f"stage {i}" in labels
        assert {"input", "stem", "head", "1000 classes"} <= set(labels)


def test_draw_b0_shows_table_1(tmp_path):
    """The boxes say what the EfficientNet paper's Table 1 says of B0."""
    out = tmp_path / "b0.svg"
    assert _cli("draw", B0, "--variant", "b0", "-o", out) == 0
    labels = texts(out)
    expected = [  # operator, kernel; repeats, channels; feature map (Table 1)
        ("MBConv1, 3x3, SE", "x1, 16 channels", "112x112x16"),
        ("MBConv6, 3x3, SE", "x2, 24 channels, first /2", "56x56x24"),
        ("MBConv6, 5x5, SE", "x2, 40 channels, first /2", "28x28x40"),
        ("MBConv6, 3x3, SE", "x3, 80 channels, first /2", "14x14x80"),
        ("MBConv6, 5x5, SE", "x3, 112 channels", "14x14x112"),
        ("MBConv6, 5x5, SE", "x4, 192 channels, first /2", "7x7x192"),
        ("MBConv6, 3x3, SE", "x1, 320 channels", "7x7x320"),
    ]
    for operator, detail, shape in expected:
        i = labels.index(detail)
        assert labels[i - 1] == operator and shape in labels
    assert "Conv3x3, 32, /2" in labels and "112x112x32" in labels
    assert "Conv1x1, 1280 → global avg pool → FC 1000" in labels
    assert any(label.startswith("EfficientNet-B0: 5.3M parameters") for label in labels)


def test_draw_resnet50_shows_its_stages(tmp_path):
    out = tmp_path / "r50.svg"
    assert _cli("draw", RESNET, "--variant", "resnet50", "-o", out) == 0
    labels = texts(out)
    assert "Conv7x7, 64, /2 → MaxPool3x3, /2" in labels and "56x56x64" in labels
    for repeats, channels, size in (
        (3, 256, 56),
        (4, 512, 28),
        (6, 1024, 14),
        (3, 2048, 7),
    ):
        assert any(
            label.startswith(f"x{repeats}, {channels} channels") for label in labels
        )
        assert f"{size}x{size}x{channels}" in labels
    assert labels.count("Bottleneck, 1x1-3x3-1x1, expansion 4") == 4


def test_figures_are_deterministic(tmp_path):
    for name in ("a.svg", "b.svg"):
        assert _cli("draw", B0, "--variant", "b3", "-o", tmp_path / name) == 0
        assert _cli("plot", B0, RESNET, "-o", tmp_path / f"plot_{name}") == 0
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()
    assert (tmp_path / "plot_a.svg").read_bytes() == (
        tmp_path / "plot_b.svg"
    ).read_bytes()
    assert b"<dc:date>" not in (tmp_path / "a.svg").read_bytes()


def test_png_is_not_blank(tmp_path):
    import numpy as np
    from matplotlib.image import imread

    for args in (("draw", RESNET, "--variant", "resnet50"), ("plot", B0, RESNET)):
        out = tmp_path / f"{args[0]}.png"
        assert _cli(*args, "-o", out) == 0
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = imread(out)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 300
        assert pixels.std() > 0.05  # not one flat colour
        colours = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)
        assert len(colours) > 20  # text, boxes or lines in several colours


def test_without_matplotlib_the_message_names_the_extra(tmp_path):
    # A matplotlib that cannot be imported, first on the path.
    blocked = tmp_path / "blocked" / "matplotlib"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('blocked for the test')\n")
    for args in (("plot", str(B0)), ("draw", str(B0), "--variant", "b0")):
        result = run_archspec(
            *args,
            "-o",
            str(tmp_path / "x.svg"),
            env={"PYTHONPATH": f"{blocked.parent}:{ROOT}"},
        )
        assert result.returncode == 2, result.stderr
        assert "pip install 'archspec[plot]'" in result.stderr
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "x.svg").exists()


def _figure_commands() -> list[list[str]]:
    text = (ROOT / "docs" / "cli.md").read_text()
    section = text.split("### The figures in these docs", 1)[1]
    block = re.search(r"```sh\n(.+?)\n```", section, re.S).group(1)
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def test_doc_figures_are_what_their_commands_write(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the commands name files relative to the checkout
    commands = _figure_commands()
    assert {c[1] for c in commands} == {"plot", "draw"}
    for command in commands:
        assert command[0] == "archspec"
        args = command[1:]
        at = args.index("-o") + 1
        checked_in = ROOT / args[at]
        args[at] = str(tmp_path / checked_in.name)
        assert _cli(*args) == 0
        assert (tmp_path / checked_in.name).read_bytes() == checked_in.read_bytes(), (
            f"{checked_in} is stale: run {' '.join(command)}"
        )
