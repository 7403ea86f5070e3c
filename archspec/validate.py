"""Validation: pydantic models applied to loaded YAML, errors mapped to positions.

Validation runs in two passes so that every error of a file is reported at
once: the spec's own fields, then each stage row against the model of the
block kind it names. Every pydantic error becomes a Diagnostic with
`file:line:column`, the path (`stages[3].stride`), what was expected and what
was found.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from . import blocks, ir
from .blocks import StageRow
from .errors import Diagnostics, describe, format_path
from .source import DataPath, Document
from .spec import PublishedVariant, Spec

# The compound-scaling constraint of the paper: alpha * beta^2 * gamma^2 ~= 2.
FLOPS_FACTOR_TARGET = 2.0
FLOPS_FACTOR_TOLERANCE = 0.1  # relative; the paper's grid search found 1.92


@dataclass(frozen=True)
class ValidSpec:
    """A spec that passed validation, with its tables parsed."""

    spec: Spec
    stages: list[StageRow]
    published: dict[int, PublishedVariant]
    document: Document


def validate_spec(document: Document, diagnostics: Diagnostics) -> ValidSpec:
    data = document.data
    rows = _stage_rows(data, document, diagnostics)
    published = _published(data, document, diagnostics)
    spec = check(Spec, data, document, diagnostics)
    diagnostics.raise_if_errors()
    assert spec is not None and rows is not None
    _semantic_checks(spec, published, document, diagnostics)
    diagnostics.raise_if_errors()
    return ValidSpec(spec, rows, published, document)


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


def _network_checks(
    net: ir.Network, document: Document, diagnostics: Diagnostics
) -> None:
    """What the IR's field types cannot say: an expanded file is input too, and
    the backends trust it as they trust what `expand` builds.

    - module and class_name end in the variant's number, as expand names them
      (efficientnet_b3, EfficientNetB3, efficientnet_phi2_5). That rules out
      Python keywords (`class`, `None`) and names that would shadow what a
      generated module defines or imports (`torch`, `MBConv`, `F`, `pad`).
    - layer names are the structural ones (stem, stages.S, stages.S.B, head,
      classifier): weights move by them and Keras needs them unique.
    - every stage has a block, and channel counts chain from layer to layer.
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
    names = [(("stem", "name"), net.stem.name, "stem")]
    channels = [(("stem", "in_channels"), net.stem.in_channels, net.input.channels)]
    previous = net.stem.out_channels
    if not net.stages:
        error("expected at least one stage, found none", ("stages",))
    for i, stage in enumerate(net.stages):
        names.append((("stages", i, "name"), stage.name, f"stages.{i}"))
        if not stage.blocks:
            error("expected at least one block, found none", ("stages", i, "blocks"))
        for j, block in enumerate(stage.blocks):
            at = ("stages", i, "blocks", j)
            names.append(((*at, "name"), block.name, f"stages.{i}.{j}"))
            channels.append(((*at, "in_channels"), block.in_channels, previous))
            previous = block.out_channels
    names += [
        (("head", "name"), net.head.name, "head"),
        (("classifier", "name"), net.classifier.name, "classifier"),
    ]
    channels += [
        (("head", "in_channels"), net.head.in_channels, previous),
        (
            ("classifier", "in_features"),
            net.classifier.in_features,
            net.head.out_channels,
        ),
    ]
    for path, found, expected in names:
        if found != expected:
            error(f"expected the layer name {expected!r}, found {found!r}", path)
    for path, found, expected in channels:
        if found != expected:
            error(
                f"expected {expected} (the channels of the layer before), found {found}",
                path,
            )
    pre = net.input.preprocess
    if pre and not len(pre.mean) == len(pre.std) == net.input.channels:
        error(
            f"preprocess mean and std need one value per input channel "
            f"({net.input.channels}); found {len(pre.mean)} and {len(pre.std)}",
            ("input", "preprocess"),
        )


