"""Hardening: every bad input gets a clear error, nothing is lost, nothing
untrusted reaches the generated code.

- the broken-spec corpus covers every kind of bad input (tests/test_errors.py
  checks each case's exact messages; here, that the kinds are all there);
- bad command lines exit 2 with a message and no traceback;
- hypothesis mutates specs/b0.yaml, as data and as bytes: the only outcomes
  allowed are success or archspec's own `file:line:col: error:`;
- hostile names are refused, or compile to exactly the intended code;
- YAML bombs, huge files and deep nesting are refused quickly;
- a failed write leaves every existing file as it was and no temp file;
- compiling is deterministic across hash seeds and working folders.
"""

from __future__ import annotations

import ast
import copy
import errno
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers import B0, ROOT, run_archspec, run_here
from helpers import examples as scaled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from archspec import backends, output
from archspec.errors import SpecError
from archspec.pipeline import load_spec, network

BROKEN = ROOT / "tests" / "broken"
_TMP = tempfile.TemporaryDirectory(prefix="archspec-hardening-")
ERROR_LINE = re.compile(r"^\S.*:\d+:\d+: error: \S", re.M)

# CI-friendly fuzzing: fixed examples (derandomize), no per-example deadline.
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fuzz(examples: int) -> settings:
    return settings(FUZZ, max_examples=scaled(examples))


def run_main(*args: str) -> tuple[int, str, str]:
    """The CLI in-process: (exit code, stdout, stderr)."""
    result = run_here(*args)
    return result.returncode, result.stdout, result.stderr


def assert_own_error(code: int, err: str) -> None:
    """Exit 0, or 2 with archspec's positioned error; never a crash."""
    assert "Traceback" not in err and "internal error" not in err, err
    assert code in (0, 2), err
    if code == 2:
        assert ERROR_LINE.search(err), err


def extending_b0(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(f"extends: {B0.as_posix()}\n{text}", encoding="utf-8")
    return path


# 1. The corpus and the command line -----------------------------------------

REQUIRED_CASES = [
    "syntax_error",
    "syntax_unclosed_brace",
    "syntax_unclosed_quote",
    "syntax_bad_indent",
    "wrong_type",
    "wrong_type_list_for_number",
    "wrong_type_list_for_name",
    "wrong_type_mapping_for_number",
    "wrong_type_text_for_kernel",
    "list_for_table",
    "missing_field",
    "missing_block_column",
    "unknown_key",
    "unknown_key_nested",
    "unknown_key_top_level",
    "unknown_column",
    "stride_three",
    "even_kernel",
    "negative_channels",
    "se_ratio_too_big",
    "alpha_below_one",
    "resolution_zero",
    "classes_zero",
    "dropout_one",
    "row_too_short",
    "row_too_long",
    "extends_cycle",
    "missing_base",
    "duplicate_key",
    "empty",
    "comments_only",
    "not_a_mapping",
    "two_documents",
    "tab_indentation",
    "binary",
    "unknown_block_kind",
    "python_tag",
    "custom_tag",
    "alias_bomb",
    "deep_nesting",
    "complex_key",
    "expanded_bad_block",
    "expanded_hostile_module",
    "expanded_negative_channels",
    "expanded_keyword_names",
    "expanded_shadowing_names",
    "expanded_hostile_layer_name",
    "expanded_empty_stage",
]


def test_corpus_covers_every_kind_of_bad_input():
    cases = {p.stem for p in BROKEN.glob("*.expect")}
    assert len(cases) >= 45
    assert not set(REQUIRED_CASES) - cases
    for case in cases:
        assert (BROKEN / f"{case}.yaml").is_file(), case
        lines = (BROKEN / f"{case}.expect").read_text().splitlines()
        # Every expected line names line:column and says what was expected.
        assert lines and all(re.match(r"^(\S+:)?\d+:\d+: error: ", x) for x in lines)


def test_unknown_keys_suggest_the_right_one():
    for case, suggestion in [
        ("unknown_key", "channels"),
        ("unknown_key_nested", "alpha"),
        ("unknown_key_top_level", "regularization"),
        ("unknown_column", "stride"),
        ("unknown_block_kind", "mbconv"),
    ]:
        text = (BROKEN / f"{case}.expect").read_text()
        assert f"did you mean {suggestion!r}?" in text, case


def test_unclosed_brackets_and_quotes_say_where_they_opened():
    text = (BROKEN / "syntax_unclosed_brace.expect").read_text()
    assert "flow mapping that started at line 2, column 7" in text
    text = (BROKEN / "syntax_unclosed_quote.expect").read_text()
    assert "quoted scalar that started at line 1, column 7" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["compile", "specs/b0.yaml", "--phi", "-1"],
            "--phi: expected a number from 0",
        ),
        (["compile", "specs/b0.yaml", "--phi=-1"], "--phi: expected a number from 0"),
        (["compile", "specs/b0.yaml", "--phi", "abc"], "--phi: expected a number (3"),
        (["compile", "specs/b0.yaml", "--phi", "7-0"], "--phi: expected a number (3"),
        (["compile", "specs/b0.yaml", "--backend", "jaxx"], "unknown backend 'jaxx'"),
        (["validate", "tests/no_such_spec.yaml"], "cannot read file"),
        (["compile", "tests/no_such_spec.yaml"], "cannot read file"),
        (["validate", "specs"], "is a directory"),
        (["summary", "specs/b0.yaml", "--phi", "nan"], "--phi: expected a number"),
        (["summary", "specs/b0.yaml", "--phi", "1e999"], "--phi: expected a number"),
    ],
)
def test_bad_command_line_is_exit_2_with_a_message(args, message, tmp_path):
    if args[0] == "compile":
        args = [*args, "-o", str(tmp_path / "out")]
    result = run_archspec(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert not (tmp_path / "out").exists()


# 2. Fuzzing ------------------------------------------------------------------

B0_DATA = YAML(typ="safe", pure=True).load(B0.read_text())
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 2, 3, 7, 8, 65536, 65537, 1 << 20]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.25, 0.5, 0.999, 1.0, 1.5, 100.0, 1e-300]),
    st.text(max_size=12),
    st.sampled_from(["mbconv", "same", "symmetric", "silu", "avg", "compound", ""]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(["channels", "kind", "rows", "columns", "phi", "x"]),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=8,
)


