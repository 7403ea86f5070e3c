"""Validation: pydantic models applied to loaded YAML, errors mapped to positions.

Validation runs in two passes so that every error of a file is reported at
once: the spec's own fields, then each stage row against the model of the
block kind it names. Every pydantic error becomes a Diagnostic with
`file:line:column`, the path (`stages[3].stride`), what was expected and what
was found.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from . import blocks, ir
from .blocks import StageRow
from .blocks import graph as defined_blocks
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
    for name, entry in section.items():
        at = ("blocks", name)
        definition = check(defined_blocks.BlockDef, entry, document, diagnostics, at=at)
        if definition is None:
            kinds[name] = None
            continue
        problems = defined_blocks.check_definition(str(name), definition, at)
        for path, message in problems:
            diagnostics.error(message, document.position(path), format_path(path))
        if problems:
            # Rows of this kind are not checked: its definition's errors say why.
            kinds[name] = None
        else:
            kinds[name] = defined_blocks.make_kind(
                name, definition, defined_blocks.Where(document.position, at)
            )
    return kinds


def validate_network(document: Document, diagnostics: Diagnostics) -> ir.Network:
    """An expanded network (`archspec expand` output) read back as IR."""
    data = dict(document.data)
    stages = data.get("stages")
    if isinstance(stages, list):
        data["stages"] = [
            _stage_with_blocks(s, i, document, diagnostics)
            for i, s in enumerate(stages)
        ]
    network = check(ir.Network, data, document, diagnostics)
    diagnostics.raise_if_errors()
    assert network is not None
    _network_checks(network, document, diagnostics)
    diagnostics.raise_if_errors()
    return network


# Names the stem's and head's layers may have: they become attributes of the
# generated PyTorch model and prefixes of Keras layer names, so nothing else.
STEM_NAME = re.compile(r"stem(_[a-z0-9]+)*\Z")
HEAD_NAME = re.compile(r"(head(_[a-z0-9]+)*|pool|hidden|dropout|classifier)\Z")


def _network_checks(
    net: ir.Network, document: Document, diagnostics: Diagnostics
) -> None:
    """What the IR's field types cannot say: an expanded file is input too, and
    the backends trust it as they trust what `expand` builds.

    - module and class_name end in the variant's number, as expand names them
      (efficientnet_b3, EfficientNetB3, resnet50). That rules out Python
      keywords (`class`, `None`) and names that would shadow what a generated
      module defines or imports (`torch`, `MBConv`, `F`, `pad`).
    - layer names are the structural ones (stem*, stages.S, stages.S.B, head*,
      pool, hidden, dropout, classifier), each once: weights move by them, they become
      attributes of the PyTorch model, and Keras needs them unique.
    - every stage has a block, channel counts chain from layer to layer, and
      the head ends in the dense classifier.
    """

    def error(message: str, path: DataPath) -> None:
        diagnostics.error(message, document.position(path), format_path(path))

    for key, example in (
        ("module", "efficientnet_b3"),
        ("class_name", "EfficientNetB3"),
    ):
        value = getattr(net, key)
        if not value[-1].isdigit():
            error(
                f"expected a variant name ending in its number, as archspec expand "
                f"writes it (like {example!r}), found {value!r}",
                (key,),
            )
    seen: set[str] = set()
    previous = net.input.channels
    for part, pattern, layers in (
        ("stem", STEM_NAME, net.stem),
        ("head", HEAD_NAME, net.head),
    ):
        if part == "head":
            previous = _stages_check(net, previous, error)
        if not layers:
            error("expected at least one layer, found none", (part,))
        for i, layer in enumerate(layers):
            at = (part, i)
            if not pattern.match(layer.name) or layer.name in seen:
                error(
                    f"expected a {part} layer name ({pattern.pattern[:-2]}) used once, "
                    f"found {layer.name!r}",
                    (*at, "name"),
                )
            seen.add(layer.name)
            for field in ("in_channels", "channels", "in_features"):
                found = getattr(layer, field, None)
                if found is not None and found != previous:
                    error(
                        f"expected {previous} (the channels of the layer before), "
                        f"found {found}",
                        (*at, field),
                    )
            previous = getattr(
                layer, "out_channels", getattr(layer, "out_features", previous)
            )
    if net.head and not isinstance(net.head[-1], ir.Dense):
        error("expected the head to end in the dense classifier", ("head",))
    pre = net.input.preprocess
    if pre and not len(pre.mean) == len(pre.std) == net.input.channels:
        error(
            f"preprocess mean and std need one value per input channel "
            f"({net.input.channels}); found {len(pre.mean)} and {len(pre.std)}",
            ("input", "preprocess"),
        )


def _stages_check(net: ir.Network, previous: int, error) -> int:
    """Stage and block names, channels chaining through the blocks."""
    if not net.stages:
        error("expected at least one stage, found none", ("stages",))
    for i, stage in enumerate(net.stages):
        if stage.name != f"stages.{i}":
            error(
                f"expected the layer name 'stages.{i}', found {stage.name!r}",
                ("stages", i, "name"),
            )
        if not stage.blocks:
            error("expected at least one block, found none", ("stages", i, "blocks"))
        for j, block in enumerate(stage.blocks):
            at = ("stages", i, "blocks", j)
            if block.name != f"stages.{i}.{j}":
                error(
                    f"expected the layer name 'stages.{i}.{j}', found {block.name!r}",
                    (*at, "name"),
                )
            if block.in_channels != previous:
                error(
                    f"expected {previous} (the channels of the layer before), "
                    f"found {block.in_channels}",
                    (*at, "in_channels"),
                )
            for index, message in block.check():
                where = (*at, "graph") if index is None else (*at, "graph", index)
                error(f"{block.kind} block: {message}", where)
            previous = block.out_channels
    return previous


def _stage_with_blocks(
    stage: Any, i: int, document: Document, diagnostics: Diagnostics
) -> Any:
    if not isinstance(stage, dict) or not isinstance(stage.get("blocks"), list):
        return stage
    built = []
    for j, block in enumerate(stage["blocks"]):
        at = ("stages", i, "blocks", j)
        value = block.get("kind") if isinstance(block, dict) else None
        if isinstance(value, str) and "graph" in block and blocks.get(value) is None:
            # A kind the spec defined (`blocks:`): its graph is all there is.
            built.append(check(ir.GraphBlock, block, document, diagnostics, at=at))
            continue
        kind = _block_kind(value, (*at, "kind"), document, diagnostics)
        if kind is not None:
            built.append(_block(kind, block, at, document, diagnostics))
    # On errors, let the stage validate without blocks so other fields still report.
    ok = all(b is not None for b in built) and len(built) == len(stage["blocks"])
    return {**stage, "blocks": built if ok else []}


def _block(
    kind: blocks.BlockKind,
    data: dict,
    at: DataPath,
    document: Document,
    diagnostics: Diagnostics,
) -> ir.Block | None:
    """One block of an expanded network. A kind that computes its graph from
    its fields shows it in the file (`archspec expand`): the graph read back
    must be the one the fields give, or the file says one thing and the
    model would do another."""
    computed = not issubclass(kind.ir, ir.GraphBlock)
    shown = data.get("graph") if computed else None
    if computed:
        data = {k: v for k, v in data.items() if k != "graph"}
    block = check(kind.ir, data, document, diagnostics, at=at)
    if block is None or shown is None:
        return block
    expected = block.model_dump(mode="json")["graph"]
    if not isinstance(shown, list) or len(shown) != len(expected):
        diagnostics.error(
            f"the graph of a {kind.name!r} block follows from its fields: "
            f"expected {len(expected)} nodes, found "
            f"{len(shown) if isinstance(shown, list) else describe(shown)}",
            document.position((*at, "graph")),
            format_path((*at, "graph")),
        )
        return block
    for i, (node, want) in enumerate(zip(shown, expected, strict=True)):
        if node != want:
            where = (*at, "graph", i)
            diagnostics.error(
                f"the graph of a {kind.name!r} block follows from its fields; "
                f"node {i} should be {want}, found {node}",
                document.position(where),
                format_path(where),
            )
            break
    return block


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
                f"unknown column {column!r}{_did_you_mean(column, known)}",
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
        kind = _block_kind(
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


def _block_kind(
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
            f"unknown block kind {describe(value)}{_did_you_mean(str(value), known)} "
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


# pydantic errors -> diagnostics ------------------------------------------------

Where = typing.Callable[[tuple], tuple[DataPath, DataPath]]


def check(
    model: type[BaseModel],
    data: Any,
    document: Document,
    diagnostics: Diagnostics,
    *,
    at: DataPath = (),
    where: Where | None = None,
) -> Any:
    """Validate `data` with `model`; on failure record each error and return None."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = _without_tags(data, tuple(error["loc"]))
            data_path, shown = where(loc) if where else ((*at, *loc), (*at, *loc))
            _report(error, model, loc, data_path, shown, document, diagnostics)
        return None


