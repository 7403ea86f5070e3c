"""The spec file format, as pydantic models of exactly what a user writes.

Tables (`stages`, `scaling.published`) are kept as `columns` + `rows` here, so
the JSON Schema (`archspec schema`) describes the YAML as written; each stage
row is then validated against its block kind's own model (archspec.validate).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from .blocks.graph import BlockDef
from .types import (
    Activation,
    Channels,
    ClassName,
    Count,
    Gate,
    ModuleName,
    NetworkPadding,
    OddKernel,
    Padding,
    Rate,
    Stride,
)

Cell = bool | int | float | str | None
Reference = Literal["torchvision", "timm", "keras.applications"]
ReferenceScheme = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=40)]
Coefficient = Annotated[float, Field(ge=1.0, le=100.0)]
# Metadata only (`archspec plot`): a published figure, cited in the spec.
Top1 = Annotated[
    Annotated[float, Field(gt=0, le=100)] | None,
    Field(
        description="published ImageNet top-1 accuracy in percent, with its "
        "source cited in a comment; never affects the network",
    ),
]


class SpecModel(BaseModel):
    # defer_build: a model's validator is built on first use, not at import;
    # a compile uses a few of the dozens of models (0.5 s -> 0.37 s a process).
    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, defer_build=True
    )


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


class Rounding(SpecModel):
    """How a scaled channel count becomes an integer.

    nearest: the nearest multiple of `divisor` (at least `divisor`); with
    `guard`, one divisor more when that falls over 10% below the exact value
    (torchvision's and Keras's `_make_divisible`). floor: truncate to a multiple
    of `divisor` (`int(c * alpha)` with divisor 1, Keras's MobileNet).
    """

    divisor: Annotated[int, Field(ge=1, le=256)] = 8
    mode: Literal["nearest", "floor"] = "nearest"
    guard: bool = True
    truncate: bool = Field(
        False,
        description="truncate the scaled value to an integer first "
        "(Keras's MobileNetV2: _make_divisible(int(c * alpha), 8))",
    )


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


class SqueezeExcite(SpecModel):
    """How every squeeze-excitation layer of the network is built; the ratio
    (and what it is a ratio of) is each block kind's column `se`."""

    activation: Activation | None = Field(
        None, description="inside the SE layer; default: the network's activation"
    )
    gate: Gate = "sigmoid"
    of: Literal["input", "expanded"] = Field(
        "input",
        description="what an MBConv row's `se` ratio multiplies: the block's input "
        "width (EfficientNet) or its expanded width (MobileNetV3)",
    )
    rounding: Rounding = Field(
        Rounding(divisor=1, mode="floor", guard=False),
        description="of the squeezed width; default int(c * ratio), at least 1",
    )


class Defaults(SpecModel):
    activation: Activation = "silu"
    padding: NetworkPadding = Field(
        "same",
        description='"same": TensorFlow\'s rule, the extra row/column of a stride-2 '
        'convolution on an even size goes after the input; "symmetric": k // 2 '
        'on every side, as torchvision pads; "same_even": "same" as it pads an even '
        "size, (k//2 - 1, k//2), whatever the size (Keras's MobileNet: "
        "ZeroPadding2D(((0, 1), (0, 1))) before its stride-2 depthwise convolutions)",
    )
    norm: Norm = Norm()
    bias: bool = Field(
        False, description="convolutions followed by batch norm have a bias too"
    )
    se: SqueezeExcite = SqueezeExcite()


class Preprocess(SpecModel):
    scale: float = Field(1.0, gt=0)
    mean: list[float] = Field(min_length=1)
    std: list[Annotated[float, Field(gt=0)]] = Field(min_length=1)


class Data(SpecModel):
    """How the reference's weights expect images prepared for evaluation
    (timm's pretrained_cfg): the mean and std of the normalisation after
    scaling to [0, 1], the resize interpolation and the center crop."""

    mean: list[float] | None = Field(None, min_length=1)
    std: list[Annotated[float, Field(gt=0)]] | None = Field(None, min_length=1)
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = None
    crop_pct: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="crop size / resize size"
    )
    crop_padding: Annotated[int, Field(ge=0, le=1024)] | None = Field(
        None,
        description="resize to the resolution plus this, crop the resolution "
        "(EfficientNet's evaluation: 32): crop_pct = r / (r + crop_padding)",
    )

    @model_validator(mode="after")
    def _one_crop(self) -> Data:
        if self.crop_pct is not None and self.crop_padding is not None:
            raise ValueError("expected crop_pct or crop_padding, not both")
        if (self.mean is None) != (self.std is None):
            raise ValueError("expected mean and std together")
        return self


