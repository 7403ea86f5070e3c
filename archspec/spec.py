"""The spec file format, as pydantic models of exactly what a user writes.

Tables (`stages`, `scaling.published`) are kept as `columns` + `rows` here, so
the JSON Schema (`archspec schema`) describes the YAML as written; each stage
row is then validated against its block kind's own model (archspec.validate).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .types import (
    Activation,
    Channels,
    ClassName,
    ModuleName,
    OddKernel,
    Padding,
    Rate,
    Stride,
)

Cell = bool | int | float | str | None
Coefficient = Annotated[float, Field(ge=1.0, le=100.0)]


class SpecModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Table(SpecModel):
    """A table written once per column: `columns: [a, b]`, `rows: [[1, 2], ...]`."""

    columns: list[str] = Field(min_length=1)
    rows: list[list[Cell]] = Field(min_length=1)

    @field_validator("columns")
    @classmethod
    def _unique(cls, columns: list[str]) -> list[str]:
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise ValueError(f"expected distinct column names, found {repeated} twice")
        return columns

    def records(self) -> list[dict[str, Cell]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


class Norm(SpecModel):
    kind: Literal["batch_norm"] = "batch_norm"
    eps: float = Field(1e-3, gt=0, lt=1)
    momentum: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="weight of each new batch in the running statistics "
        "(PyTorch's convention; Keras's momentum is 1 minus this)",
    )


class Defaults(SpecModel):
    activation: Activation = "silu"
    padding: Padding = Field(
        "same",
        description='"same": TensorFlow\'s rule, the extra row/column of a stride-2 '
        'convolution on an even size goes after the input; "symmetric": k // 2 '
        "on every side, as torchvision pads",
    )
    norm: Norm = Norm()


class Preprocess(SpecModel):
    scale: float = Field(1.0, gt=0)
    mean: list[float] = Field(min_length=1)
    std: list[Annotated[float, Field(gt=0)]] = Field(min_length=1)


class Input(SpecModel):
    channels: Channels = 3
    resolution: Annotated[int, Field(ge=8, le=4096)]
    preprocess: Preprocess | None = None

    @model_validator(mode="after")
    def _per_channel(self) -> Input:
        p = self.preprocess
        if p and not len(p.mean) == len(p.std) == self.channels:
            raise ValueError(
                f"preprocess mean and std need one value per input channel "
                f"({self.channels}); found {len(p.mean)} and {len(p.std)}"
            )
        return self


class Stem(SpecModel):
    channels: Channels
    kernel: OddKernel = 3
    stride: Stride = 2


class Head(SpecModel):
    channels: Channels
    classes: Annotated[int, Field(gt=0, le=1 << 20)] = 1000
    pool: Literal["avg"] = "avg"


class Regularization(SpecModel):
    dropout: Rate = Field(0.2, description="before the classifier")
    drop_path: Rate = Field(
        0.2, description="stochastic depth; block i of n drops with drop_path * i / n"
    )


class Scaling(SpecModel):
    rule: Literal["compound"] = "compound"
    alpha: Coefficient = Field(description="depth multiplier per unit of phi")
    beta: Coefficient = Field(description="width multiplier per unit of phi")
    gamma: Coefficient = Field(description="resolution multiplier per unit of phi")
    divisor: Annotated[int, Field(ge=1, le=256)] = 8
    variant_prefix: Annotated[str, Field(pattern=r"^[a-z]{1,8}$")] = "b"
    published: Table | None = Field(
        None,
        description="hand-rounded variants; columns phi, width, depth, resolution, "
        "dropout",
    )


class PublishedVariant(SpecModel):
    phi: Annotated[int, Field(ge=0, le=64)]
    width: Annotated[float, Field(gt=0, le=100)]
    depth: Annotated[float, Field(gt=0, le=100)]
    resolution: Annotated[int, Field(ge=8, le=4096)]
    dropout: Rate


class VariantOverride(SpecModel):
    """Settings that differ for some published variants (torchvision's B5-B7)."""

    phi: list[Annotated[int, Field(ge=0, le=64)]] = Field(min_length=1)
    activation: Activation | None = None
    padding: Padding | None = None
    norm: Norm | None = None


class Spec(SpecModel):
    """An architecture family: a base network and the rule that scales it."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={"title": "archspec spec"},
    )

    extends: str | None = Field(None, description="a base spec to start from")
    name: ModuleName = Field(
        description="module name prefix: efficientnet -> efficientnet_b3"
    )
    class_name: ClassName = Field(
        description="class name prefix: EfficientNet -> EfficientNetB3"
    )
    title: Annotated[str, Field(pattern=r"^[A-Za-z0-9 .\-]{1,40}$")] | None = None
    input: Input
    stem: Stem
    stages: Table
    head: Head
    defaults: Defaults = Defaults()
    regularization: Regularization = Regularization()
    scaling: Scaling
    per_variant: list[VariantOverride] = []