def _paths(data, at=()):
    yield at
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, (*at, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _paths(value, (*at, i))


@st.composite
def mutated_specs(draw):
    """b0.yaml's data with 1-4 structural edits."""
    data = copy.deepcopy(B0_DATA)
    for _ in range(draw(st.integers(1, 4))):
        paths = list(_paths(data))[1:]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        key, target = path[-1], parent[path[-1]]
        op = draw(
            st.sampled_from(
                ["replace", "replace", "remove", "add_key", "extend", "cut", "nest"]
            )
        )
        if op == "replace":
            parent[key] = draw(VALUES)
        elif op == "remove":
            del parent[key]
        elif op == "add_key" and isinstance(target, dict):
            name = draw(st.sampled_from(["chanels", "extra", "kernal", "se", "rows"]))
            target[name] = draw(VALUES)
        elif op == "extend" and isinstance(target, list):
            target.append(
                draw(VALUES) if draw(st.booleans()) else copy.deepcopy(target[-1:])
            )
        elif op == "cut" and isinstance(target, list) and target:
            del target[draw(st.integers(0, len(target) - 1)) :]
        else:  # nest the value deeply
            parent[key] = draw(st.sampled_from([[[[target]]], {"x": {"y": target}}]))
    return data


@st.composite
def numeric_tweaks(draw):
    """b0.yaml with numbers moved to plausible but extreme values: these pass
    validation often, so expansion and the backend see them."""
    data = copy.deepcopy(B0_DATA)
    numbers = [
        p
        for p in _paths(data)
        if p
        and isinstance(_get(data, p), int | float)
        and not isinstance(_get(data, p), bool)
    ]
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(numbers))
        parent = _get(data, path[:-1])
        parent[path[-1]] = draw(
            st.sampled_from([0, 1, 2, 3, 5, 8, 15, 64, 100, 1024, 4096, 65536])
            | st.sampled_from([0.01, 0.5, 0.99, 1.0, 1.05, 2.0, 10.0, 99.0])
        )
    return data


def _get(data, path):
    for part in path:
        data = data[part]
    return data


def _dump(data) -> str:
    text = io.StringIO()
    YAML(typ="safe", pure=True).dump(data, text)
    return text.getvalue()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


TORCH = backends.get("torch")


def _expand_and_emit(path: Path, phis, emit: bool) -> None:
    """Expanding (and compiling) a valid spec ends in a network or a SpecError."""
    try:
        loaded = load_spec(path)
    except SpecError as exc:
        assert ERROR_LINE.search(str(exc)), str(exc)
        return
    for phi, formula in phis:
        try:
            net = network(loaded, phi, formula=formula)
        except SpecError as exc:
            assert ERROR_LINE.search(str(exc)), str(exc)
            continue
        if emit:
            (source,) = TORCH.emit(net).values()
            ast.parse(source)


