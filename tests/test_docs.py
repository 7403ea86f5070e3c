"""The docs cannot rot.

docs/blocks.md: every ```yaml block of the page is one of
- an excerpt of a shipped spec (first line `# specs/NAME.yaml`): each key it
  shows equals the spec's, and its block definitions compile spliced into a
  small spec;
- an excerpt of a command's output (first line `# archspec ...`): each line
  but `# ...` (what the excerpt leaves out) is a line the command prints;
- a complete spec (it has `scaling`): it validates, and every variant
  compiles in both backends;
- block definitions alone (only `blocks`): spliced into a small spec, they
  compile in both backends, at stride 1 and 2 and with the width changing.
Every ```python block is such an excerpt of generated code. A block that is
none of these fails the test. Every ```text block that
starts with `$ archspec` is run, and its output must be the rest of the
block, exactly.

docs/backends.md: the example backend runs. README.md and docs/*.md: every
relative link reaches a file, and a heading where it names one. (The
README's and docs/finetuning.md's Python examples run in tests/test_api.py,
the figure commands of docs/cli.md in tests/test_figures.py.)
"""

from __future__ import annotations

import ast
import io
import json
import re
import shlex
import subprocess
import sys

import pytest
from helpers import ROOT, run_archspec
from ruamel.yaml import YAML

import archspec
from archspec import analysis, pipeline, scaling

DOC = ROOT / "docs" / "blocks.md"
BACKENDS = ("torch", "keras")


