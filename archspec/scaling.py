"""Compound scaling: which coefficients a phi gets, and how channels and layers round."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .errors import SpecError

MAX_PHI = 16.0  # beta^16 is already 4.6x the channels and alpha^16 18x the depth


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to a multiple of `divisor`, never down by more than 10%.

    The rule both reference implementations use for every channel count.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def round_layers(layers: int, depth: float) -> int:
    return math.ceil(depth * layers)


@dataclass(frozen=True)
class Coefficients:
    phi: float
    rule: Literal["published", "formula"]
    width: float
    depth: float
    resolution: int
    dropout: float

    @property
    def is_published(self) -> bool:
        return self.rule == "published"


def coefficients(valid, phi: float, *, formula: bool = False) -> Coefficients:
    """The published row for an integer phi the spec lists, else the formula.

    `valid` is an archspec.validate.ValidSpec.
    """
    if not 0 <= phi <= MAX_PHI or math.isnan(phi):
        raise SpecError(
            f"--phi: expected a number from 0 to {MAX_PHI:g}, found {phi:g}"
        )
    if not formula and float(phi).is_integer() and int(phi) in valid.published:
        row = valid.published[int(phi)]
        return Coefficients(
            int(phi), "published", row.width, row.depth, row.resolution, row.dropout
        )
    spec = valid.spec
    s = spec.scaling
    return Coefficients(
        int(phi) if float(phi).is_integer() else phi,
        "formula",
        width=s.beta**phi,
        depth=s.alpha**phi,
        resolution=math.floor(spec.input.resolution * s.gamma**phi + 0.5),
        dropout=spec.regularization.dropout,
    )


def phi_text(phi: float) -> str:
    """3 -> '3', 2.5 -> '2_5': phi as it appears in module and class names."""
    return f"{phi:g}".replace(".", "_").replace("-", "m")