def _stage_with_blocks(
    stage: Any, i: int, document: Document, diagnostics: Diagnostics
) -> Any:
    if not isinstance(stage, dict) or not isinstance(stage.get("blocks"), list):
        return stage
    built = []
    for j, block in enumerate(stage["blocks"]):
        at = ("stages", i, "blocks", j)
        value = block.get("kind") if isinstance(block, dict) else None
        kind = _block_kind(value, (*at, "kind"), document, diagnostics)
        if kind is not None:
            built.append(check(kind.ir, block, document, diagnostics, at=at))
    # On errors, let the stage validate without blocks so other fields still report.
    ok = all(b is not None for b in built) and len(built) == len(stage["blocks"])
    return {**stage, "blocks": built if ok else []}


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


def _stage_rows(
    data: Any, document: Document, diagnostics: Diagnostics
) -> list[StageRow] | None:
    path: DataPath = ("stages",)
    table = _table(data, path)
    if table is None:
        return None
    columns = table[0]
    known = blocks.columns()
    if not known.issuperset(columns):
        known = blocks.columns(plugins=True)
    if "block" not in columns:
        diagnostics.error(
            f"expected a 'block' column naming each row's block kind "
            f"(one of {', '.join(blocks.names())})",
            document.position((*path, "columns")),
            "stages.columns",
        )
        return None
    for j, column in enumerate(columns):
        if column not in known:
            diagnostics.error(
                f"unknown column {column!r}{_did_you_mean(column, known)}",
                document.position((*path, "columns", j)),
                f"stages.columns[{j}]",
            )
    parsed = []
    for i, record in _records(path, data, document, diagnostics):

        def where(loc: tuple, i: int = i) -> tuple[DataPath, DataPath]:
            # A row's cells are reported as stages[i].<column>, at the cell itself.
            if loc and loc[0] in columns:
                return ("stages", "rows", i, columns.index(loc[0])), ("stages", i, *loc)
            return ("stages", "rows", i), ("stages", i, *loc)

        kind = _block_kind(
            record.get("block"),
            ("stages", "rows", i, columns.index("block")),
            document,
            diagnostics,
            shown=f"stages[{i}].block",
        )
        if kind is None:
            continue
        fields = kind.row.model_fields
        cells = {k: v for k, v in record.items() if v is not None and k in known}
        for column in sorted(set(cells) - set(fields)):
            diagnostics.error(
                f"column {column!r} does not apply to block kind {kind.name!r}; "
                "leave the cell empty (null)",
                document.position(("stages", "rows", i, columns.index(column))),
                f"stages[{i}].{column}",
            )
        cells = {k: v for k, v in cells.items() if k in fields}
        row = check(kind.row, cells, document, diagnostics, where=where)
        if row is not None:
            parsed.append(row)
    return parsed


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
    factor = s.alpha * s.beta**2 * s.gamma**2
    if abs(factor - FLOPS_FACTOR_TARGET) > FLOPS_FACTOR_TOLERANCE * FLOPS_FACTOR_TARGET:
        diagnostics.warning(
            f"alpha * beta^2 * gamma^2 = {factor:.3g}; compound scaling expects about "
            f"{FLOPS_FACTOR_TARGET:g}, so FLOPs will grow by {factor:.3g}x per unit of phi",
            document.position(("scaling",)),  # the file that set the coefficients
            "scaling",
        )
    for i, override in enumerate(spec.per_variant):
        for j, phi in enumerate(override.phi):
            if phi not in published:
                diagnostics.error(
                    f"expected a published phi ({', '.join(map(str, sorted(published))) or 'none'}), found {phi}",
                    document.position(("per_variant", i, "phi", j)),
                    f"per_variant[{i}].phi[{j}]",
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
            loc = tuple(error["loc"])
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
    message = error["msg"]
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
    diagnostics.error(message, document.position(data_path), format_path(shown))


def _did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def _fields_at(model: Any, loc: tuple) -> list[str] | None:
    """The field names of the model found by following `loc` from `model`."""
    current = model
    for part in loc:
        current = _unwrap(current)
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


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and Optional down to the model or container inside."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            models = [
                a for a in options if isinstance(a, type) and issubclass(a, BaseModel)
            ]
            annotation = (models or options)[0]
        else:
            return annotation
