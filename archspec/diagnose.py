"""pydantic's validation errors as diagnostics: each at `file:line:column`,
with the path (`stages[3].stride`), what was expected and what was found.

`check` validates data with a model and reports every error; the spec
(archspec.validate) and expanded networks (archspec.network_file) both go
through it.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import Diagnostics, describe, format_path
from .source import DataPath, Document

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
            f"unknown key {loc[-1]!r}{did_you_mean(str(loc[-1]), allowed)}",
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


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
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