def fenced(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)\n```$", DOC.read_text(), re.M | re.S)


def load(text: str):
    return YAML(typ="safe", pure=True).load(io.StringIO(text))


def first_line(text: str) -> str:
    return text.splitlines()[0]


def classify(text: str) -> str:
    head = first_line(text)
    if head.startswith("# specs/"):
        return "excerpt"
    if head.startswith("# archspec "):
        return "output"
    data = load(text)
    if isinstance(data, dict) and "scaling" in data:
        return "spec"
    if isinstance(data, dict) and set(data) == {"blocks"}:
        return "blocks"
    return "unknown"


def yaml_blocks(kind: str) -> list[str]:
    return [text for text in fenced("yaml") if classify(text) == kind]


def ids(blocks: list[str]) -> list[str]:
    """Each block's first line and its place on the page."""
    every = fenced("yaml") + fenced("python") + fenced("text")
    return [f"{every.index(b)}:{first_line(b)[:40]}" for b in blocks]


EXCERPTS, SPECS_SHOWN = yaml_blocks("excerpt"), yaml_blocks("spec")
# Command outputs, in excerpt: YAML (`archspec expand`) and generated code.
OUTPUTS = yaml_blocks("output") + fenced("python")
# Block definitions, shown alone or in an excerpt of a shipped spec. Cells
# (kinds that read prev or call other kinds) need their spec's stage table
# and ops: their excerpts equal the shipped spec, which compiles
# (test_generated.py).
DEFINITIONS = [
    text
    for text in EXCERPTS + yaml_blocks("blocks")
    if "blocks" in load(text) and not re.search(r"\bprev\b|op: sep_conv", text)
]
SESSIONS = [t for t in fenced("text") if t.startswith("$ archspec ")]


def test_every_yaml_block_is_checked():
    unchecked = yaml_blocks("unknown") + [
        code for code in fenced("python") if not code.startswith("# archspec ")
    ]
    assert not unchecked, f"a block test_docs.py cannot check:\n{unchecked[0]}"
    assert EXCERPTS and OUTPUTS and SPECS_SHOWN and DEFINITIONS and SESSIONS


def compiles(path) -> None:
    """Every variant, in both backends, to source Python can parse."""
    for variant in scaling.named(pipeline.load_spec(path)):
        for backend in BACKENDS:
            for name, source in archspec.compile(path, variant, backend).items():
                ast.parse(source, filename=name)


def splice(definitions: dict, tmp_path):
    """The definitions in a small spec: one variant per kind, two stages (the
    second strides and doubles the width), two blocks each."""
    spec = {
        "name": "doc",
        "class_name": "Doc",
        "input": {"channels": 3, "resolution": 32},
        "stem": {"channels": 16, "kernel": 3, "stride": 2},
        "blocks": definitions,
        "stages": {
            "columns": ["channels", "layers", "stride"],
            "rows": [[16, 2, 1], [32, 2, 2]],
        },
        "head": {"classes": 10},
        "defaults": {"activation": "relu", "padding": "symmetric"},
        "scaling": {
            "rule": "table",
            "variants": {
                f"doc_{kind}": {"set": {"block": kind}} for kind in definitions
            },
        },
    }
    path = tmp_path / "spliced.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML, and keeps the nodes' order
    return path


@pytest.mark.parametrize("text", EXCERPTS, ids=ids(EXCERPTS))
def test_spec_excerpts_are_the_shipped_specs(text):
    spec = load((ROOT / first_line(text)[2:]).read_text())
    for key, value in load(text).items():
        if key == "blocks":  # the kinds shown, each exactly as the spec has it
            for kind, definition in value.items():
                assert definition == spec["blocks"][kind], kind
        else:
            assert value == spec[key], key


README_EXCERPTS = [
    text
    for text in re.findall(
        r"^```yaml\n(.*?)\n```$", (ROOT / "README.md").read_text(), re.M | re.S
    )
    if classify(text) == "excerpt"
]


@pytest.mark.parametrize("text", README_EXCERPTS)
def test_readme_excerpts_are_the_shipped_specs(text):
    test_spec_excerpts_are_the_shipped_specs(text)


@pytest.mark.parametrize("text", DEFINITIONS, ids=ids(DEFINITIONS))
def test_block_definitions_compile(text, tmp_path):
    compiles(splice(load(text)["blocks"], tmp_path))


@pytest.mark.parametrize("text", SPECS_SHOWN, ids=ids(SPECS_SHOWN))
def test_complete_specs_validate_and_compile(text, tmp_path):
    path = tmp_path / "doc.yaml"
    path.write_text(text + "\n")
    result = run_archspec("validate", str(path))
    assert result.returncode == 0, result.stderr
    compiles(path)


def test_the_complete_spec_has_the_parameters_the_page_gives(tmp_path):
    (text,) = SPECS_SHOWN
    path = tmp_path / "doc.yaml"
    path.write_text(text + "\n")
    claimed = re.search(r"gives ([\d,]+)\nparameters for `(\w+)`", DOC.read_text())
    count, variant = int(claimed[1].replace(",", "")), claimed[2]
    net = pipeline.network(pipeline.load_spec(path), variant=variant)
    assert analysis.params(net) == count


@pytest.mark.parametrize("text", OUTPUTS, ids=ids(OUTPUTS))
def test_output_excerpts_are_what_the_command_prints(text):
    command = shlex.split(first_line(text)[2:])
    assert command[0] == "archspec"
    result = run_archspec(*command[1:])
    assert result.returncode == 0, result.stderr
    printed = {line.strip() for line in result.stdout.splitlines()}
    for line in text.splitlines()[1:]:
        if line.strip() and not line.strip().startswith("# ..."):
            assert line.strip() in printed, line


@pytest.mark.parametrize("text", SESSIONS, ids=ids(SESSIONS))
def test_command_outputs_are_what_archspec_prints(text):
    command, *expected = text.splitlines()
    result = run_archspec(*shlex.split(command[2:])[1:])
    printed = (result.stdout + result.stderr).rstrip("\n").splitlines()
    assert [line.rstrip() for line in printed] == [line.rstrip() for line in expected]
    assert result.returncode == (
        2 if any(": error: " in line for line in expected) else 0
    )


def section(path: str, heading: str) -> str:
    """A section of a Markdown file, up to the next heading of its level or
    above."""
    text = (ROOT / path).read_text()
    level = len(heading) - len(heading.lstrip("#"))
    body = text.split(f"\n{heading}\n", 1)[1]
    return re.split(rf"\n#{{1,{level}}} ", body, maxsplit=1)[0]


def test_the_example_backend_runs():
    code = re.findall(
        r"^```python\n(.*?)\n```$",
        section("docs/backends.md", "### An example backend"),
        re.M | re.S,
    )
    assert len(code) == 1
    result = subprocess.run(
        [sys.executable, "-c", code[0]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_links_reach_files_and_headings(page):
    text = re.sub(r"^```.*?^```$", "", page.read_text(), flags=re.M | re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"\w+://", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target}"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.M)
            assert anchor in {slug(h) for h in headings}, f"{page.name}: {target}"