class Input(SpecModel):
    channels: Channels = 3
    resolution: Annotated[int, Field(ge=8, le=4096)]
    preprocess: Preprocess | None = None
    data: Data | None = Field(
        None,
        description="the evaluation transform the reference's weights expect "
        "(timm's pretrained_cfg)",
    )

    @model_validator(mode="after")
    def _per_channel(self) -> Input:
        p = self.preprocess
        if p and not len(p.mean) == len(p.std) == self.channels:
            raise ValueError(
                f"preprocess mean and std need one value per input channel "
                f"({self.channels}); found {len(p.mean)} and {len(p.std)}"
            )
        d = self.data
        if d and d.mean is not None:
            if p:
                raise ValueError(
                    "data mean and std: the model normalises its input itself "
                    "(preprocess), so its transform only scales to 0-255"
                )
            if not len(d.mean) == len(d.std) == self.channels:
                raise ValueError(
                    f"data mean and std need one value per input channel "
                    f"({self.channels}); found {len(d.mean)} and {len(d.std)}"
                )
        return self


class Pool(SpecModel):
    """A pooling layer after the stem convolution (ResNet: max 3x3, stride 2, pad 1)."""

    op: Literal["max", "avg"] = "max"
    kernel: Annotated[int, Field(ge=1, le=15)] = 3
    stride: Stride = 2
    padding: Annotated[int, Field(ge=0, le=7)] = 1
    ceil_mode: bool = False
    fill: Literal["-inf", "zero"] = Field(
        "-inf",
        description="max pooling only: what the padding holds. -inf: it never "
        "wins (PyTorch's MaxPool2d, timm); zero: zeros, which win over negative "
        "values (keras.applications' ResNetV2: ZeroPadding2D then MaxPooling2D "
        "on a map without a ReLU); the same after a ReLU",
    )
    count_pad: bool = Field(
        True,
        description="average pooling only: whether the padding's zeros count in "
        "the mean (PyTorch's count_include_pad; Keras's ZeroPadding2D then "
        "AveragePooling2D) or only the window's cells inside the map (Keras's "
        'padding="same")',
    )

    @model_validator(mode="after")
    def _padding_fits(self) -> Pool:
        if 2 * self.padding > self.kernel:
            raise ValueError(
                f"expected padding at most half the kernel ({self.kernel // 2}), "
                f"found {self.padding}"
            )
        if self.op != "max" and "fill" in self.model_fields_set:
            raise ValueError(
                "`fill` is for max pooling; average pooling pads zeros, counted "
                "or not (`count_pad`)"
            )
        if self.op != "avg" and "count_pad" in self.model_fields_set:
            raise ValueError("`count_pad` is for average pooling")
        if self.fill == "zero" and self.ceil_mode:
            raise ValueError(
                "expected fill -inf with ceil_mode (PyTorch's rule for the last "
                "window assumes it)"
            )
        return self


Scale = Literal["always", "above_one", "never"]