@fuzz(300)
@given(data=mutated_specs())
def test_fuzz_structural_mutations(data, fuzz_dir):
    path = fuzz_dir / "structural.yaml"
    path.write_text(_dump(data), encoding="utf-8")
    assert_own_error(*run_main("validate", str(path))[::2])


@fuzz(150)
@given(
    data=numeric_tweaks(),
    phis=st.lists(
        st.tuples(st.sampled_from([0, 1, 2.5, 3, 7, 9.75, 16]), st.booleans()),
        min_size=1,
        max_size=3,
    ),
    emit=st.integers(0, 9),
)
def test_fuzz_numbers_through_expand_and_compile(data, phis, emit, fuzz_dir):
    path = fuzz_dir / "numbers.yaml"
    path.write_text(_dump(data), encoding="utf-8")
    assert_own_error(*run_main("validate", str(path))[::2])
    _expand_and_emit(path, phis, emit=emit == 0)  # compile one in ten (~50 ms)


TOKENS = [
    b"[", b"]", b"{", b"}", b":", b": ", b"- ", b"&a ", b"*a", b"!!str ", b"!x ",
    b"\t", b"\n", b'"', b"'", b"#", b"\xff", b"\x00", b"---\n", b"? ", b"|",
    b">", b"%YAML 1.2\n", b"\xef\xbb\xbf", b"\r", b"\\", b"\xe2\x80\x8b",
    b"<<: *a\n", b"@", b"`", b"~", b"0x1F", b".inf", b"1e999",
]  # fmt: skip
B0_BYTES = B0.read_bytes()


@st.composite
def byte_mutations(draw):
    data = bytearray(B0_BYTES)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        op = draw(
            st.sampled_from(["flip", "set", "insert", "delete", "truncate", "copy"])
        )
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(
                st.sampled_from(TOKENS) | st.binary(min_size=1, max_size=4)
            )
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 30))]
        elif op == "truncate":
            del data[at:]
        else:
            start = draw(st.integers(0, len(data)))
            data[at:at] = data[start : start + draw(st.integers(1, 60))]
    return bytes(data)


@fuzz(500)
@given(raw=byte_mutations())
def test_fuzz_byte_mutations(raw, fuzz_dir):
    path = fuzz_dir / "bytes.yaml"
    path.write_bytes(raw)
    code, _, err = run_main("validate", str(path))
    assert_own_error(code, err)
    if code == 0 and raw.count(b"\n") > 20:
        _expand_and_emit(path, [(0, False), (3, False)], emit=False)


# Regression tests for what the fuzzers found.


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("name: x\n? {a: [1]}\n: y\n", "3:3"),  # ruamel raised TypeError
        ("name: x\n? [1, 2]\n: y\n", "3:3"),
        ("name: x\n{a: 1}: y\n", "3:1"),
    ],
)
def test_complex_keys_are_an_error_not_a_crash(text, position, tmp_path):
    path = extending_b0(tmp_path, text)
    code, _, err = run_main("validate", str(path))
    assert code == 2
    assert f"spec.yaml:{position}: error: expected a text key, found a" in err
    assert "ordereddict" not in err and "(1, 2)" not in err  # no Python reprs


@pytest.mark.parametrize(
    ("text", "phi", "message"),
    [
        # 65,536 channels is valid; B7's width 2.0 made 131,072 (ValidationError).
        ("stem: {channels: 65536}\n", "7", "stem: phi 7: the scaled out_channels"),
        (
            "stages:\n  columns: [block, expand, kernel, stride, channels, layers]\n"
            "  rows:\n    - [mbconv, 64, 3, 1, 65536, 2]\n",
            "0",
            "stages[0]: phi 0: the scaled expanded_channels",
        ),
        (
            "scaling: {gamma: 100}\n",
            "3.5",
            "the scaled resolution would be 2,240,000,000",
        ),
        # alpha 100 at phi 2.5: 1.6 million blocks; expand never finished.
        ("scaling: {alpha: 100}\n", "2.5", "would have 1,600,000 blocks"),
        ("scaling: {alpha: 100}\n", "16", "archspec builds at most 4,096"),
    ],
)
def test_out_of_range_after_scaling_is_bad_input(text, phi, message, tmp_path):
    path = extending_b0(tmp_path, text)
    start = time.monotonic()
    code, _, err = run_main("summary", str(path), "--phi", phi)
    assert time.monotonic() - start < 5
    assert code == 2, err
    assert message in err and ERROR_LINE.search(err)
    assert "internal error" not in err


