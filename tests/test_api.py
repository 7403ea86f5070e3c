"""archspec.compile and archspec.create_model: the spec compiled in memory."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from helpers import RESNET, ROOT, SPECS

import archspec
from archspec import pipeline
from archspec.errors import SpecError


def doc_python(path: str, heading: str) -> str:
    """The ```python blocks of one section of a Markdown file (README.md,
    docs/*.md), joined in order."""
    text = (ROOT / path).read_text()
    level = heading.split(" ", 1)[0]
    section = text.split(f"\n{heading}\n", 1)[1]
    section = re.split(rf"\n{level} ", section, maxsplit=1)[0]
    blocks = re.findall(r"```python\n(.+?)\n```", section, re.S)
    assert blocks, heading
    return "\n\n".join(blocks)


def run_python(code: str, cwd=ROOT, timeout: int = 300) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_compile_gives_what_the_cli_writes(backend):
    """Every spec's first variant: the path and text of the checked-in module."""
    for spec in sorted(SPECS.glob("*.yaml")):
        files = archspec.compile(spec.relative_to(ROOT), backend=backend)
        ((path, source),) = files.items()
        assert path == f"generated/{backend}/{spec.stem}/{path.rsplit('/', 1)[1]}"
        assert (ROOT / path).read_text() == source, path


def test_compile_takes_a_network_and_a_variant():
    net = pipeline.network(pipeline.load_spec(RESNET), variant="resnet34")
    by_network = archspec.compile(net, backend="keras")
    assert by_network == archspec.compile(RESNET, "resnet34", "keras")
    assert list(by_network) == ["generated/keras/resnet/resnet34.py"]


def test_bad_input_is_a_spec_error():
    with pytest.raises(SpecError, match="no variant 'resnet19'; did you mean"):
        archspec.create_model(RESNET, "resnet19")
    with pytest.raises(SpecError, match="give a single variant"):
        archspec.compile(RESNET, "resnet18,resnet34")
    with pytest.raises(SpecError, match="unknown backend 'jaxx'"):
        archspec.compile(RESNET, "resnet18", "jaxx")
    with pytest.raises(SpecError, match=r"missing\.yaml"):
        archspec.compile(ROOT / "specs" / "missing.yaml")


def test_import_is_light_and_create_model_writes_nothing(tmp_path):
    """`import archspec` loads no framework (nor pydantic); compile loads no
    framework; create_model loads torch only, and writes no file."""
    out = run_python(
        "import sys, archspec\n"
        "heavy = lambda: sorted({m.split('.')[0] for m in sys.modules} & {'pydantic', 'torch', 'keras', 'tensorflow', 'jax'})\n"
        "print(heavy())\n"
        f"archspec.compile({str(RESNET)!r}, 'resnet18', 'keras')\n"
        "print(heavy())\n"
        f"model = archspec.create_model({str(RESNET)!r}, 'resnet18', num_classes=10)\n"
        "print(heavy(), type(model).__name__, model.classifier.out_features)\n",
        cwd=tmp_path,
    )
    assert out.splitlines() == [
        "[]",
        "['pydantic']",
        "['pydantic', 'torch'] ResNet18 10",
    ]
    assert list(tmp_path.iterdir()) == []


def test_create_model_is_the_generated_class():
    """The in-memory model has the checked-in module's parameters and computes
    its function; it pickles like an imported class."""
    import pickle

    import torch

    from generated.torch.resnet.resnet18 import ResNet18

    torch.manual_seed(0)
    ours = archspec.create_model(RESNET, "resnet18").eval()
    checked_in = ResNet18().eval()
    checked_in.load_state_dict(ours.state_dict())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), checked_in(x))
        assert torch.equal(pickle.loads(pickle.dumps(ours))(x), ours(x))


def test_readme_and_fine_tuning_examples_run():
    """README.md's Python API examples and docs/finetuning.md's fine-tuning
    and deployment examples, each in a namespace of its own, in one process:
    a process each imported torch, timm and TensorFlow twice (~12 s)."""
    sections = [
        ("README.md", "### From Python"),
        ("docs/finetuning.md", "## Examples"),
    ]
    run_python(
        "\n".join(
            f"exec(compile({doc_python(path, heading)!r}, {path!r}, 'exec'), {{}})"
            for path, heading in sections
        ),
        timeout=600,
    )
