"""Read a YAML spec into plain data plus the source position of every value.

ruamel.yaml's round-trip loader keeps line/column information; we copy the
document into plain dicts, lists and scalars and record, for each path such as
('stages', 'rows', 3, 2), where its value (and, for mapping entries, its key)
was written. `extends` chains are resolved here, so a value inherited from a
base spec still points into the base file.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import (
    CommentedMap,
    CommentedOrderedMap,
    CommentedSeq,
    CommentedSet,
    TaggedScalar,
)
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from .errors import Diagnostics, Position, SpecError, describe, format_path

DataPath = tuple[str | int, ...]

MAX_BYTES = 1 << 20  # a spec is a page of YAML; a megabyte is already absurd
MAX_VALUES = 100_000  # bounds alias expansion ("billion laughs")
MAX_EXTENDS_DEPTH = 16
MAX_NESTING = 64  # a spec nests 4 levels; ruamel's scanner is quadratic in depth


@dataclass
class Document:
    """A loaded spec: plain data with positions, after `extends` is applied."""

    data: Any
    file: str
    values: dict[DataPath, Position] = field(default_factory=dict)
    keys: dict[DataPath, Position] = field(default_factory=dict)

    def position(self, path: DataPath, *, key: bool = False) -> Position | None:
        """Where `path` was written, or the nearest enclosing value that was."""
        if key and path in self.keys:
            return self.keys[path]
        for end in range(len(path), -1, -1):
            if path[:end] in self.values:
                return self.values[path[:end]]
        return Position(self.file, 1, 1)


def load(path: str | os.PathLike, diagnostics: Diagnostics) -> Document:
    """Load a spec file and everything it extends; raise SpecError on bad input."""
    document = _load_with_extends(Path(path), diagnostics, chain=())
    diagnostics.raise_if_errors()
    return document


def _load_with_extends(
    path: Path, diagnostics: Diagnostics, chain: tuple[Path, ...]
) -> Document:
    document = load_file(path, diagnostics)
    data = document.data
    if not isinstance(data, dict) or "extends" not in data:
        return document
    where = document.position(("extends",))
    base_name = data.pop("extends")
    document.values.pop(("extends",), None)
    document.keys.pop(("extends",), None)
    if not isinstance(base_name, str) or not base_name:
        _fail(
            diagnostics,
            "expected the path of a base spec, found " + describe(base_name),
            where,
            "extends",
        )
    base_path = Path(os.path.normpath(path.parent / base_name))
    resolved = (*chain, path.resolve())
    if base_path.resolve() in resolved:
        cycle = " -> ".join(str(p.name) for p in (*resolved, base_path))
        _fail(diagnostics, f"extends cycle: {cycle}", where, "extends")
    if len(resolved) > MAX_EXTENDS_DEPTH:
        _fail(
            diagnostics,
            f"extends chain deeper than {MAX_EXTENDS_DEPTH}",
            where,
            "extends",
        )
    if not base_path.is_file():
        _fail(
            diagnostics,
            f"base spec {str(base_path)!r} does not exist",
            where,
            "extends",
        )
    base = _load_with_extends(base_path, diagnostics, resolved)
    if not isinstance(base.data, dict):
        return document  # the base's own error is already recorded
    merged = Document(_merge(base.data, data, (), base), document.file)
    merged.values = {**base.values, **document.values}
    merged.keys = {**base.keys, **document.keys}
    return merged


# Mappings that a child spec replaces as a whole: the variants a spec lists are
# its variants, not additions to its base's; its data transform is that of its
# own reference's weights.
WHOLE = {("scaling", "variants"), ("input", "data")}


def _merge(base: Any, child: Any, path: DataPath, base_doc: Document) -> Any:
    """Mappings merge key by key; anything else in the child replaces the base."""
    if isinstance(base, dict) and isinstance(child, dict) and path not in WHOLE:
        merged = dict(base)
        for key, value in child.items():
            merged[key] = (
                _merge(base[key], value, (*path, key), base_doc)
                if key in base
                else value
            )
        return merged
    # The base's positions below a replaced value would point at stale text.
    for table in (base_doc.values, base_doc.keys):
        for stale in [
            p for p in table if len(p) > len(path) and p[: len(path)] == path
        ]:
            del table[stale]
    return child


def load_file(path: Path, diagnostics: Diagnostics) -> Document:
    """Parse one YAML file (no `extends` handling)."""
    name = str(path)
    start = Position(name, 1, 1)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        _fail(diagnostics, f"cannot read file: {exc.strerror or exc}", start)
    if len(raw) > MAX_BYTES:
        _fail(
            diagnostics,
            f"file is {len(raw):,} bytes; a spec may be at most {MAX_BYTES:,}",
            start,
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        _fail(
            diagnostics,
            "expected UTF-8 text, found a binary or mis-encoded file",
            Position(name, line, column),
        )
    if "\x00" in text:
        _fail(
            diagnostics, "expected YAML text, found NUL bytes (a binary file?)", start
        )
    diagnostics.sources[name] = text
    if not text.strip() or all(
        not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()
    ):
        _fail(
            diagnostics, "the file is empty; expected a mapping of spec fields", start
        )

    deep = _too_deep(text)
    if deep:
        _fail(
            diagnostics,
            f"invalid YAML: brackets nested more than {MAX_NESTING} levels deep",
            Position(name, *deep),
        )

    yaml = YAML(typ="rt", pure=True)
    try:
        node = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Position(name, mark.line + 1, mark.column + 1) if mark else start
        parts = (
            [exc.context, exc.problem]
            if exc.context and "document" in str(exc.context)
            else [exc.problem or exc.context or "invalid YAML"]
        )
        problem = ", ".join(" ".join(str(p).split()) for p in parts)
        opened = exc.context_mark
        context = " ".join(str(exc.context or "").split())
        if opened and context.startswith(("while parsing", "while scanning")):
            # Unclosed brackets and quotes: say where the unfinished part began.
            problem += (
                f" ({context} that started at line {opened.line + 1}, "
                f"column {opened.column + 1})"
            )
        if "mapping values are not allowed" in problem:
            problem += " (a key indented wrongly, or ': ' in an unquoted value?)"
        if "'\\t'" in problem:
            problem += " (YAML indents with spaces, never tabs)"
        _fail(diagnostics, f"invalid YAML: {problem}", where)
    except RecursionError:
        # Deep block-style nesting (indentation) is bounded by MAX_BYTES only.
        _fail(diagnostics, "invalid YAML: nested too deeply to read", start)
    except (YAMLError, ValueError) as exc:
        _fail(diagnostics, f"invalid YAML: {exc}", start)
    except TypeError:
        # ruamel hashes complex keys (`? {a: [1]}`) while building the mapping
        # and fails on a list inside one; find that key from the node graph.
        _fail(
            diagnostics,
            "expected a text key, found a mapping or list used as a key",
            _complex_key(yaml, text, name) or start,
        )

    document = Document(None, name)
    walker = _Walker(document, diagnostics)
    document.data = walker.plain(node, (), start)
    diagnostics.raise_if_errors()
    if not isinstance(document.data, dict):
        _fail(
            diagnostics,
            f"expected a mapping of spec fields, found {describe(document.data)}",
            start,
        )
    return document


_UNTAGGED = {
    bytes: "!!binary",
    CommentedSet: "!!set",
    CommentedOrderedMap: "!!omap",
    list: "!!pairs",  # a plain list, where YAML sequences load as CommentedSeq
}


class _Walker:
    """Copies ruamel's nodes into plain Python values, recording positions."""

    def __init__(self, document: Document, diagnostics: Diagnostics):
        self.document = document
        self.diagnostics = diagnostics
        self.count = 0

    def plain(self, node: Any, path: DataPath, where: Position) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            _fail(
                self.diagnostics,
                f"document expands to more than {MAX_VALUES:,} values "
                "(nested anchors and aliases?)",
                where,
            )
        self.document.values.setdefault(path, where)
        tag = getattr(getattr(node, "tag", None), "value", None)
        # Only YAML's own tags for plain data; never a language-specific one.
        if isinstance(node, TaggedScalar) or (
            tag and (not tag.startswith("tag:yaml.org,2002:") or "python/" in tag)
        ):
            self.diagnostics.error(
                f"YAML tags are not allowed here, found {tag or node.tag.value!r}",
                where,
                format_path(path),
            )
            return None
        # !!binary, !!set, !!omap and !!pairs load without a tag to see.
        other = _UNTAGGED.get(type(node))
        if other:
            self.diagnostics.error(
                f"YAML tags are not allowed here, found {other!r}",
                where,
                format_path(path),
            )
            return None
        if isinstance(node, CommentedMap):
            return self._mapping(node, path)
        if isinstance(node, CommentedSeq):
            return [
                self.plain(item, (*path, i), self._at(node.lc.item(i), where))
                for i, item in enumerate(node)
            ]
        return _scalar(node)

    def _mapping(self, node: CommentedMap, path: DataPath) -> dict:
        result = {}
        for key in node:
            if not isinstance(key, str):
                self.diagnostics.error(
                    f"expected a text key, found {_key_kind(key)}",
                    self._at(node.lc.key(key)),
                    format_path(path),
                )
                continue
            child = (*path, key)
            if key in node.lc.data:
                self.document.keys[child] = self._at(node.lc.key(key))
                self.document.values[child] = self._at(node.lc.value(key))
            else:  # merged in by `<<: *anchor`: point at the mapping that merges
                here = self._at((node.lc.line, node.lc.col))
                self.document.keys[child] = self.document.values[child] = here
            result[key] = self.plain(node[key], child, self.document.values[child])
        return result

    def _at(
        self, line_column: tuple[int, int] | None, default: Position | None = None
    ) -> Position:
        if line_column is None:  # ruamel keeps no position for some nodes
            return default or Position(self.document.file, 1, 1)
        line, column = line_column
        return Position(self.document.file, line + 1, column + 1)