# 3. Hostile names ------------------------------------------------------------

HOSTILE = [
    'x"; import os; "',
    "x'\nimport os\n'",
    "__import__('os').system('id')",
    '"""',
    'x"""\nimport os\n"""',
    "x\\",
    "\\N{BEL}",
    "\u0435fficientnet",  # Cyrillic ie, looks like e
    "\uff45\uff46\uff46icient",  # fullwidth e, f, f
    "effi\u200dcient",  # zero-width joiner
    "import",
    "class",
    "None",
    "x" * 65,
    "",
    "a b",
    "${x}{{ x }}{% x %}",
]


def _quoted(value: str) -> str:
    """A YAML double-quoted scalar that loads back as exactly `value`."""
    return '"' + value.encode("unicode_escape").decode().replace('"', '\\"') + '"'


def _compile_to(path: Path, out: Path, *extra: str) -> tuple[int, str]:
    """Compile phi 0 of a spec (an expanded network brings its own phi)."""
    phi = [] if path.name == "net.yaml" else ["--phi", "0"]
    code, _, err = run_main("compile", str(path), *phi, "-o", str(out), *extra)
    assert "Traceback" not in err and "internal error" not in err, err
    return code, err


ALLOWED_CALLS = {
    # Everything the generated torch module calls; a hostile name that got into
    # the code as code would show up as a call to something else.
    "super", "isinstance", "range", "len", "enumerate",
    "ConvBNAct", "SqueezeExcitation", "Preprocess", "MBConv", "drop_path",
    "fold_batch_norm", "shifted_padding", "computing_layout", "layout_of",
    "stage",  # forward_intermediates(): `for i, stage in enumerate(stages)`
    # Folds kept between calls, timm's feature API, gradient checkpointing.
    "batch_norm_affine", "kept", "feature_take_indices", "checkpoint", "block",
    "compute", "all", "any", "zip", "max", "list", "int", "dict", "ValueError",
}  # fmt: skip


def check_generated(source: str, module_class: str) -> None:
    """Parse a generated torch module: the intended class and nothing smuggled."""
    tree = ast.parse(source)
    assert ast.get_docstring(tree)
    strings = [
        n
        for n in tree.body
        if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
    ]
    assert len(strings) == 1  # the docstring, and no other bare string
    imports = {
        a.name
        for n in tree.body
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    assert imports == {
        "math",
        "Callable",
        "torch",
        "torch.nn.functional",
        "nn",
        "checkpoint",
    }
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert classes == [
        "ConvBNAct",
        "SqueezeExcitation",
        "Preprocess",
        "MBConv",
        module_class,
    ]
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not names & {"os", "sys", "eval", "exec", "__import__", "open", "id"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id in ALLOWED_CALLS, node.func.id


@pytest.mark.parametrize("field", ["name", "class_name", "title"])
@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v)[:24])
def test_hostile_spec_names_are_refused_or_exactly_used(field, value, tmp_path):
    path = extending_b0(tmp_path, f"{field}: {_quoted(value)}\n")
    assert YAML(typ="safe", pure=True).load(path.read_text())[field] == value
    out = tmp_path / "out"
    code, err = _compile_to(path, out)
    if code == 2:
        assert re.search(rf"spec\.yaml:2:\d+: error: {field}: expected ", err), err
        assert not out.exists()
        return
    # Accepted: only plain ASCII words, and they land exactly where intended.
    assert code == 0, err
    assert re.fullmatch(r"[A-Za-z0-9 ]+", value), value
    module = f"{value}_b0" if field == "name" else "efficientnet_b0"
    (written,) = out.iterdir()
    assert written.name == f"{module}.py"
    source = written.read_text()
    check_generated(source, f"{value}B0" if field == "class_name" else "EfficientNetB0")
    title = value if field in ("title", "class_name") else "EfficientNet"
    assert source.startswith(f'"""{title}-B0 for PyTorch, generated by archspec')


def test_keywords_and_non_ascii_are_refused_where_they_would_be_code():
    refused = {
        field: [
            v
            for v in HOSTILE
            if run_main(
                "validate",
                str(extending_b0(Path(_TMP.name), f"{field}: {_quoted(v)}\n")),
            )[0]
            == 2
        ]
        for field in ("name", "class_name")
    }
    assert "import" in refused["name"] and "class" in refused["name"]
    for field in refused:  # every non-ASCII look-alike and every quote
        assert {v for v in HOSTILE if not v.isascii() or '"' in v or "'" in v} <= set(
            refused[field]
        )


