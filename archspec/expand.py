"""Expansion: a validated spec and one of its variants become an explicit IR network."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from . import blocks, ir
from .errors import Diagnostic, SpecError, format_path
from .scaling import Variant, phi_text, round_channels, round_layers
from .validate import ValidSpec

# B7 has 55 blocks. The formula with a coefficient near its limit (100) would
# otherwise build 100^phi times the base depth, and never finish.
MAX_BLOCKS = 4096
MAX_SIZE = 1 << 16  # ir.Size: channels and feature-map sizes


def expand(valid: ValidSpec, variant: Variant) -> ir.Network:
    """The network of one variant; SpecError when it is out of range."""
    at: list[tuple] = [variant.at, variant.at]  # (data path, shown path)
    try:
        with blocks.defined(valid.kinds):
            return _expand(valid, variant, at)
    except ValidationError as exc:
        # A value valid in the spec can scale past an IR limit (65,536 channels,
        # sizes): say which part, for which variant, instead of an internal error.
        error = exc.errors(include_url=False)[0]
        field = ".".join(map(str, error["loc"]))
        message = error["msg"].replace("Input should be ", "expected ")
        raise SpecError(
            Diagnostic(
                f"{_describe(variant)}: the scaled {field or 'network'} is out of "
                f"range: {message}, found {error.get('input')!r}",
                valid.document.position(at[0]),
                format_path(at[1]),
            )
        ) from None


def _describe(variant: Variant) -> str:
    # Only compound rules (published or by formula) have a phi.
    return (
        f"phi {variant.phi:g}" if variant.phi is not None else f"variant {variant.name}"
    )


@dataclass(frozen=True)
class _Build:
    """What every part of one variant's network is built with: the spec, the
    variant and the network-wide settings (the defaults with the variant's
    overrides applied)."""

    valid: ValidSpec
    variant: Variant
    activation: str
    padding: str
    norm: ir.Norm

    @property
    def conv(self) -> dict:
        """Padding, norm and bias of a convolution that takes the defaults."""
        bias = self.valid.spec.defaults.bias
        return dict(padding=self.padding, norm=self.norm, bias=bias)

    def channels(self, base: int) -> int:
        """`base` channels at the variant's width."""
        return round_channels(base * self.variant.width, self.variant.rounding)

    def too_large(self, message: str) -> SpecError:
        """The variant scales past what archspec builds."""
        at = self.variant.at
        return SpecError(
            Diagnostic(
                f"{_describe(self.variant)}: {message}",
                self.valid.document.position(at),
                format_path(at),
            )
        )


def _expand(valid: ValidSpec, variant: Variant, at: list) -> ir.Network:
    """`at` tracks the spec part being built, for expand's error message."""
    build = _Build(valid, variant, *_settings(valid, variant))
    if variant.resolution > MAX_SIZE:
        raise build.too_large(
            f"the scaled resolution would be {variant.resolution:,}; "
            f"archspec builds at most {MAX_SIZE:,}"
        )
    at[:] = ("stem",), ("stem",)
    stem = _stem(build)
    width, size = stem[0].out_channels, stem[-1].out_size
    stages, width, size = _stages(build, width, size, stem[-1].name, at)
    at[:] = ("head",), ("head",)
    head = _head(build, width, size)
    at[:] = variant.at, variant.at
    return _network(valid, variant, stem, stages, head)


def _stem(build: _Build) -> list[ir.Layer]:
    """The stem convolution and, if the spec has one, its pooling."""
    spec, variant, padding = build.valid.spec, build.variant, build.padding
    resolution = variant.resolution
    s = spec.stem
    if variant.stem is not None:
        s = s.model_copy(update=variant.stem.model_dump(exclude_none=True))
    # A stem without norm is the convolution alone (pre-activation: ResNetV2).
    stem_conv = {**build.conv, "padding": s.padding or padding}
    if not s.norm:
        stem_conv.update(norm=None, activation=None)
    elif not s.act:
        stem_conv.update(activation=None)
    if s.bias is not None:
        stem_conv["bias"] = s.bias
    conv = ir.Conv(
        name="stem",
        in_channels=spec.input.channels,
        out_channels=build.channels(s.channels) if s.scale == "always" else s.channels,
        kernel=s.kernel,
        stride=s.stride,
        in_size=resolution,
        out_size=ir.conv_out_size(resolution, s.kernel, s.stride, s.padding or padding),
        **{"activation": build.activation, **stem_conv},
    )
    if not s.pool:
        return [conv]
    p = s.pool
    size = conv.out_size
    return [
        conv,
        ir.Pool(
            name="stem_pool",
            op=p.op,
            kernel=p.kernel,
            stride=p.stride,
            pad=p.padding,
            ceil_mode=p.ceil_mode,
            fill=p.fill,
            count_pad=p.count_pad,
            channels=conv.out_channels,
            in_size=size,
            out_size=ir.pool_out_size(size, p.kernel, p.stride, p.padding, p.ceil_mode),
        ),
    ]


