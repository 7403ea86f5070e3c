"""Block kinds and backends from other packages, through entry points.

Entry points are scanned only for a name archspec does not build in (the scan
costs every compile time), and a plugin never replaces a built-in.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from pathlib import Path
from typing import Literal

import pytest
from helpers import B0, SPECS

import archspec
from archspec import analysis, backends, blocks
from archspec.blocks import registry
from archspec.blocks.mbconv import MBCONV, MBConvRow
from archspec.cli import main
from archspec.errors import Diagnostics, SpecError
from archspec.pipeline import load_spec, network


class FakeEntryPoint:
    def __init__(self, name: str, value: object) -> None:
        self.name, self.value = name, value

    def load(self) -> object:
        return self.value


@pytest.fixture
def plugins(monkeypatch):
    """Installed entry points, per group, with a record of every scan."""
    installed: dict[str, list[FakeEntryPoint]] = {}
    scans: list[str] = []

    def entry_points(*, group: str) -> list[FakeEntryPoint]:
        scans.append(group)
        return installed.get(group, [])

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(registry, "_kinds", dict(registry._kinds))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(backends, "_registered", {})
    return installed, scans


class FancyRow(MBConvRow):
    block: Literal["fancy"]


# A plugin's kind: its own name and row model, MBConv's IR node and builder.
FANCY = dataclasses.replace(MBCONV, name="fancy", row=FancyRow)


def spec_with_block(tmp_path: Path, kind: str) -> Path:
    text = B0.read_text().replace("- [mbconv, 6, 3, 2,  24", f"- [{kind}, 6, 3, 2,  24")
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_built_in_names_need_no_scan(plugins):
    _, scans = plugins
    net = network(load_spec(B0), 0)
    assert backends.get("torch").emit(net)
    assert scans == []


def test_a_block_kind_from_an_entry_point(plugins, tmp_path):
    installed, scans = plugins
    installed["archspec.blocks"] = [FakeEntryPoint("fancy", FANCY)]
    net = network(load_spec(spec_with_block(tmp_path, "fancy")), 0)
    assert scans == ["archspec.blocks"]
    assert "fancy" in blocks.names()
    # The plugin's kind built stage 2 exactly as mbconv builds it.
    assert net.stages == network(load_spec(B0), 0).stages


def test_an_unknown_block_kind_names_the_plugins_too(plugins, tmp_path):
    installed, _ = plugins
    installed["archspec.blocks"] = [FakeEntryPoint("fancy", FANCY)]
    diagnostics = Diagnostics()
    with pytest.raises(SpecError):
        load_spec(spec_with_block(tmp_path, "fancier"), diagnostics)
    (error,) = diagnostics.errors
    assert error.message.startswith("unknown block kind 'fancier'")
    assert error.message.endswith(
        "(known: basic, bottleneck, dense, fancy, fused_mbconv, mbconv, separable, "
        "transition)"
    )


def test_a_plugin_cannot_replace_a_built_in_block_kind(plugins, tmp_path):
    installed, _ = plugins
    impostor = dataclasses.replace(MBCONV, build=None)
    installed["archspec.blocks"] = [FakeEntryPoint("mbconv", impostor)]
    assert blocks.names() == [
        "basic",
        "bottleneck",
        "dense",
        "fused_mbconv",
        "mbconv",
        "separable",
        "transition",
    ]
    assert blocks.get("mbconv") is MBCONV


def test_a_backend_from_an_entry_point(plugins):
    installed, scans = plugins
    installed["archspec.backends"] = [
        FakeEntryPoint("torch", "tests:nothing"),  # never replaces the built-in
        FakeEntryPoint("mine", "archspec_keras:BACKEND"),
    ]
    assert backends.get("mine").name == "keras"
    assert scans == ["archspec.backends"]
    assert backends.get("torch").name == "torch"
    assert backends.names() == ["flax", "keras", "mine", "torch"]
    with pytest.raises(
        SpecError, match=r"unknown backend 'theirs' \(known: flax, keras, mine"
    ):
        backends.get("theirs")


class Mirror:
    """A third-party backend: PyTorch's code under its own name, used through
    a runtime adapter of its own (torch's, renamed), not through anything
    archspec knows of it."""

    name = "mirror"
    description = "PyTorch's module under another name (a test)"

    def emit(self, network):
        return backends.get("torch").emit(network)

    @property
    def runtime(self):
        from archspec_torch.runtime import TorchRuntime

        adapter = TorchRuntime()
        adapter.name = self.name  # it imports what this backend emits
        return adapter


class Bare:
    name = "bare"
    description = "a backend that compiles but has no runtime adapter"

    def emit(self, network):
        return {}


def test_a_plugin_backend_with_a_runtime_adapter_is_usable(plugins, tmp_path, capsys):
    """create_model, check --backends and weights convert find a registered
    backend's adapter by its name: a third backend needs nothing in archspec."""
    pytest.importorskip("torch")
    backends.register(Mirror())
    backends.register(Bare())
    spec = SPECS / "mobilenet_v2.yaml"
    net = network(load_spec(spec), variant="mobilenet_v2_035")
    model = archspec.create_model(net, backend="mirror", num_classes=7)
    assert type(model).__module__.startswith("_archspec_mirror_")
    assert model.classifier.out_features == 7
    with pytest.raises(SpecError, match="'bare' has no runtime adapter"):
        archspec.create_model(net, backend="bare")

    select = ["--spec", str(spec), "--variant", "mobilenet_v2_035"]
    pt, out = tmp_path / "w.pt", tmp_path / "w.safetensors"
    torch = pytest.importorskip("torch")
    torch.save(archspec.create_model(net).state_dict(), pt)
    code = main(["weights", "convert", *select, "--from", "torch", str(pt), "--to", "mirror", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert out.exists()

    code = main(["check", str(spec), "--variant", "mobilenet_v2_035", "--size", "32", "--backends", "torch,mirror"])  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.out[-2000:] + printed.err[-2000:]
    assert "torch against mirror, float32 on cpu" in printed.out
    # The same generated code on both sides: the same numbers, exactly.
    *_, row = (
        line for line in printed.out.splitlines() if line.startswith("MobileNetV2")
    )
    assert row.split()[-1] == "ok" and "0.0e+00" in row, row


PLAIN_SPEC = """\
name: vgg
class_name: VGG
input: {channels: 3, resolution: 32}
stem: {channels: 8, kernel: 3, stride: 1}
stages:
  columns: [block, channels, layers, stride, expand, kernel]
  rows:                     # expand is mbconv's own column: null on plain rows
    - [plain, 16, 2, 2, null, 3]
    - [mbconv, 16, 1, 1, 2, 3]
    - [plain, 24, 1, 2, null, 5]
head: {classes: 5}
defaults: {activation: relu, padding: symmetric}
scaling:
  rule: table
  variants:
    vgg1: {}
"""


def test_a_plugin_kind_brings_its_templates_to_both_backends(plugins, tmp_path):
    """Installed through the entry point, compiled by both backends with its
    own templates, and the two models are one function."""
    from plugin_kind import PLAIN

    from archspec.parity import Pair

    installed, _ = plugins
    installed["archspec.blocks"] = [FakeEntryPoint("plain", PLAIN)]
    spec = tmp_path / "vgg.yaml"
    spec.write_text(PLAIN_SPEC)
    net = network(load_spec(spec), variant="vgg1")
    assert [b.kind for b in net.blocks] == ["plain", "plain", "mbconv", "plain"]
    torch_source = backends.get("torch").emit(net)["vgg1.py"]
    keras_source = backends.get("keras").emit(net)["vgg1.py"]
    assert "class PlainBlock(nn.Module):" in torch_source
    assert "def plain(x, filters: int" in keras_source
    pair = Pair.build(net, tmp_path)
    count = sum(p.numel() for p in pair.torch_model.parameters())
    assert count == analysis.params(net) > 0
    for size in (32, 33):
        result = pair.compare(size)
        assert result.ok, result.rows


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_a_kind_without_a_template_is_written_from_its_graph(
    plugins, tmp_path, backend, capsys
):
    """A plugin kind that brings no template compiles through the generic
    emitter (its graph: here the chain its layers() lists)."""
    from plugin_kind import PLAIN

    installed, _ = plugins
    bare = dataclasses.replace(PLAIN, templates={})
    installed["archspec.blocks"] = [FakeEntryPoint("plain", bare)]
    spec = tmp_path / "vgg.yaml"
    spec.write_text(PLAIN_SPEC)
    code = main(
        ["compile", str(spec), "--backend", backend, "-o", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    (source,) = (tmp_path / "out").glob("*.py")
    text = source.read_text()
    assert "written from its graph" in text
    compile(text, str(source), "exec")
