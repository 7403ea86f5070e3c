"""archspec's PyTorch backend: one readable, self-contained module per variant.

The generated module imports torch only. Its parameter names follow the IR's
dotted layer names exactly (`stages.2.0.depthwise.conv.weight`), which is what
lets weights move by name between backends and from the reference
implementations (archspec.references). This package itself never imports torch.

Templates: `module.py.j2` (the file), `layers.py.j2` (helpers every kind
uses), `nodes.py.j2` (stem and head layers), `model.py.j2` (the model class)
and one `blocks/{kind}.py.j2` per block kind with the macros `definition()`,
`construct(block, indent)` and `describe(stage)`. A block kind from a plugin
brings its own folder (`BlockKind.templates["torch"]`), searched first. A
kind without a template (a kind written in a spec; every kind with
`emit(network, generic=True)`) is written from its graph: `generic.py` works
out one class per block structure, `templates/generic.py.j2` has the same
macros.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from archspec import blocks, ir
from archspec.errors import SpecError
from archspec.render import (
    Provenance,
    activations,
    bare_convs,
    cell_wiring,
    environment,
    features,
    head,
    literal,
    nodes,
    paddings,
    uniform,
)
from archspec.structure import describe_stage, structures

from .generic import Writer

TEMPLATES = Path(__file__).parent / "templates"

# IR activation -> the torch module that computes it, and its name in prose.
# (`ACTIVATIONS[name]` is source text, as it appears in generated code.)
ACTIVATIONS = {
    "silu": "nn.SiLU(inplace=True)",
    "relu": "nn.ReLU(inplace=True)",
    "relu6": "nn.ReLU6(inplace=True)",
    "hardswish": "nn.Hardswish(inplace=True)",
    "gelu": "nn.GELU()",
}
ACTIVATION_NAMES = {
    "silu": "SiLU",
    "relu": "ReLU",
    "relu6": "ReLU6",
    "hardswish": "hardswish",
    "gelu": "GELU",
}
# Stem and head layers that become a module attribute (the rest are inline).
MODULES = ("conv", "norm_act", "act", "pool", "dropout", "dense")
TOP_LEVEL = (*MODULES, "global_pool")


class TorchBackend:
    name = "torch"
    description = "PyTorch nn.Module per variant (imports torch only)"

    def __init__(self) -> None:
        self._envs: dict[tuple[Path, ...], jinja2.Environment] = {}

    @property
    def runtime(self):
        """The runtime adapter (imports torch when used)."""
        from .runtime import TorchRuntime

        return TorchRuntime()

    def _environment(self, kinds: list[str]) -> jinja2.Environment:
        """Templates of plugin kinds first, then the built-in ones."""
        folders = [
            Path(folder)
            for kind in kinds
            if (registered := blocks.get(kind)) is not None
            and (folder := registered.templates.get(self.name)) is not None
        ]
        key = (*dict.fromkeys(folders), TEMPLATES)
        if key not in self._envs:
            env = environment(list(key))
            env.globals["ACTIVATIONS"] = ACTIVATIONS
            env.globals["ACTIVATION_NAMES"] = ACTIVATION_NAMES
            env.globals["modules"] = MODULES
            self._envs[key] = env
        return self._envs[key]

    def _templated(self, env: jinja2.Environment, kind: str) -> bool:
        """Whether a kind has a template of its own (else: its graph)."""
        try:
            env.get_template(f"blocks/{kind}.py.j2")
        except jinja2.TemplateNotFound:
            return False
        except jinja2.TemplateSyntaxError as exc:
            raise SpecError(
                f"torch backend: the template of block kind {kind!r} is invalid: "
                f"{exc.filename}:{exc.lineno}: {exc.message}"
            ) from None
        return True

    def emit(self, network: ir.Network, *, generic: bool = False) -> dict[str, str]:
        """The module of one network. Kinds without a template of their own
        (spec-defined ones), or every kind with `generic`, are written from
        their graphs."""
        kinds = sorted({block.kind for block in network.blocks})
        env = self._environment(kinds)
        from_graph = {k for k in kinds if generic or not self._templated(env, k)}
        acts = activations(network, self.name, ACTIVATIONS)
        top = head(network, self.name)
        _check_supported(network)
        cells, skip_reduction = cell_wiring(network, self.name)
        # Convolutions in blocks written from their graphs state their own
        # rule where it is not PADDING.
        pads = paddings(network, self.name, from_graph)
        stochastic_depth = any(
            type(b).stochastic_depth or b.drops_path for b in network.blocks
        )
        classifier = top.classifier
        init_args = [f"num_classes: int = {classifier.out_features}"]
        # The dropout right before the classifier takes the `drop_rate` argument.
        if top.dropout is not None:
            init_args.append(f"drop_rate: float = {network.dropout!r}")
        # forward_features() ends at the global pool; forward_head() starts there.
        pool = top.pool
        if stochastic_depth:
            init_args.append(f"drop_path_rate: float = {network.drop_path!r}")
        conv_bias = bool(
            uniform(
                network,
                "bias",
                self.name,
                (ir.Conv, ir.Block),
                besides=bare_convs(network, from_graph),
            )
        )
        groups = structures(network.blocks, from_graph)
        # Kinds the graphs use as ops (NASNet's separable branch) come first.
        kinds = [*(k for k in groups if k not in kinds), *kinds]
        writer = Writer(acts.default, acts.per_layer, conv_bias, pads, groups)
        classes = {
            kind: [writer.write(s) for s in found] for kind, found in groups.items()
        }
        structure_of = {
            block.name: (s.name, _arguments(s.call_arguments(block)))
            for found in groups.values()
            for s in found
            for block in s.blocks
        }
        class_of = {block: name for block, (name, _) in structure_of.items()}
        stage_text = {
            stage.name: describe_stage(stage, i, class_of, stage.blocks[0].kind)
            for i, stage in enumerate(network.stages, 1)
            if stage.blocks[0].kind in from_graph
        }
        source = env.get_template("module.py.j2").render(
            generic=classes,
            structure_of=structure_of,
            stage_text=stage_text,
            # A squeeze-excitation that must not gate its input in place.
            se_copies=any(c.se_copies for found in classes.values() for c in found),
            padded_conv=writer.padded_conv,
            pool_same=writer.pool_same,
            cells=cells,
            skip_reduction=skip_reduction,
            net=network,
            about=Provenance.of(network),
            kinds=kinds,
            norm=uniform(network, "norm", self.name),
            padding=pads.default,
            paddings=pads,
            # ConvBNAct's; a stem or head convolution without norm is an
            # nn.Conv2d of its own.
            conv_bias=conv_bias,
            activation=acts.default,
            se_activation=acts.se or acts.default,
            se_gate=uniform(network, "gate", self.name, (ir.SqueezeExcite,)),
            per_layer=acts.per_layer,
            used_activations=acts.used,
            classifier=classifier,
            head_dropout=top.dropout,
            feature_head=network.head[:pool],
            pooled_head=network.head[pool:-1],
            **_timm_names(network, pool),
            features=features(network),
            init_args=init_args,
            stochastic_depth=stochastic_depth,
            squeeze_excitation=any(
                isinstance(node, ir.SqueezeExcite) for node in nodes(network)
            ),
            norm_act=any(isinstance(node, ir.NormAct) for node in nodes(network)),
        )
        return {f"{network.module}.py": source}


def _timm_names(network: ir.Network, pool: int) -> dict:
    """What timm's model API names: the transform the weights expect, the first
    convolution, the final norm (forward_intermediates' `norm`), and the
    top-level modules before and after the stages (group_matcher)."""
    weighted = ("conv", "norm_act", "dense")
    first = next(layer for layer in network.stem if isinstance(layer, ir.Conv))
    final_norm = [
        layer.name for layer in network.head[:pool] if layer.kind == "norm_act"
    ]
    return {
        "data": network.input.data or ir.Data(),
        "first_conv": first.name + (".conv" if first.norm else ""),
        "final_norm": final_norm[-1] if final_norm else None,
        "stem_names": [layer.name for layer in network.stem if layer.kind in weighted],
        # The classifier stays out: timm gives it a group of its own, last.
        "head_names": [
            layer.name for layer in network.head[:-1] if layer.kind in weighted
        ],
    }


def _arguments(values: list[tuple[str, int]]) -> list[str]:
    """A block's constructor arguments: widths in and out by position, as
    torchvision writes them, the rest by name."""
    return [
        literal(v) if k in ("in_channels", "out_channels") else f"{k}={literal(v)}"
        for k, v in values
    ]


def _check_supported(network: ir.Network) -> None:
    """What this backend cannot emit yet is a clear error, never wrong code
    (archspec.render checks what every backend needs of the head)."""

    def refuse(what: str) -> None:
        raise SpecError(f"torch backend: {what} is not supported yet")

    for layer in network.layers:
        if layer.kind not in TOP_LEVEL:
            refuse(f"a {layer.kind!r} layer in the stem or head ({layer.name})")
        if isinstance(layer, ir.Conv) and layer.groups != 1:
            refuse(f"a stem or head convolution with groups ({layer.name})")
        if isinstance(layer, ir.Conv) and layer.norm is None:
            # Emitted as an nn.Conv2d, which pads k // 2 on every side.
            if layer.activation is not None:
                refuse(
                    f"a stem or head convolution with an activation but no batch "
                    f"norm ({layer.name})"
                )
            if layer.stride > 1 and layer.kernel > 1 and layer.padding != "symmetric":
                refuse(
                    f"a strided stem or head convolution without batch norm that "
                    f"pads {layer.padding!r} ({layer.name}; symmetric is)"
                )
    if len({b.stride_on for b in network.blocks if b.kind == "bottleneck"}) > 1:
        refuse("bottlenecks striding on different convolutions in one network")


BACKEND = TorchBackend()

__all__ = ["BACKEND", "TorchBackend"]