def _stages(
    build: _Build, width: int, size: int, source: str, at: list
) -> tuple[list[ir.Stage], int, int]:
    """One stage per row of the variant's table, its blocks built by the
    row's block kind from `width` channels at `size` (the output `source`)
    onwards; with the width and size they end at.

    Each block also knows the output before its input (`prev`): cells
    (NASNet) read it as their second input. It is the previous block's
    input, or, after a row with `skip_reduction`, the previous block's own
    prev; the first block's is its own input."""
    variant, d = build.variant, build.valid.spec.defaults
    layers = [round_layers(row.layers, variant.depth) for row in variant.rows]
    total = sum(layers)
    if total > MAX_BLOCKS:
        raise build.too_large(
            f"the scaled network would have {total:,} blocks "
            f"(depth x{variant.depth:.3g}); archspec builds at most {MAX_BLOCKS:,}"
        )
    se = d.se
    squeeze = blocks.SESettings(
        activation=se.activation or build.activation,
        gate=se.gate,
        round=lambda v: round_channels(v, se.rounding),
        of=se.of,
    )
    stages = []
    prev: tuple[str, int, int] | None = None  # (output, channels, size)
    for i, (row, count) in enumerate(zip(variant.rows, layers, strict=True)):
        kind = blocks.get(row.block)
        at[:] = ("stages", "rows", i), ("stages", i)
        stage = []
        # The row's stride goes to its first block, or its last (Keras's ResNetV2).
        strided = 0 if row.stride_block == "first" else count - 1
        for b in range(count):
            out_channels = row.block_channels(width, build.channels)
            block = kind.build(
                row,
                blocks.BlockContext(
                    name=f"stages.{i}.{b}",
                    in_channels=width,
                    out_channels=out_channels,
                    stride=row.stride if b == strided else 1,
                    in_size=size,
                    activation=build.activation,
                    padding=build.padding,
                    norm=build.norm,
                    bias=d.bias,
                    se=squeeze,
                    make_divisible=lambda v: round_channels(v, variant.rounding),
                    scale=build.channels,
                    input=source,
                    prev=prev and prev[0],
                    prev_channels=prev and prev[1],
                    prev_size=prev and prev[2],
                ),
            )
            stage.append(block)
            skip = getattr(row, "skip_reduction", False) and b == count - 1
            prev = (prev or (source, width, size)) if skip else (source, width, size)
            source, width, size = block.name, out_channels, block.out_size
        stages.append(ir.Stage(name=f"stages.{i}", blocks=tuple(stage)))
    return stages, width, size


def _head(build: _Build, width: int, size: int) -> list[ir.Layer]:
    """Norm, 1x1 convolution, pooling, hidden layer, dropout and classifier,
    those the spec (or the variant's own head) has, from `width` channels at
    `size`."""
    variant, activation = build.variant, build.activation
    h = variant.head or build.valid.spec.head
    scaled = {"always": True, "above_one": variant.width > 1, "never": False}
    head: list[ir.Layer] = []
    if h.norm:  # DenseNet's norm5: its layers put the norm before the conv
        head.append(
            ir.NormAct(
                name="head_norm", channels=width, norm=build.norm, activation=activation
            )
        )
    if h.act and not h.norm:  # NASNet's ReLU before pooling
        head.append(ir.Act(name="head_act", channels=width, activation=activation))
    if h.channels is not None or h.expand is not None:
        if h.expand is not None:  # a multiple of the last stage (MobileNetV3: 6)
            out = round_channels(h.expand * width, variant.rounding)
        else:
            out = build.channels(h.channels) if scaled[h.scale] else h.channels
        head.append(
            ir.Conv(
                name="head",
                in_channels=width,
                out_channels=out,
                kernel=1,
                activation=activation,
                in_size=size,
                out_size=size,
                **build.conv,
            )
        )
        width = out
    head.append(ir.GlobalPool(name="pool", op=h.pool, channels=width))
    if h.hidden is not None:
        features = h.hidden.features
        head.append(
            ir.Dense(
                name="hidden",
                in_features=width,
                out_features=build.channels(features)
                if scaled[h.hidden.scale]
                else features,
                activation=h.hidden.activation or activation,
                conv=h.as_conv,
            )
        )
        width = head[-1].out_features
    return [
        *head,
        ir.Dropout(name="dropout", rate=variant.dropout),
        ir.Dense(
            name="classifier",
            in_features=width,
            out_features=h.classes,
            conv=h.as_conv,
        ),
    ]


