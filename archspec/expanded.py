"""An IR network written as YAML: the output of `archspec expand`, valid input again."""

from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from . import __version__, ir, render


def dump(network: ir.Network) -> str:
    data = _commented(network.model_dump(mode="json"), depth=0)
    yaml = YAML(typ="rt", pure=True)
    yaml.width = 4096  # one block per line, however long
    yaml.indent(mapping=2, sequence=4, offset=2)
    out = io.StringIO()
    out.write(
        f"# {network.title}, expanded by archspec {__version__} from "
        f"{network.source.spec} ({render.selector(network.source)}).\n"
        "# Every block is explicit; this file is itself valid input to archspec.\n"
    )
    yaml.dump(data, out)
    return out.getvalue()


def _commented(value: Any, depth: int) -> Any:
    """Plain data -> ruamel nodes: a block's fields one a line and its graph
    one node a line; layers and small mappings on one line each."""
    if isinstance(value, dict):
        # A layer of the stem or head reads the one before: no inputs to list.
        value = {k: v for k, v in value.items() if not (k == "inputs" and not v)}
        node = CommentedMap((k, _commented(v, depth + 1)) for k, v in value.items())
        flow = "kind" in value and "graph" not in value
        if flow or set(value) <= {"eps", "momentum"}:
            node.fa.set_flow_style()
        return node
    if isinstance(value, list):
        node = CommentedSeq(_commented(v, depth + 1) for v in value)
        if all(isinstance(v, int | float) for v in value):
            node.fa.set_flow_style()
        return node
    return value