class Stem(SpecModel):
    channels: Channels
    kernel: OddKernel = 3
    stride: Stride = 2
    pool: Pool | None = None
    scale: Literal["always", "never"] = Field(
        "always",
        description="whether the stem width follows the width multiplier "
        "(never: Keras's MobileNetV3 keeps 16)",
    )
    padding: Padding | None = Field(
        None,
        description="the stem convolution's own padding rule; default: the "
        "network's (Keras's MobileNet: same, its blocks same_even); also "
        '"valid": none (NASNet)',
    )
    norm: bool = Field(
        True,
        description="a batch norm and the activation after the stem convolution; "
        "false: the convolution alone, its output not normalised (pre-activation "
        "networks: ResNetV2, whose first block normalises it)",
    )
    bias: bool | None = Field(
        None,
        description="whether the stem convolution has a bias; default: "
        "`defaults.bias` (keras.applications' ResNetV2: true)",
    )
    act: bool = Field(
        True,
        description="the activation after the stem's batch norm; false: the "
        "norm alone (NASNet, whose cells start with a ReLU)",
    )


class Hidden(SpecModel):
    """A fully connected layer between pooling and the classifier's dropout
    (MobileNetV3's 1280-wide layer)."""

    features: Channels
    scale: Scale = Field(
        "always", description="whether `features` follows the width multiplier"
    )
    activation: Activation | None = Field(
        None, description="default: the network's activation"
    )


class Head(SpecModel):
    channels: Channels | None = Field(
        None,
        description="width of the 1x1 head convolution; none (and no `expand`): "
        "the last stage is pooled directly (ResNet)",
    )
    expand: Annotated[float, Field(gt=0, le=64)] | None = Field(
        None,
        description="the head convolution's width as a multiple of the last "
        "stage's (MobileNetV3: 6); instead of `channels`",
    )
    scale: Scale = Field(
        "always",
        description="whether `channels` follows the width multiplier: always "
        "(EfficientNet), only when it exceeds 1 (MobileNetV2), never (MNASNet)",
    )
    hidden: Hidden | None = None
    norm: bool = Field(
        False,
        description="a batch norm and the activation after the last stage "
        "(DenseNet's norm5, whose layers put the norm before the convolution)",
    )
    act: bool = Field(
        False,
        description="the activation alone on the last stage's output, before "
        "pooling (NASNet's ReLU; `norm` is a batch norm with it)",
    )
    classes: Annotated[int, Field(gt=0, le=1 << 20)] = 1000
    pool: Literal["avg"] = "avg"
    as_conv: bool = Field(
        False,
        description="the dense layers after pooling are 1x1 convolutions on the "
        "pooled map, as keras.applications' MobileNets build them",
    )

    @model_validator(mode="after")
    def _one_width(self) -> Head:
        if self.channels is not None and self.expand is not None:
            raise ValueError("expected `channels` or `expand`, not both")
        return self


class Regularization(SpecModel):
    dropout: Rate = Field(0.2, description="before the classifier")
    drop_path: Rate = Field(
        0.2, description="stochastic depth; block i of n drops with drop_path * i / n"
    )


class Compound(SpecModel):
    """EfficientNet's rule: depth alpha^phi, width beta^phi, resolution gamma^phi."""

    rule: Literal["compound"] = "compound"
    alpha: Coefficient = Field(description="depth multiplier per unit of phi")
    beta: Coefficient = Field(description="width multiplier per unit of phi")
    gamma: Coefficient = Field(description="resolution multiplier per unit of phi")
    divisor: Annotated[int, Field(ge=1, le=256)] = 8
    variant_prefix: Annotated[str, Field(pattern=r"^[a-z]{1,8}$")] = "b"
    published: Table | None = Field(
        None,
        description="hand-rounded variants; columns phi, width, depth, resolution, "
        "dropout and optionally top1 (published ImageNet accuracy)",
    )


class StemChanges(SpecModel):
    """A variant's changes to the stem (EfficientNetV2-L: 32 channels)."""

    channels: Channels | None = None
    kernel: OddKernel | None = None
    stride: Stride | None = None


