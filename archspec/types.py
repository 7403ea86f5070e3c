"""Constrained field types shared by the spec, block and IR models."""

from __future__ import annotations

import keyword
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field

_SNAKE = re.compile(r"[a-z][a-z0-9_]*\Z")
_PASCAL = re.compile(r"[A-Z][A-Za-z0-9_]*\Z")


def _odd(value: int) -> int:
    if value % 2 == 0:
        raise ValueError(f"expected an odd kernel size, found {value}")
    return value


def _snake_identifier(value: str) -> str:
    # ASCII only: names become Python identifiers and file names, and unicode
    # look-alikes would make two different names print the same.
    if not _SNAKE.match(value) or keyword.iskeyword(value) or len(value) > 64:
        raise ValueError(
            "expected a lower-case identifier (a-z, 0-9, _; starting with a letter; "
            f"not a Python keyword; at most 64 characters), found {value!r}"
        )
    return value


def _pascal_identifier(value: str) -> str:
    if not _PASCAL.match(value) or len(value) > 64:
        raise ValueError(
            "expected a class name in PascalCase (A-Z, a-z, 0-9, _; starting with a "
            f"capital; at most 64 characters), found {value!r}"
        )
    return value


def _ratio(value: object) -> object:
    # Keras writes some MobileNetV3 expansions as fractions (72.0 / 16): "72/16"
    # in a spec is that same float, where a decimal would have to be rounded.
    if isinstance(value, str) and re.fullmatch(
        r"\s*\d+(\.\d+)?\s*/\s*\d+(\.\d+)?\s*", value
    ):
        top, bottom = (float(part) for part in value.split("/"))
        if bottom == 0:
            raise ValueError(
                f"expected a ratio with a non-zero divisor, found {value!r}"
            )
        return top / bottom
    return value


OddKernel = Annotated[int, Field(gt=0, le=15), AfterValidator(_odd)]
Stride = Literal[1, 2]
Channels = Annotated[int, Field(gt=0, le=1 << 16)]
Count = Annotated[int, Field(gt=0, le=1024)]
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]
# A multiplier such as an expansion ratio: a number, or a fraction "88/24".
Ratio = Annotated[float, BeforeValidator(_ratio), Field(ge=1.0, le=64.0)]
ModuleName = Annotated[str, AfterValidator(_snake_identifier)]
ClassName = Annotated[str, AfterValidator(_pascal_identifier)]
Activation = Literal["silu", "relu", "relu6", "hardswish", "gelu"]
# How convolutions pad; "valid" (none) only where the spec says so for one
# layer (NASNet's stem): a network's blocks keep their maps' sizes.
NetworkPadding = Literal["same", "symmetric", "same_even"]
Padding = Literal["same", "symmetric", "same_even", "valid"]
Gate = Literal["sigmoid", "hardsigmoid"]