def _network(
    valid: ValidSpec,
    variant: Variant,
    stem: list[ir.Layer],
    stages: list[ir.Stage],
    head: list[ir.Layer],
) -> ir.Network:
    """The parts, with the variant's names, its provenance and its input."""
    spec = valid.spec
    pre = _preprocess(valid, variant)
    module, class_name, title = _names(valid, variant)
    return ir.Network(
        module=module,
        class_name=class_name,
        title=title,
        source=ir.Source(
            # Only the file name, and only safe characters of it: it is printed
            # into generated headers, and must not depend on the working folder.
            spec=re.sub(r"[^A-Za-z0-9_.\-]", "_", Path(valid.document.file).name)[:128],
            variant=variant.name,
            rule=variant.rule,
            phi=variant.phi,
            listed=variant.listed,
            width=variant.width,
            depth=variant.depth,
            resolution=variant.resolution,
            dropout=variant.dropout,
        ),
        input=ir.Input(
            channels=spec.input.channels,
            resolution=variant.resolution,
            preprocess=ir.Preprocess(
                scale=pre.scale, mean=tuple(pre.mean), std=tuple(pre.std)
            )
            if pre
            else None,
            data=_data(valid, variant),
        ),
        stem=tuple(stem),
        stages=tuple(stages),
        head=tuple(head),
        drop_path=variant.drop_path,
    )


def _settings(valid: ValidSpec, variant: Variant) -> tuple[str, str, ir.Norm]:
    """Network-wide defaults, with the spec's per-variant overrides applied."""
    d = valid.spec.defaults
    activation, padding, norm = d.activation, d.padding, d.norm
    for override in valid.spec.per_variant:
        if _named(override, variant):
            activation = override.activation or activation
            padding = override.padding or padding
            norm = override.norm or norm
    return activation, padding, ir.Norm(eps=norm.eps, momentum=norm.momentum)


def _preprocess(valid: ValidSpec, variant: Variant):
    """The spec's in-model preprocessing, or a per-variant override's."""
    pre = valid.spec.input.preprocess
    for override in valid.spec.per_variant:
        if override.preprocess and _named(override, variant):
            pre = override.preprocess
    return pre


def _data(valid: ValidSpec, variant: Variant) -> ir.Data | None:
    """The spec's evaluation transform with the variant's overrides, field by
    field; a crop stated as padding becomes the variant's crop_pct."""
    stated: dict = {}
    overrides = [o.data for o in valid.spec.per_variant if _named(o, variant)]
    for data in (valid.spec.input.data, *overrides, variant.data):
        if data is not None:
            given = data.model_dump(exclude_none=True)
            if "crop_pct" in given or "crop_padding" in given:
                stated.pop("crop_pct", None)
                stated.pop("crop_padding", None)
            stated.update(given)
    if not stated:
        return None
    padding = stated.pop("crop_padding", None)
    if padding is not None:
        r = variant.resolution
        stated["crop_pct"] = r / (r + padding)
    return ir.Data(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in stated.items()}
    )


def _named(override, variant: Variant) -> bool:
    return variant.listed and (
        variant.name in override.variants
        or (variant.rule == "compound" and variant.phi in override.phi)
    )


def _names(valid: ValidSpec, variant: Variant) -> tuple[str, str, str]:
    """Module, class and title: efficientnet_b3 / EfficientNetB3 / EfficientNet-B3,
    resnet50 / ResNet50 / ResNet-50, efficientnet_phi2_5 for a formula phi."""
    spec = valid.spec
    title = spec.title or spec.class_name
    if variant.rule == "compound":
        suffix = variant.name
        return (
            f"{spec.name}_{suffix}",
            f"{spec.class_name}{suffix.capitalize()}",
            f"{title}-{suffix.upper()}",
        )
    if variant.rule == "formula":
        text = phi_text(variant.phi)
        return (
            f"{spec.name}_phi{text}",
            f"{spec.class_name}Phi{text}",
            f"{title} (phi={variant.phi:g})",
        )
    if not variant.listed:  # a free width multiplier
        return (
            f"{spec.name}_{variant.name}",
            f"{spec.class_name}{variant.name.capitalize()}",
            f"{title} (width={variant.width:g} at {variant.resolution}px)",
        )
    # Named variants: resnet50 -> ResNet + 50 (validation made sure a variant
    # not starting with the spec's name brings its own class name).
    rest = variant.name[len(spec.name) :]
    return (
        variant.name,
        variant.class_name or f"{spec.class_name}{rest}",
        variant.title or f"{title}-{rest.strip('_').replace('_', '.')}",
    )