@pytest.mark.parametrize(
    ("field", "value", "module", "class_name", "title"),
    [
        ("name", "x" * 64, "x" * 64 + "_b0", "EfficientNetB0", "EfficientNet-B0"),
        ("name", "class_", "class__b0", "EfficientNetB0", "EfficientNet-B0"),
        ("class_name", "None", "efficientnet_b0", "NoneB0", "None-B0"),
        ("class_name", "MBConv", "efficientnet_b0", "MBConvB0", "MBConv-B0"),
        (
            "title",
            "Import os. Net-2.0",
            "efficientnet_b0",
            "EfficientNetB0",
            "Import os. Net-2.0-B0",
        ),
    ],
)
def test_unusual_but_safe_names_compile_to_the_intended_code(
    field, value, module, class_name, title, tmp_path
):
    path = extending_b0(tmp_path, f"{field}: {_quoted(value)}\n")
    code, err = _compile_to(path, tmp_path)
    assert code == 0, err
    source = (tmp_path / f"{module}.py").read_text()
    check_generated(source, class_name)
    assert source.startswith(f'"""{title} for PyTorch, generated by archspec')


@pytest.fixture(scope="module")
def expanded_b0(tmp_path_factory) -> str:
    code, text, err = run_main("expand", str(B0), "--phi", "0")
    assert code == 0, err
    return text


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("module: efficientnet_b0", 'module: "x\'\\nimport os"', "module"),
        ("module: efficientnet_b0", "module: efficientnet_b0  # x", None),  # fine
        ("module: efficientnet_b0", "module: pad", "module"),  # shadows a keras helper
        ("module: efficientnet_b0", "module: import", "module"),
        ("class_name: EfficientNetB0", "class_name: True", "class_name"),
        ("class_name: EfficientNetB0", "class_name: F", "class_name"),
        ("class_name: EfficientNetB0", 'class_name: "E\\u0435B0"', "class_name"),
        ("class_name: EfficientNetB0", 'class_name: "EB0\\u200d"', "class_name"),
        ("title: EfficientNet-B0", 'title: "x\\"\\"\\"\\nimport os"', "title"),
        ("title: EfficientNet-B0", 'title: "x\\\\"', "title"),
        ("spec: b0.yaml", 'spec: "b0.yaml`\\nimport os"', "source.spec"),
        ("spec: b0.yaml", 'spec: "b0\'.yaml"', "source.spec"),
        ("name: stem,", 'name: "stem\\"); import os; (\\"",', "stem[0].name"),
        ("name: head,", "name: stem,", "head[0].name"),
        ("name: classifier,", "name: forward,", "head[3].name"),
        (
            "name: stages.0.0\n",
            "name: stages.0.0.__class__\n",
            "stages[0].blocks[0].name",
        ),
    ],
)
def test_hostile_expanded_networks_are_refused(old, new, path, expanded_b0, tmp_path):
    assert old in expanded_b0
    spec = tmp_path / "net.yaml"
    spec.write_text(expanded_b0.replace(old, new, 1), encoding="utf-8")
    out = tmp_path / "out"
    code, err = _compile_to(spec, out)
    if path is None:
        assert code == 0, err
        check_generated((out / "efficientnet_b0.py").read_text(), "EfficientNetB0")
        return
    assert code == 2, err
    assert re.search(rf"net\.yaml:\d+:\d+: error: {re.escape(path)}: expected ", err), (
        err
    )
    assert not out.exists()


def test_text_the_ir_allows_stays_inside_the_docstring(expanded_b0, tmp_path):
    """IR titles may hold `(`, `)`, `=` and `_`: harmless, and only in the docstring."""
    spec = tmp_path / "net.yaml"
    spec.write_text(
        expanded_b0.replace(
            "title: EfficientNet-B0", "title: __import__(os).system(id) = x"
        ).replace("spec: b0.yaml", "spec: __import__(os)"),
        encoding="utf-8",
    )
    code, err = _compile_to(spec, tmp_path / "out")
    assert code == 0, err
    source = (tmp_path / "out" / "efficientnet_b0.py").read_text()
    check_generated(source, "EfficientNetB0")
    assert "__import__(os).system(id) = x" in ast.get_docstring(ast.parse(source))