def _report(
    error: dict,
    model: type[BaseModel],
    loc: tuple,
    data_path: DataPath,
    shown: DataPath,
    document: Document,
    diagnostics: Diagnostics,
) -> None:
    kind = error["type"]
    if kind == "missing":
        diagnostics.error(
            f"missing required field {loc[-1]!r}",
            # Point at the mapping the field belongs in.
            document.position(
                data_path[:-1] if data_path[-1:] == loc[-1:] else data_path
            ),
            format_path(shown[:-1]) if len(shown) > 1 else "",
        )
        return
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1]) or []
        diagnostics.error(
            f"unknown key {loc[-1]!r}{_did_you_mean(str(loc[-1]), allowed)}",
            document.position(data_path, key=True),
            format_path(shown),
        )
        return
    key = data_path[-1:] == ("[key]",)
    if key:  # a mapping's key is wrong: point at the key
        data_path, shown = data_path[:-1], shown[:-1]
    message = error["msg"]
    if kind == "union_tag_invalid":  # the scaling rule's name
        tags = error["ctx"]["expected_tags"]
        message = f"expected the rule {tags}, found {error['ctx']['tag']!r}"
        data_path = (*data_path, "rule")
        shown = (*shown, "rule")
    if kind == "string_pattern_mismatch":
        message = f"expected text matching {error['ctx']['pattern']}"
    # "a valid integer, unable to parse string as an integer": the type says it.
    message = message.split(", unable to parse", 1)[0]
    for prefix, replacement in (
        ("Value error, ", ""),
        ("Input should be ", "expected "),
        ("Assertion failed, ", ""),
    ):
        if message.startswith(prefix):
            message = replacement + message[len(prefix) :]
    if "found" not in message:
        message = (
            f"{message[0].lower()}{message[1:]}, found {describe(error.get('input'))}"
        )
    diagnostics.error(
        message, document.position(data_path, key=key), format_path(shown)
    )


