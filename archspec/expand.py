"""Expansion: a validated spec and a phi become one explicit IR network."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import ValidationError

from . import blocks, ir
from .errors import Diagnostic, SpecError, format_path
from .scaling import Coefficients, coefficients, make_divisible, phi_text, round_layers
from .validate import ValidSpec

# B7 has 55 blocks. The formula with a coefficient near its limit (100) would
# otherwise build 100^phi times the base depth, and never finish.
MAX_BLOCKS = 4096
MAX_SIZE = 1 << 16  # ir.Size: channels and feature-map sizes


def expand(valid: ValidSpec, phi: float, *, formula: bool = False) -> ir.Network:
    """The network for one phi; SpecError when the scaled network is out of range."""
    at: list[tuple] = [("scaling",), ("scaling",)]  # (data path, shown path)
    try:
        return _expand(valid, phi, formula, at)
    except ValidationError as exc:
        # A value valid in the spec can scale past an IR limit (65,536 channels,
        # sizes): say which part, for which phi, instead of an internal error.
        error = exc.errors(include_url=False)[0]
        field = ".".join(map(str, error["loc"]))
        message = error["msg"].replace("Input should be ", "expected ")
        raise SpecError(
            Diagnostic(
                f"phi {phi:g}: the scaled {field or 'network'} is out of range: "
                f"{message}, found {error.get('input')!r}",
                valid.document.position(at[0]),
                format_path(at[1]),
            )
        ) from None


def _expand(valid: ValidSpec, phi: float, formula: bool, at: list) -> ir.Network:
    """`at` tracks the spec part being built, for expand's error message."""
    spec = valid.spec
    co = coefficients(valid, phi, formula=formula)
    activation, padding, norm = _settings(valid, co)
    divisor = spec.scaling.divisor

    def channels(base: int) -> int:
        return make_divisible(base * co.width, divisor)

    resolution = co.resolution
    if resolution > MAX_SIZE:
        raise SpecError(
            Diagnostic(
                f"phi {phi:g}: the scaled resolution would be {resolution:,}; "
                f"archspec builds at most {MAX_SIZE:,}",
                valid.document.position(("scaling",)),
                "scaling",
            )
        )
    at[:] = ("stem",), ("stem",)
    stem = ir.ConvNormAct(
        name="stem",
        in_channels=spec.input.channels,
        out_channels=channels(spec.stem.channels),
        kernel=spec.stem.kernel,
        stride=spec.stem.stride,
        padding=padding,
        activation=activation,
        norm=norm,
        in_size=resolution,
        out_size=-(-resolution // spec.stem.stride),
    )

    layers = [round_layers(row.layers, co.depth) for row in valid.stages]
    total = sum(layers)
    if total > MAX_BLOCKS:
        raise SpecError(
            Diagnostic(
                f"phi {phi:g}: the scaled network would have {total:,} blocks "
                f"(depth x{co.depth:.3g}); archspec builds at most {MAX_BLOCKS:,}",
                valid.document.position(("scaling",)),
                "scaling",
            )
        )
    rate = spec.regularization.drop_path
    index, in_channels, size = 0, stem.out_channels, stem.out_size
    stages = []
    for s, (row, count) in enumerate(zip(valid.stages, layers, strict=True)):
        kind = blocks.get(row.block)
        at[:] = ("stages", "rows", s), ("stages", s)
        out_channels = channels(row.channels)
        stage = []
        for b in range(count):
            block = kind.build(
                row,
                blocks.BlockContext(
                    name=f"stages.{s}.{b}",
                    in_channels=in_channels,
                    out_channels=out_channels,
                    stride=row.stride if b == 0 else 1,
                    in_size=size,
                    # Stochastic depth grows linearly over all blocks of the network.
                    drop_path=rate * index / total,
                    activation=activation,
                    padding=padding,
                    norm=norm,
                    make_divisible=lambda v: make_divisible(v, divisor),
                ),
            )
            stage.append(block)
            index, in_channels, size = index + 1, out_channels, block.out_size
        stages.append(ir.Stage(name=f"stages.{s}", blocks=tuple(stage)))

    at[:] = ("head",), ("head",)
    head = ir.ConvNormAct(
        name="head",
        in_channels=in_channels,
        out_channels=channels(spec.head.channels),
        kernel=1,
        stride=1,
        padding=padding,
        activation=activation,
        norm=norm,
        in_size=size,
        out_size=size,
    )
    at[:] = ("scaling",), ("scaling",)
    pre = spec.input.preprocess
    module, class_name, title = _names(valid, co)
    return ir.Network(
        module=module,
        class_name=class_name,
        title=title,
        source=ir.Source(
            # Only the file name, and only safe characters of it: it is printed
            # into generated headers, and must not depend on the working folder.
            spec=re.sub(r"[^A-Za-z0-9_.\-]", "_", Path(valid.document.file).name)[:128],
            phi=co.phi,
            rule=co.rule,
            width=co.width,
            depth=co.depth,
            resolution=co.resolution,
            dropout=co.dropout,
        ),
        input=ir.Input(
            channels=spec.input.channels,
            resolution=resolution,
            preprocess=ir.Preprocess(
                scale=pre.scale, mean=tuple(pre.mean), std=tuple(pre.std)
            )
            if pre
            else None,
        ),
        stem=stem,
        stages=tuple(stages),
        head=head,
        classifier=ir.Classifier(
            in_features=head.out_channels,
            num_classes=spec.head.classes,
            dropout=co.dropout,
        ),
    )


def _settings(valid: ValidSpec, co: Coefficients) -> tuple[str, str, ir.Norm]:
    """Network-wide defaults, with the spec's per-variant overrides applied."""
    d = valid.spec.defaults
    activation, padding, norm = d.activation, d.padding, d.norm
    for override in valid.spec.per_variant:
        if co.is_published and co.phi in override.phi:
            activation = override.activation or activation
            padding = override.padding or padding
            norm = override.norm or norm
    return activation, padding, ir.Norm(eps=norm.eps, momentum=norm.momentum)


def _names(valid: ValidSpec, co: Coefficients) -> tuple[str, str, str]:
    """efficientnet_b3 / EfficientNetB3 / EfficientNet-B3 (phi2_5 for the formula)."""
    spec = valid.spec
    title = spec.title or spec.class_name
    if co.is_published:
        prefix = spec.scaling.variant_prefix
        suffix = f"{prefix}{co.phi}"
        return (
            f"{spec.name}_{suffix}",
            f"{spec.class_name}{suffix.capitalize()}",
            f"{title}-{suffix.upper()}",
        )
    text = phi_text(co.phi)
    return (
        f"{spec.name}_phi{text}",
        f"{spec.class_name}Phi{text}",
        f"{title} (phi={co.phi:g})",
    )
