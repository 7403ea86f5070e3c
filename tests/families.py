"""One variant of every family spec, for the tests that exercise what every
generated model offers (fine-tuning, export, training): the variant with the
fewest FLOPs, so a spec added to specs/ is covered without listing it here."""

from __future__ import annotations

from conftest import SPECS

from archspec import pipeline
from archspec.expand import expand

_cache: dict = {}


def smallest(spec) -> str:
    """The variant of `spec` with the fewest multiply-adds."""
    if spec not in _cache:
        loaded = pipeline.load_spec(spec)
        nets = [expand(loaded, v) for v in pipeline.select(loaded)]
        _cache[spec] = min(nets, key=lambda net: net.flops()).source.variant
    return _cache[spec]


FAMILIES = sorted(SPECS.glob("*.yaml"))
IDS = [spec.stem for spec in FAMILIES]


def torch_before_tensorflow() -> None:
    """torch (and triton) before TensorFlow in a test process that may use
    both: torch's CUDA build segfaults loading triton after TensorFlow."""
    import importlib
    import importlib.util
    import os

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    for first in ("torch", "triton", "torchvision"):
        if importlib.util.find_spec(first) is not None:
            importlib.import_module(first)