class Variant(SpecModel):
    """One named variant of a table or width rule: what differs from the spec."""

    class_name: ClassName | None = Field(
        None,
        description="default: the spec's class_name followed by what the variant "
        "name adds to the spec's name (resnet50 -> ResNet50)",
    )
    title: Annotated[str, Field(pattern=r"^[A-Za-z0-9 .\-]{1,40}$")] | None = None
    layers: list[Count] | None = Field(
        None, description="blocks per stage, one number per stage row"
    )
    stages: Table | None = Field(
        None,
        description="this variant's own stage table, instead of the spec's "
        "(MobileNetV3-Small beside -Large)",
    )
    set: dict[str, Cell] = Field(
        {}, description="stage-table cells that every row of this variant takes"
    )
    head: Head | None = Field(None, description="this variant's own head")
    stem: StemChanges | None = Field(None, description="changes to the stem")
    width: Annotated[float, Field(gt=0, le=16)] = Field(
        1.0, description="channel multiplier, rounded by the rule's rounding"
    )
    depth: Annotated[float, Field(gt=0, le=16)] = Field(
        1.0,
        description="layer multiplier: each stage's blocks, rounded up "
        "(Keras's EfficientNetV2-B1: 1.1)",
    )
    resolution: Annotated[int, Field(ge=8, le=4096)] | None = None
    dropout: Rate | None = None
    drop_path: Rate | None = None
    top1: Top1 = None
    data: Data | None = Field(
        None,
        description="this variant's evaluation transform, field by field over "
        "input.data (torchvision's MNASNet-0.75 weights resize to 232, not 256)",
    )


class TableRule(SpecModel):
    """Named variants, each a set of changes to the spec (ResNet-18 ... 152)."""

    rule: Literal["table"]
    rounding: Rounding = Rounding()
    variants: dict[ModuleName, Variant] = Field(min_length=1)


class WidthRule(SpecModel):
    """A width multiplier (MobileNets): named published multipliers, and any
    other through `--width`."""

    rule: Literal["width"]
    rounding: Rounding = Rounding()
    variants: dict[ModuleName, Variant] = Field(min_length=1)


def _rule(value: object) -> str | None:
    # `rule` may be left out for the rule archspec started with.
    if isinstance(value, dict):
        return value.get("rule", "compound")
    return getattr(value, "rule", None)


Scaling = Annotated[
    Annotated[Compound, Tag("compound")]
    | Annotated[TableRule, Tag("table")]
    | Annotated[WidthRule, Tag("width")],
    Discriminator(_rule),
]


class PublishedVariant(SpecModel):
    phi: Annotated[int, Field(ge=0, le=64)]
    width: Annotated[float, Field(gt=0, le=100)]
    depth: Annotated[float, Field(gt=0, le=100)]
    resolution: Annotated[int, Field(ge=8, le=4096)]
    dropout: Rate
    top1: Top1 = None


class VariantOverride(SpecModel):
    """Settings that differ for some variants (torchvision's B5-B7)."""

    phi: list[Annotated[int, Field(ge=0, le=64)]] = Field(
        [], description="published phis of a compound rule"
    )
    variants: list[ModuleName] = Field([], description="variant names")
    activation: Activation | None = None
    padding: NetworkPadding | None = None
    norm: Norm | None = None
    preprocess: Preprocess | None = Field(
        None,
        description="in-model input preprocessing of these variants (Keras's "
        "EfficientNetV2-S/M/L rescale differently from B0-B3)",
    )
    data: Data | None = Field(
        None,
        description="these variants' evaluation transform, field by field over "
        "input.data (torchvision's EfficientNet-B1 resizes to 256, B3 to 320)",
    )

    @model_validator(mode="after")
    def _names_some(self) -> VariantOverride:
        if not self.phi and not self.variants:
            raise ValueError("expected `phi` or `variants` naming the variants")
        return self


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
    blocks: dict[ModuleName, BlockDef] = Field(
        {},
        description="block kinds defined here, used in the stage table as the "
        "built-in ones are: each its columns, output width and graph",
    )
    stages: Table
    head: Head
    defaults: Defaults = Defaults()
    regularization: Regularization = Regularization()
    scaling: Scaling
    per_variant: list[VariantOverride] = []
    references: dict[Reference, ReferenceScheme | None] = Field(
        {},
        description="implementations whose weights `archspec weights import` "
        "reads, each with the naming scheme it uses (torchvision: resnet); "
        "null drops one a base spec named",
    )
