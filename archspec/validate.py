"""Spec validation: pydantic models applied to a loaded spec, errors mapped
to positions.

Validation runs in two passes so that every error of a file is reported at
once: the spec's own fields, then each stage row against the model of the
block kind it names. Every pydantic error becomes a Diagnostic
(archspec.diagnose). Expanded networks are read back in archspec.network_file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import blocks
from .blocks import StageRow
from .blocks import graph as defined_blocks
from .diagnose import check, did_you_mean
from .errors import Diagnostics, describe, format_path
from .source import DataPath, Document
from .spec import PublishedVariant, Spec

# The compound-scaling constraint of the paper: alpha * beta^2 * gamma^2 ~= 2.
FLOPS_FACTOR_TARGET = 2.0
FLOPS_FACTOR_TOLERANCE = 0.1  # relative; the paper's grid search found 1.92


@dataclass(frozen=True)
class ValidSpec:
    """A spec that passed validation, with its tables parsed.

    `rows` holds the stage table as each variant uses it: key "" for the
    spec's own table (compound and width rules), a variant's name for the
    table with that variant's changes applied (table and width rules).
    """

    spec: Spec
    rows: dict[str, tuple[StageRow, ...]]
    published: dict[int, PublishedVariant]
    document: Document
    # Block kinds the spec defines (`blocks:`), by name.
    kinds: Mapping[str, blocks.BlockKind] = dataclasses.field(default_factory=dict)


def validate_spec(document: Document, diagnostics: Diagnostics) -> ValidSpec:
    data = document.data
    kinds = _defined_kinds(data, document, diagnostics)
    with blocks.defined(kinds):
        rows = _all_rows(data, document, diagnostics)
    published = _published(data, document, diagnostics)
    spec = check(Spec, data, document, diagnostics)
    diagnostics.raise_if_errors()
    assert spec is not None and rows is not None
    _semantic_checks(spec, published, document, diagnostics)
    diagnostics.raise_if_errors()
    return ValidSpec(
        spec, rows, published, document, {k: v for k, v in kinds.items() if v}
    )


def _defined_kinds(
    data: Any, document: Document, diagnostics: Diagnostics
) -> dict[str, blocks.BlockKind]:
    """The kinds of the spec's `blocks:` section; every mistake in a
    definition is reported, each at its value."""
    section = data.get("blocks") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        return {}  # absent, or the Spec model reports its shape
    kinds: dict[str, blocks.BlockKind | None] = {}
    definitions: dict[str, defined_blocks.BlockDef | None] = {}
    for name, entry in section.items():
        at = ("blocks", name)
        definitions[name] = check(
            defined_blocks.BlockDef, entry, document, diagnostics, at=at
        )
    # Kinds may use each other as ops (not round in a circle).
    cycle = defined_blocks.call_cycle({k: v for k, v in definitions.items() if v})
    if cycle:
        at = ("blocks", cycle[0])
        diagnostics.error(
            f"kinds that use each other as ops: {' -> '.join([*cycle, cycle[0]])}",
            document.position(at),
            format_path(at),
        )
        return {name: None for name in definitions}
    defined = {
        name: defined_blocks.Defined(
            d, defined_blocks.Where(document.position, ("blocks", name))
        )
        for name, d in definitions.items()
        if d is not None
    }
    for name, definition in definitions.items():
        at = ("blocks", name)
        if definition is None:
            kinds[name] = None
            continue
        problems = defined_blocks.check_definition(
            str(name), definition, at, definitions
        )
        for path, message in problems:
            diagnostics.error(message, document.position(path), format_path(path))
        if problems:
            # Rows of this kind are not checked: its definition's errors say why.
            kinds[name] = None
        else:
            kinds[name] = defined_blocks.make_kind(
                name, definition, defined[name].where, defined
            )
    return kinds


# Stage and published tables --------------------------------------------------


def _table(data: Any, path: DataPath) -> tuple[list[Any], list[Any]] | None:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    if not isinstance(data, dict):
        return None
    columns, rows = data.get("columns"), data.get("rows")
    if not isinstance(columns, list) or not isinstance(rows, list):
        return None
    if not all(isinstance(c, str) for c in columns):
        return None
    return columns, rows


def _records(
    path: DataPath, data: Any, document: Document, diagnostics: Diagnostics
) -> list[tuple[int, dict[str, Any]]]:
    """(row index, {column: cell}) for the well-formed rows of a table."""
    table = _table(data, path)
    if table is None:
        return []  # the Spec model reports the table's shape
    columns, rows = table
    records = []
    for i, row in enumerate(rows):
        at = (*path, "rows", i)
        if not isinstance(row, list):
            continue  # reported by the Spec model
        if len(row) != len(columns):
            diagnostics.error(
                f"expected {len(columns)} values, one per column "
                f"({', '.join(columns)}); found {len(row)}",
                document.position(at),
                format_path(at),
            )
            continue
        records.append((i, dict(zip(columns, row, strict=True))))
    return records


def _all_rows(
    data: Any, document: Document, diagnostics: Diagnostics
) -> dict[str, tuple[StageRow, ...]] | None:
    """The stage table for the spec itself and for each named variant."""
    path: DataPath = ("stages",)
    table = _table(data, path)
    if table is None:
        return None
    records = _records(path, data, document, diagnostics)
    scaling = data.get("scaling") if isinstance(data, dict) else None
    scaling = scaling if isinstance(scaling, dict) else {}
    rule = scaling.get("rule", "compound")
    if rule not in ("compound", "table", "width"):
        return {}  # the Spec model reports the rule
    variants = scaling.get("variants") if rule in ("table", "width") else None
    variants = variants if isinstance(variants, dict) else {}
    tables: dict[str, tuple[StageRow, ...]] = {}
    if rule != "table":
        rows = _stage_rows(path, table[0], records, {}, None, (), document, diagnostics)
        if rows is not None:
            tables[""] = rows
    for name, variant in variants.items():
        if not isinstance(variant, dict):
            continue  # reported by the Spec model
        at = ("scaling", "variants", name)
        cells = variant.get("set", {})
        layers = variant.get("layers")
        if not isinstance(cells, dict):
            continue
        # A variant may bring a stage table of its own (MobileNetV3-Small).
        own = (*at, "stages")
        if "stages" in variant:
            own_table = _table(data, own)
            if own_table is None:
                continue  # reported by the Spec model
            where, columns = own, own_table[0]
            rows_of = _records(own, data, document, diagnostics)
        else:
            where, columns, rows_of = path, table[0], records
        if isinstance(layers, list) and len(layers) != len(rows_of):
            diagnostics.error(
                f"expected {len(rows_of)} layer counts, one per stage row; "
                f"found {len(layers)}",
                document.position((*at, "layers")),
                format_path((*at, "layers")),
            )
            continue
        rows = _stage_rows(
            where,
            columns,
            rows_of,
            cells,
            layers if isinstance(layers, list) else None,
            at,
            document,
            diagnostics,
        )
        if rows is not None:
            tables[str(name)] = rows
    return tables


def _stage_rows(
    path: DataPath,
    columns: list[str],
    records: list[tuple[int, dict[str, Any]]],
    cells: dict[str, Any],
    layers: list[Any] | None,
    variant: DataPath,
    document: Document,
    diagnostics: Diagnostics,
) -> tuple[StageRow, ...] | None:
    """Validate each row, with a variant's `set` cells and `layers` applied.

    Errors point at whatever supplied the bad value: the row's cell, or the
    variant's entry. `path` is where the table is (`stages`, or a variant's).
    """
    given = [*columns, *(c for c in cells if c not in columns)]
    # Block kinds load lazily: first the fields of the kinds this table names;
    # only a column none of them has needs every kind (and the plugins).
    named = [cells.get("block", record.get("block")) for _, record in records]
    known = {"block", *StageRow.model_fields}
    for name in {n for n in named if isinstance(n, str)}:
        kind = blocks.get(name)
        known |= set(kind.row.model_fields) if kind else set()
    if not known.issuperset(given):
        known |= blocks.columns()
    if not known.issuperset(given):
        known |= blocks.columns(plugins=True)
    if "block" not in given:
        diagnostics.error(
            f"expected a 'block' column naming each row's block kind "
            f"(one of {', '.join(blocks.names())}), or a variant setting it",
            document.position((*path, "columns")),
            format_path((*path, "columns")),
        )
        return None
    for column in given:
        if column not in known:
            at = (
                (*path, "columns", columns.index(column))
                if column in columns
                else (*variant, "set", column)
            )
            diagnostics.error(
                f"unknown column {column!r}{did_you_mean(column, known)}",
                document.position(at, key=column not in columns),
                format_path(at),
            )

    def source(i: int, column: str) -> tuple[DataPath, DataPath]:
        """(data path, shown path) of the value row i takes for `column`."""
        if column == "layers" and layers is not None:
            return (*variant, "layers", i), (*variant, "layers", i)
        if column in cells:
            return (*variant, "set", column), (*variant, "set", column)
        if column in columns:
            return (*path, "rows", i, columns.index(column)), (*path, i, column)
        return (*path, "rows", i), (*path, i, column)

    parsed = []
    for i, record in records:
        merged = {**record, **cells}
        if layers is not None:
            merged["layers"] = layers[i]

        def where(loc: tuple, i: int = i) -> tuple[DataPath, DataPath]:
            data_at, shown = source(i, loc[0]) if loc else ((*path, "rows", i),) * 2
            return data_at, (*shown, *loc[1:])

        block_at = source(i, "block")
        kind = block_kind(
            merged.get("block"),
            block_at[0],
            document,
            diagnostics,
            shown=format_path(block_at[1]),
        )
        if kind is None:
            continue
        fields = kind.row.model_fields
        present = {k: v for k, v in merged.items() if v is not None and k in known}
        for column in sorted(set(present) - set(fields)):
            data_at, shown = source(i, column)
            diagnostics.error(
                f"column {column!r} does not apply to block kind {kind.name!r}; "
                "leave the cell empty (null)",
                document.position(data_at),
                format_path(shown),
            )
        present = {k: v for k, v in present.items() if k in fields}
        row = check(kind.row, present, document, diagnostics, where=where)
        if row is not None:
            parsed.append(row)
    return tuple(parsed) if len(parsed) == len(records) else None


def _published(
    data: Any, document: Document, diagnostics: Diagnostics
) -> dict[int, PublishedVariant]:
    path: DataPath = ("scaling", "published")
    table = _table(data, path)
    published: dict[int, PublishedVariant] = {}
    if table is None:
        return published
    columns = table[0]
    for i, record in _records(path, data, document, diagnostics):

        def where(loc: tuple, i: int = i) -> tuple[DataPath, DataPath]:
            cell = (*path, "rows", i)
            if loc and loc[0] in columns:
                cell = (*cell, columns.index(loc[0]))
            return cell, (*path, i, *loc)

        variant = check(PublishedVariant, record, document, diagnostics, where=where)
        if variant is None:
            continue
        if variant.phi in published:
            diagnostics.error(
                f"phi {variant.phi} is published twice",
                document.position((*path, "rows", i)),
                format_path((*path, i)),
            )
        published[variant.phi] = variant
    return published


def block_kind(
    value: Any,
    at: DataPath,
    document: Document,
    diagnostics: Diagnostics,
    shown: str | None = None,
) -> blocks.BlockKind | None:
    kind = blocks.get(value) if isinstance(value, str) else None
    if kind is None and isinstance(value, str) and value in blocks.broken():
        return None  # a kind of the spec's own whose definition has errors
    if kind is None:
        known = blocks.names()
        diagnostics.error(
            f"unknown block kind {describe(value)}{did_you_mean(str(value), known)} "
            f"(known: {', '.join(known)})",
            document.position(at),
            shown or format_path(at),
        )
    return kind


# Checks across fields ----------------------------------------------------------


def _semantic_checks(
    spec: Spec,
    published: dict[int, PublishedVariant],
    document: Document,
    diagnostics: Diagnostics,
) -> None:
    s = spec.scaling
    if s.rule == "compound":
        factor = s.alpha * s.beta**2 * s.gamma**2
        if (
            abs(factor - FLOPS_FACTOR_TARGET)
            > FLOPS_FACTOR_TOLERANCE * FLOPS_FACTOR_TARGET
        ):
            diagnostics.warning(
                f"alpha * beta^2 * gamma^2 = {factor:.3g}; compound scaling expects about "
                f"{FLOPS_FACTOR_TARGET:g}, so FLOPs will grow by {factor:.3g}x per unit of phi",
                document.position(("scaling",)),  # the file that set the coefficients
                "scaling",
            )
        names: set[str] = set()
    else:
        names = set(s.variants)
        for name, variant in s.variants.items():
            if variant.class_name is None and not name.startswith(spec.name):
                at = ("scaling", "variants", name)
                diagnostics.error(
                    f"expected a class_name: the variant name does not start with "
                    f"the spec's name {spec.name!r}, so none can be derived",
                    document.position(at, key=True),
                    format_path(at),
                )
    for i, override in enumerate(spec.per_variant):
        for j, phi in enumerate(override.phi):
            if phi not in published:
                diagnostics.error(
                    f"expected a published phi ({', '.join(map(str, sorted(published))) or 'none'}), found {phi}",
                    document.position(("per_variant", i, "phi", j)),
                    f"per_variant[{i}].phi[{j}]",
                )
        for j, name in enumerate(override.variants):
            if name not in names and not (
                s.rule == "compound"
                and name.startswith(s.variant_prefix)
                and name[len(s.variant_prefix) :].isdigit()
                and int(name[len(s.variant_prefix) :]) in published
            ):
                diagnostics.error(
                    f"expected a variant of this spec, found {name!r}",
                    document.position(("per_variant", i, "variants", j)),
                    f"per_variant[{i}].variants[{j}]",
                )