@pytest.mark.parametrize(
    ("filename", "shown"),
    [
        ("my spec.yaml", "my_spec.yaml"),
        ('it\'s "b0".yaml', "it_s__b0_.yaml"),
        ('tri"""ple.yaml', "tri___ple.yaml"),
        ("new\nline.yaml", "new_line.yaml"),
        ("back\\slash `x`.yaml", "back_slash__x_.yaml"),
        ("éfficient.yaml", "_fficient.yaml"),
    ],
)
def test_odd_spec_file_names_are_sanitised_in_the_header(filename, shown, tmp_path):
    try:
        path = tmp_path / filename
        path.write_bytes(B0_BYTES)
    except OSError:
        pytest.skip(f"the filesystem refuses {filename!r}")
    code, err = _compile_to(path, tmp_path / "out")
    assert code == 0, err
    source = (tmp_path / "out" / "efficientnet_b0.py").read_text()
    check_generated(source, "EfficientNetB0")
    doc = ast.get_docstring(ast.parse(source))
    assert f"Compiled from {shown} (published coefficients" in doc
    assert f"`archspec compile {shown} --variant b0 --backend torch`" in doc


# 4. Safe YAML ----------------------------------------------------------------


def test_python_and_custom_tags_are_refused(tmp_path):
    for tag in [
        "!!python/object/apply:os.system ['id']",
        "!!python/name:os.system",
        "!!binary aGk=",
        "!!set {a, b}",
        "!!omap [a: 1]",
        "!!pairs [a: 1]",
        "!!str efficientnet",
        "!include other.yaml",
        "!<tag:example.com,2000:x> y",
    ]:
        path = extending_b0(tmp_path, f"name: {tag}\n")
        code, _, err = run_main("validate", str(path))
        assert code == 2, tag
        assert "spec.yaml:2:7: error: name: YAML tags are not allowed here" in err, tag


BOUNDED = """
import resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from archspec.cli import main
start = time.process_time()
code = main(["validate", sys.argv[1]])
print(f"seconds={time.process_time() - start:.3f}", file=sys.stderr)
sys.exit(code)
"""