def _scalar(value: Any) -> Any:
    """ruamel's scalar subclasses -> builtins (they compare and hash the same)."""
    if isinstance(value, bool) or value is None:
        return value if value is None else bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def _too_deep(text: str) -> tuple[int, int] | None:
    """(line, column) of the first `[` or `{` nested deeper than MAX_NESTING.

    Checked before parsing: ruamel needs seconds for 10,000 nested `[` and then
    fails with a RecursionError. Brackets in comments are skipped; those inside
    quoted text are counted, which only matters for absurd specs.
    """
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return None
    depth = 0
    for number, line in enumerate(text.splitlines(), 1):
        for column, char in enumerate(line, 1):
            if char == "#" and (column == 1 or line[column - 2] in " \t"):
                break
            if char in "[{":
                depth += 1
                if depth > MAX_NESTING:
                    return number, column
            elif char in "]}":
                depth = max(0, depth - 1)
    return None


def _key_kind(key: Any) -> str:
    """ruamel gives a list key as a tuple and a mapping key as a CommentedKeyMap."""
    if isinstance(key, tuple):
        return "a list"
    if isinstance(key, dict) or hasattr(key, "items"):
        return "a mapping"
    return describe(key)


def _complex_key(yaml: YAML, text: str, name: str) -> Position | None:
    """Where the first mapping or list used as a mapping key starts."""
    from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

    try:
        root = yaml.compose(text)
    except Exception:  # the text loaded once already; this is best effort
        return None
    seen, todo = set(), [root]
    while todo:  # iterative and visiting each node once: aliases share nodes
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if not isinstance(key, ScalarNode):
                    mark = key.start_mark
                    return Position(name, mark.line + 1, mark.column + 1)
                todo.append(value)
        elif isinstance(node, SequenceNode):
            todo.extend(node.value)
    return None


def _fail(
    diagnostics: Diagnostics, message: str, where: Position | None, path: str = ""
):
    diagnostics.error(message, where, path)
    raise SpecError(diagnostics)