def _without_tags(data: Any, loc: tuple) -> tuple:
    """pydantic's location with the tags of discriminated unions taken out:
    ('scaling', 'table', 'variants') -> ('scaling', 'variants'). A part that is
    not in the data, with more parts after it, is such a tag."""
    kept = []
    for i, part in enumerate(loc):
        if isinstance(data, dict) and part not in data and i + 1 < len(loc):
            continue
        kept.append(part)
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            data = None
    return tuple(kept)


def _did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def _fields_at(model: Any, loc: tuple) -> list[str] | None:
    """The field names of the model found by following `loc` from `model`."""
    current = model
    for part in loc:
        current = _unwrap(current, part)
        if isinstance(current, type) and issubclass(current, BaseModel):
            if part not in current.model_fields:
                return None
            current = current.model_fields[part].annotation
        elif typing.get_origin(current) in (list, tuple):
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


def _unwrap(annotation: Any, key: Any = None) -> Any:
    """Strip Annotated and Optional down to the model or container inside; of
    a union of models, the one that has field `key`."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [
                typing.get_args(a)[0] if typing.get_origin(a) is typing.Annotated else a
                for a in typing.get_args(annotation)
                if a is not type(None)
            ]
            models = [
                a for a in options if isinstance(a, type) and issubclass(a, BaseModel)
            ]
            fitting = [m for m in models if key in m.model_fields]
            annotation = (fitting or models or options)[0]
        else:
            return annotation
