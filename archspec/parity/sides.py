"""Two backends of one variant compared through their runtime adapters
(`archspec check --backends A,B` for any two registered backends that have
one, torch,keras aside: `Pair` compares those, with the CUDA, bfloat16 and
corrupted-transfer runs only it offers).

A side is a runtime adapter (a backend's `runtime`, archspec.backends.adapter:
build a model from the canonical weights, run it to [stem, each stage, logits] as NHWC arrays in
eval or train mode, take input gradients, switch to float64). PyTorch draws
the random weights and batch-norm statistics (`calibrate.randomize`), as
for every check; each side then holds them in its own layout. The
comparisons and their bounds are `Pair`'s (archspec.parity.tolerance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import backends, ir, runtime
from . import tolerance
from .calibrate import randomize
from .pair import images
from .tolerance import Result, error


@dataclass
class Sides:
    """Two backends' models of one variant holding the same weights, in
    float32 and (built on first use) float64."""

    network: ir.Network
    names: tuple[str, str]
    folder: Path | None
    models: tuple[Any, Any]
    _float64: tuple[Any, Any] | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        network: ir.Network,
        names: tuple[str, str],
        folder: Path | None,
        *,
        seed: int = 0,
        size: int | None = None,
    ) -> Sides:
        import torch

        torch.manual_seed(seed)
        model = runtime.torch_model(network, folder).eval()
        randomize(model, size or network.input.resolution, seed)
        state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        built = tuple(backends.adapter(n).build(network, state, folder) for n in names)
        return cls(network, names, folder, built)

    def float64(self) -> tuple[Any, Any]:
        """Float64 copies of both models, each holding its own float32
        model's weights (what its transfer gave it)."""
        import numpy as np

        if self._float64 is None:
            made = []
            for name, model in zip(self.names, self.models, strict=True):
                adapter = backends.adapter(name)
                state = {
                    k: v.astype(np.float64) if v.dtype.kind == "f" else v
                    for k, v in adapter.state(model, self.network).items()
                }
                with adapter.float64():
                    made.append(adapter.build(self.network, state, self.folder))
            self._float64 = tuple(made)
        return self._float64

    def check(self, size: int, *, batch: int, modes: bool) -> list[Result]:
        sizes = tolerance.sizes(size)
        found = [self.compare(s, batch=batch) for s in sizes]
        if modes:
            exact = tolerance.exact_size(sizes[0])
            found.append(self.compare(exact, batch=batch, train=True))
            found.append(self.compare_input_gradients(exact, batch=batch))
        return found

    def compare(
        self, size: int, *, batch: int = 2, seed: int = 0, train: bool = False
    ) -> Result:
        """Stage-boundary maps and logits of both sides on one batch: eval
        mode in float32 (bound: the first side's own float32 rounding, then
        the second's), training mode on the float64 copies."""
        import numpy as np

        net = self.network
        x = images(net, np.random.default_rng(seed), batch, size)
        a, b = (backends.adapter(n) for n in self.names)
        result = Result(net, size, "train" if train else "eval")
        if train:
            x = x.astype(np.float64)
            ma, mb = self.float64()
            with a.float64():
                ours = a.run(ma, x, train=True)
            with b.float64():
                theirs = b.run(mb, x, train=True)
            result.tolerance = tolerance.bound("float64")
        else:
            ours = a.run(self.models[0], x)
            theirs = b.run(self.models[1], x)
            result.tolerance = tolerance.bound("float32", self._own(0, x, ours[-1]))
        wheres = ["stem", *(s.name for s in net.stages)]
        for where, o, t in zip(wheres, ours[:-1], theirs[:-1], strict=False):
            result.rows.append(error(where, t, o))
        result.rows.append(error("logits", theirs[-1], ours[-1]))
        if not train:
            tolerance.second_opinion(result, lambda: self._own(1, x, theirs[-1]))
        return result

    def compare_input_gradients(
        self, size: int, *, batch: int = 2, seed: int = 0
    ) -> Result:
        import numpy as np

        net = self.network
        rng = np.random.default_rng(seed)
        x = images(net, rng, batch, size).astype(np.float64)
        w = rng.standard_normal((batch, net.classifier.out_features))
        found = []
        for name, model in zip(self.names, self.float64(), strict=True):
            adapter = backends.adapter(name)
            with adapter.float64():
                found.append(adapter.input_gradient(model, x, w))
        result = Result(
            net, size, "input gradient", tolerance=tolerance.bound("float64")
        )
        result.rows.append(error("d logits / d input", found[1], found[0]))
        return result

    def _own(self, index: int, x: Any, float32: Any) -> float:
        """A side's own float32 error: its float64 copy against `float32`."""
        import numpy as np

        adapter = backends.adapter(self.names[index])
        with adapter.float64():
            exact = adapter.run(self.float64()[index], x.astype(np.float64), maps=False)
        return error("float64", float32, exact[-1]).max_rel
