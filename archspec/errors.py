"""Diagnostics: every problem archspec reports names a file position and a path.

Errors are collected, not raised one by one, so a user sees all of a file's
problems in one run. `SpecError` carries them out of the pipeline; the CLI
renders them (with the offending source line) and exits 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Position:
    """A 1-based line and column in a source file."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Diagnostic:
    message: str
    position: Position | None = None
    path: str = ""
    severity: Severity = "error"

    def render(self, sources: dict[str, str] | None = None) -> str:
        where = f"{self.position}: " if self.position else ""
        what = f"{self.path}: " if self.path else ""
        text = f"{where}{self.severity}: {what}{self.message}"
        excerpt = _excerpt(self.position, sources or {})
        return f"{text}\n{excerpt}" if excerpt else text


def _excerpt(position: Position | None, sources: dict[str, str]) -> str:
    """The source line under a position with a caret, as compilers show it."""
    if position is None or position.file not in sources:
        return ""
    lines = sources[position.file].splitlines()
    if not 1 <= position.line <= len(lines):
        return ""
    line = lines[position.line - 1]
    if len(line) > 160:  # a minified or binary-ish line: the position says enough
        return ""
    gutter = f"{position.line:>5} | "
    caret = " " * (len(gutter) - 2) + "| " + " " * (position.column - 1) + "^"
    return f"{gutter}{line}\n{caret}"


@dataclass
class Diagnostics:
    """An ordered collection that the pipeline stages append to."""

    items: list[Diagnostic] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

    def error(self, message: str, position: Position | None = None, path: str = ""):
        # A base-table cell is validated once per variant: report it once.
        found = Diagnostic(message, position, path)
        if found not in self.items:
            self.items.append(found)

    def warning(self, message: str, position: Position | None = None, path: str = ""):
        self.items.append(Diagnostic(message, position, path, "warning"))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "warning"]

    def raise_if_errors(self) -> None:
        if self.errors:
            raise SpecError(self)


class SpecError(Exception):
    """Bad input: the CLI prints the diagnostics and exits 2."""

    def __init__(self, diagnostics: Diagnostics | Diagnostic | str):
        if isinstance(diagnostics, str):
            diagnostics = Diagnostic(diagnostics)
        if isinstance(diagnostics, Diagnostic):
            diagnostics = Diagnostics([diagnostics])
        self.diagnostics = diagnostics
        super().__init__(self.render())

    def render(self) -> str:
        errors = sorted(self.diagnostics.errors or self.diagnostics.items, key=_order)
        return "\n".join(d.render(self.diagnostics.sources) for d in errors)


def describe(value: object) -> str:
    """A found value, as messages print it: short, and never a Python internal."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _order(d: Diagnostic) -> tuple:
    p = d.position
    return (0, p.file, p.line, p.column) if p else (1, "", 0, 0)


def format_path(path: tuple[str | int, ...]) -> str:
    """('stages', 3, 'stride') -> 'stages[3].stride'."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text
