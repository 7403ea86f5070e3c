"""Scaling rules: which variants a spec names, and how channels and layers round.

Every rule resolves to `Variant`s: a name, the width/depth/resolution
multipliers, the stage table as that variant uses it, and how its channels
round. The expander (archspec.expand) builds a network from one Variant and
never looks at the rule again.

- compound (EfficientNet): published phis from the spec's table (`b0` ... `b7`),
  any other phi through depth alpha^phi, width beta^phi, resolution gamma^phi;
- table (ResNet): named variants, each a set of changes to the stage table;
- width (MobileNets): named width multipliers, and any other through `--width`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from .errors import SpecError
from .spec import Rounding

if TYPE_CHECKING:
    from .blocks import StageRow
    from .spec import Data, Head, StemChanges
    from .spec import Variant as SpecVariant
    from .validate import ValidSpec

MAX_PHI = 16.0  # beta^16 is already 4.6x the channels and alpha^16 18x the depth
MAX_WIDTH = 16.0

Rule = Literal["compound", "formula", "table", "width"]


def round_channels(value: float, rounding: Rounding) -> int:
    """A scaled channel count as the spec's rounding rule makes it an integer."""
    d = rounding.divisor
    value = int(value) if rounding.truncate else value
    if rounding.mode == "floor":
        rounded = max(d, int(value) // d * d)
    else:
        rounded = max(d, int(value + d / 2) // d * d)
    if rounding.guard and rounded < 0.9 * value:
        rounded += d
    return rounded


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to a multiple of `divisor`, never down by more than 10%.

    The rule torchvision and Keras use for every EfficientNet channel count.
    """
    return round_channels(value, Rounding(divisor=divisor))


def round_layers(layers: int, depth: float) -> int:
    return math.ceil(depth * layers)


@dataclass(frozen=True)
class Variant:
    """One member of a family, ready to expand."""

    name: str  # b3, phi2_5, resnet50, w0_6_r192
    rule: Rule
    width: float
    depth: float
    resolution: int
    dropout: float
    drop_path: float
    rows: tuple[StageRow, ...]
    rounding: Rounding
    phi: float | None = None
    class_name: str | None = None
    title: str | None = None
    # Named in the spec (not a formula phi or a free width).
    listed: bool = True
    # Published ImageNet top-1 (%), metadata from the spec for `archspec plot`.
    top1: float | None = None
    stem: StemChanges | None = None
    # Where this variant's settings came from, for error positions.
    at: tuple = field(default=("scaling",))
    head: Head | None = None  # the variant's own head; None: the spec's
    data: Data | None = None  # its own evaluation transform, over the spec's


# The phis a compound rule without a published table names (B0-B7's).
FORMULA_PHIS = 8


def named(valid: ValidSpec) -> dict[str, Variant]:
    """Every variant the spec names, in the spec's order."""
    spec = valid.spec
    s = spec.scaling
    reg = spec.regularization
    if s.rule == "compound" and not valid.published:
        # No hand-rounded table: the formula's phi 0 (the base network) to 7,
        # as EfficientNet names B0-B7; any other phi with --phi.
        return {f"phi{phi}": formula(valid, phi) for phi in range(FORMULA_PHIS)}
    if s.rule == "compound":
        rounding = Rounding(divisor=s.divisor)
        return {
            f"{s.variant_prefix}{phi}": Variant(
                name=f"{s.variant_prefix}{phi}",
                rule="compound",
                phi=phi,
                width=row.width,
                depth=row.depth,
                resolution=row.resolution,
                dropout=row.dropout,
                drop_path=reg.drop_path,
                rows=valid.rows[""],
                rounding=rounding,
                top1=row.top1,
                at=("scaling", "published"),
            )
            for phi, row in sorted(valid.published.items())
        }
    return {name: _named(valid, name, v, s.rounding) for name, v in s.variants.items()}


def _named(valid: ValidSpec, name: str, v: SpecVariant, rounding: Rounding) -> Variant:
    spec = valid.spec
    reg = spec.regularization
    return Variant(
        name=name,
        rule=spec.scaling.rule,
        width=v.width,
        depth=v.depth,
        resolution=v.resolution or spec.input.resolution,
        dropout=reg.dropout if v.dropout is None else v.dropout,
        drop_path=reg.drop_path if v.drop_path is None else v.drop_path,
        rows=valid.rows[name],
        rounding=rounding,
        class_name=v.class_name,
        title=v.title,
        top1=v.top1,
        stem=v.stem,
        at=("scaling", "variants", name),
        head=v.head,
        data=v.data,
    )


def formula(valid: ValidSpec, phi: float) -> Variant:
    """A compound-rule variant from the formula, for any phi."""
    spec = valid.spec
    s = spec.scaling
    if s.rule != "compound":
        raise SpecError(
            f"--phi: {valid.document.file} scales by the {s.rule!r} rule; "
            "choose a variant with --variant"
        )
    if not 0 <= phi <= MAX_PHI or math.isnan(phi):
        raise SpecError(
            f"--phi: expected a number from 0 to {MAX_PHI:g}, found {phi:g}"
        )
    phi = int(phi) if float(phi).is_integer() else phi
    return Variant(
        name=f"phi{phi_text(phi)}",
        rule="formula",
        phi=phi,
        width=s.beta**phi,
        depth=s.alpha**phi,
        resolution=math.floor(spec.input.resolution * s.gamma**phi + 0.5),
        dropout=spec.regularization.dropout,
        drop_path=spec.regularization.drop_path,
        rows=valid.rows[""],
        rounding=Rounding(divisor=s.divisor),
        listed=False,
    )


def by_phi(valid: ValidSpec, phi: float, *, force_formula: bool = False) -> Variant:
    """The published variant for a listed integer phi, else the formula."""
    s = valid.spec.scaling
    if (
        s.rule == "compound"
        and not force_formula
        and float(phi).is_integer()
        and int(phi) in valid.published
    ):
        return named(valid)[f"{s.variant_prefix}{int(phi)}"]
    return formula(valid, phi)


def free_width(valid: ValidSpec, width: float, resolution: int | None) -> Variant:
    """A width-rule variant at any multiplier (`--width 0.6 --resolution 192`)."""
    spec = valid.spec
    s = spec.scaling
    if s.rule != "width":
        raise SpecError(
            f"--width: {valid.document.file} scales by the {s.rule!r} rule, "
            "not by a width multiplier"
        )
    if not 0 < width <= MAX_WIDTH or math.isnan(width):
        raise SpecError(
            f"--width: expected a multiplier above 0 and at most {MAX_WIDTH:g}, "
            f"found {width:g}"
        )
    if "" not in valid.rows:
        raise SpecError(
            f"--width: the stage table of {valid.document.file} is complete only "
            "with a variant's changes; choose a variant with --variant"
        )
    resolution = resolution or spec.input.resolution
    name = f"w{phi_text(width)}" + (
        f"_r{resolution}" if resolution != spec.input.resolution else ""
    )
    reg = spec.regularization
    return Variant(
        name=name,
        rule="width",
        width=width,
        depth=1.0,
        resolution=resolution,
        dropout=reg.dropout,
        drop_path=reg.drop_path,
        rows=valid.rows[""],
        rounding=s.rounding,
        listed=False,
    )


def phi_text(phi: float) -> str:
    """3 -> '3', 2.5 -> '2_5': a number as it appears in module and class names."""
    return f"{phi:g}".replace(".", "_").replace("-", "m")