def run_bounded(path: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Validate in a process limited to 1 GiB of address space; the seconds
    are its CPU time, which the other tests running beside it do not move
    (wall time did: 2.2 s on a loaded machine for a 0.3 s validation)."""
    result = subprocess.run(
        [sys.executable, "-c", BOUNDED, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    seconds = re.search(r"seconds=([\d.]+)", result.stderr)
    assert seconds, result.stderr
    return result, float(seconds.group(1))


def test_alias_bomb_is_refused_quickly_in_bounded_memory(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    result, seconds = run_bounded(path)
    assert result.returncode == 2, result.stderr
    assert "error: document expands to more than 100,000 values" in result.stderr
    assert "MemoryError" not in result.stderr and "Traceback" not in result.stderr
    assert seconds < 2


def test_merge_key_bomb_is_refused(tmp_path):
    lines = ["m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8}"]
    lines += [
        f"m{i}: &m{i} [{', '.join([f'*m{i - 1}'] * 10)}]" for i in range(1, 8)
    ] + ["x: {<<: *m0}"]
    path = tmp_path / "merge.yaml"
    path.write_text("\n".join(lines) + "\n")
    result, seconds = run_bounded(path)
    assert result.returncode == 2 and seconds < 2, result.stderr
    assert "error: document expands to more than 100,000 values" in result.stderr


def test_huge_file_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_bytes(B0_BYTES + b"# padding\n" * 110_000)
    assert path.stat().st_size > 1 << 20
    start = time.monotonic()
    code, _, err = run_main("validate", str(path))
    assert time.monotonic() - start < 2
    assert code == 2
    assert re.search(
        r"huge\.yaml:1:1: error: file is 1,\d{3},\d{3} bytes; a spec may be at most 1,048,576",
        err,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: " + "[" * 10_000 + "]" * 10_000, "brackets nested more than 64 levels"),
        ("name: " + "[" * 10_000, "brackets nested more than 64 levels"),
        ("name: " + "{a: " * 5_000 + "1" + "}" * 5_000, "brackets nested more than 64"),
        ("".join(" " * i + "k:\n" for i in range(1_400)), "nested too deeply to read"),
    ],
    ids=["closed", "unclosed", "mappings", "indented"],
)
def test_deep_nesting_is_refused_not_a_recursion_error(text, message, tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text(text + "\n")
    result, seconds = run_bounded(path)
    assert result.returncode == 2, result.stderr
    assert re.search(
        rf"deep\.yaml:\d+:\d+: error: invalid YAML: {message}", result.stderr
    )
    assert "RecursionError" not in result.stderr and "Traceback" not in result.stderr
    assert seconds < 2


def test_nesting_inside_comments_and_modest_nesting_are_fine(tmp_path):
    path = extending_b0(
        tmp_path, "# " + "[" * 100 + "\nname: efficientnet  # " + "{" * 100 + "\n"
    )
    assert run_main("validate", str(path))[0] == 0
    path = extending_b0(tmp_path, "input: {preprocess: {mean: [[[[1]]]]}}\n")
    code, _, err = run_main("validate", str(path))
    assert code == 2 and "input.preprocess.mean[0]: expected a valid number" in err


# 5. Nothing lost -------------------------------------------------------------


@pytest.fixture
def three_files(tmp_path) -> tuple[dict[Path, str], dict[Path, bytes]]:
    """New contents for three files, two of which exist with old contents."""
    folder = tmp_path / "gen"
    folder.mkdir()
    files = {folder / f"m{i}.py": f"new {i}\n" * 100 for i in range(3)}
    old = {}
    for path in list(files)[:2]:
        path.write_bytes(b"old \xff\n")  # not even UTF-8
        old[path] = path.read_bytes()
    return files, old


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_write_all_writes_everything(three_files):
    files, _ = three_files
    assert output.write_all(files) == list(files)
    assert all(p.read_text() == text for p, text in files.items())
    assert output.write_all(files) == []  # unchanged: nothing rewritten
    assert not leftovers(next(iter(files)).parent)


def test_disk_full_while_staging_changes_nothing(three_files, monkeypatch):
    files, old = three_files
    real_fdopen, opened = os.fdopen, []

    def fdopen(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        opened.append(handle)
        if len(opened) == 2:  # the second file's write fails: ENOSPC

            def write(text):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            handle.write = write
        return handle

    monkeypatch.setattr(output.os, "fdopen", fdopen)
    with pytest.raises(output.WriteError) as caught:
        output.write_all(files)
    assert caught.value.written == []
    assert "m1.py: No space left on device; no file was changed" in str(caught.value)
    assert {p: p.read_bytes() for p in old} == old
    assert not list(files)[2].exists()
    assert not leftovers(next(iter(files)).parent)


def test_no_permission_to_create_temp_changes_nothing(three_files, monkeypatch):
    files, old = three_files
    real, calls = output.tempfile.mkstemp, []

    def mkstemp(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir"))
        return real(*args, **kwargs)

    monkeypatch.setattr(output.tempfile, "mkstemp", mkstemp)
    with pytest.raises(
        output.WriteError, match="Permission denied; no file was changed"
    ):
        output.write_all(files)
    assert {p: p.read_bytes() for p in old} == old
    assert not leftovers(next(iter(files)).parent)


def test_interrupt_while_staging_leaves_no_temp_file(three_files, monkeypatch):
    files, old = three_files
    real, calls = output.tempfile.mkstemp, []

    def mkstemp(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(output.tempfile, "mkstemp", mkstemp)
    with pytest.raises(KeyboardInterrupt):
        output.write_all(files)
    assert {p: p.read_bytes() for p in old} == old
    assert not leftovers(next(iter(files)).parent)


def test_rename_failing_part_way_reports_what_was_written(three_files, monkeypatch):
    files, old = three_files
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(output.os, "replace", replace)
    with pytest.raises(output.WriteError) as caught:
        output.write_all(files)
    first, second, third = files
    assert caught.value.written == [first]
    assert first.read_text() == files[first]
    assert second.read_bytes() == old[second]
    assert not third.exists()
    assert not leftovers(first.parent)


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def test_cli_says_which_files_were_written_when_a_rename_fails(tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert run_main("compile", str(B0), "--phi", "0,1", "-o", str(out))[0] == 0
    (out / "efficientnet_b0.py").write_text("old b0\n")
    (out / "efficientnet_b1.py").write_text("old b1\n")
    real = os.replace

    def replace(src, dst):
        if str(dst).endswith("b1.py"):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(src, dst)

    monkeypatch.setattr(output.os, "replace", replace)
    code, _, err = run_main("compile", str(B0), "--phi", "0,1", "-o", str(out))
    assert code == 2
    assert "Traceback" not in err
    assert (
        f"error: cannot replace {out / 'efficientnet_b1.py'}: Read-only file system"
        in err
    )
    assert f"files written before the failure: {out / 'efficientnet_b0.py'}" in err
    assert (out / "efficientnet_b1.py").read_text() == "old b1\n"
    assert not leftovers(out)


def test_cli_disk_full_changes_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "efficientnet_b0.py").write_text("old b0\n")
    before = _snapshot(out)
    real = os.fdopen

    def fdopen(fd, *args, **kwargs):
        handle = real(fd, *args, **kwargs)
        handle.write = lambda text: (_ for _ in ()).throw(
            OSError(errno.ENOSPC, "No space left on device")
        )
        return handle

    monkeypatch.setattr(output.os, "fdopen", fdopen)
    code, _, err = run_main("compile", str(B0), "--phi", "0-2", "-o", str(out))
    assert code == 2 and "Traceback" not in err
    assert "No space left on device; no file was changed" in err
    assert "files written before the failure: none" in err
    assert _snapshot(out) == before


@pytest.mark.parametrize("state", ["up to date", "stale", "missing", "not utf-8"])
def test_check_never_writes(state, tmp_path):
    out = tmp_path / "out"
    if state != "missing":
        assert run_main("compile", str(B0), "--phi", "0,1", "-o", str(out))[0] == 0
    if state == "stale":
        (out / "efficientnet_b1.py").write_text("# edited\n")
    if state == "not utf-8":
        (out / "efficientnet_b1.py").write_bytes(b"\xff\xfe\n")
    before = _snapshot(out) if out.exists() else None
    time.sleep(0.01)
    code, stdout, err = run_main(
        "compile", str(B0), "--phi", "0,1", "-o", str(out), "--check"
    )
    assert "Traceback" not in err and "internal error" not in err
    assert code == (0 if state == "up to date" else 1), err
    if state == "missing":
        assert not out.exists()
        assert "efficientnet_b0.py is missing" in stdout or "+++" in stdout
    else:
        assert _snapshot(out) == before
        assert not leftovers(out)


def test_a_bad_variant_in_a_range_writes_nothing(tmp_path):
    out = tmp_path / "out"
    code, _, err = run_main("compile", str(B0), "--phi", "0,3,99", "-o", str(out))
    assert code == 2 and "--phi: expected a number from 0 to 16, found 99" in err
    assert not out.exists()
    assert run_main("compile", str(B0), "--phi", "0", "-o", str(out))[0] == 0
    before = _snapshot(out)
    code, _, err = run_main("compile", str(B0), "--phi", "0,3,99", "-o", str(out))
    assert code == 2
    assert _snapshot(out) == before  # b0 untouched, b3 not written


# 6. Determinism --------------------------------------------------------------

COMPILE_ALL = """
import sys
from pathlib import Path
from archspec.cli import main
for backend in sys.argv[2:]:
    code = main(["compile", sys.argv[1], "--phi", "0-7", "--backend", backend,
                 "-o", str(Path("out") / backend)])
    assert code == 0, backend
"""


def _keras_ready() -> bool:
    try:
        backends.get("keras")
    except Exception:
        return False
    return True


def test_compiling_is_deterministic(tmp_path):
    names = ["torch", "keras"] if _keras_ready() else ["torch"]
    trees = []
    for seed, folder in (("1", "first"), ("4242", "second/nested")):
        cwd = tmp_path / folder
        cwd.mkdir(parents=True)
        result = subprocess.run(
            [sys.executable, "-c", COMPILE_ALL, str(B0), *names],
            cwd=cwd,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)},
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        out = cwd / "out"
        trees.append(
            {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*.py")}
        )
    assert len(trees[0]) == 8 * len(names)
    assert trees[0] == trees[1]


def test_emit_is_pure():
    """Emitting the same network twice, or after others, gives the same text."""
    loaded = load_spec(B0)
    first = TORCH.emit(network(loaded, 3))
    for phi in (0, 7, 2.5):
        TORCH.emit(network(loaded, phi))
    assert TORCH.emit(network(loaded, 3)) == first


def test_written_files_get_ordinary_permissions(tmp_path):
    """Staging through mkstemp must not leave generated files private (0600)."""
    import os
    import stat

    from archspec.output import write_all

    new, old = tmp_path / "new.py", tmp_path / "old.py"
    old.write_text("x = 1\n")
    old.chmod(0o640)
    umask = os.umask(0o022)
    try:
        write_all({new: "y = 2\n", old: "x = 2\n"})
    finally:
        os.umask(umask)
    assert stat.S_IMODE(new.stat().st_mode) == 0o644
    assert stat.S_IMODE(old.stat().st_mode) == 0o640
