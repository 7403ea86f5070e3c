"""Two backends of one variant compared through their runtime adapters:
what `archspec check --backends A,B` runs, for any two registered backends
that have one (`Pair` is the default pair, torch,keras).

A side is a runtime adapter (a backend's `runtime`, archspec.backends.adapter:
build a model from the canonical weights on a device and in a dtype, run it
to its maps at the stem, each stage and the head's convolutions and its
logits, as NHWC arrays in eval or train mode, take input gradients, switch
to float64). PyTorch draws the random weights and batch-norm statistics
(`calibrate.randomize`), as for every check; each side then holds them in
its own layout. The maps both sides report are compared, in order, so that
a mismatch points at the stage where it starts; the bounds are
archspec.parity.tolerance's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import backends, ir, runtime
from ..errors import SpecError
from . import tolerance
from .calibrate import randomize
from .tolerance import Result, error


@dataclass
class Sides:
    """Two backends' models of one variant holding the same weights, in
    `dtype` on `device` and, for float32 ones, float64 copies (built on
    first use)."""

    network: ir.Network
    names: tuple[str, str]
    folder: Path | None
    models: tuple[Any, Any]
    device: str = "cpu"
    dtype: str = "float32"
    _float64: dict[int, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        network: ir.Network,
        names: tuple[str, str],
        folder: Path | None,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        seed: int = 0,
        corrupt: Callable[[dict[str, Any]], None] | None = None,
        size: int | None = None,
    ) -> Sides:
        """`size`: the input size the comparisons will use (default: the
        variant's resolution), which the random statistics are calibrated
        at. `corrupt`: changes the second side's weights (canonical layout)
        before they are loaded, to test the checker."""
        import torch  # before TensorFlow, always

        torch.manual_seed(seed)
        model = runtime.torch_model(network, folder).eval()
        randomize(model, size or network.input.resolution, seed)
        state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        theirs = dict(state)
        if corrupt is not None:
            corrupt(theirs)
        built = tuple(
            backends.adapter(name).build(
                network, weights, folder, device=device, dtype=dtype
            )
            for name, weights in zip(names, (state, theirs), strict=True)
        )
        return cls(network, names, folder, built, device, dtype)

    @property
    def exact(self) -> bool:
        """Whether the modes are compared on float64 copies (float32 sides)."""
        return self.dtype == "float32"

    def float64(self) -> tuple[Any, Any]:
        """Float64 copies of both models, each holding its own float32
        model's weights (what its transfer gave it)."""
        return self.float64_copy(0), self.float64_copy(1)

    def float64_copy(self, index: int) -> Any:
        """One side's float64 copy, built on first use: an eval comparison
        needs only the first side's (its own rounding), and a Flax copy costs
        a trace of the whole model (NASNet-A Large: 23 s)."""
        import numpy as np

        if index not in self._float64:
            name, model = self.names[index], self.models[index]
            adapter = backends.adapter(name)
            state = {
                k: v.astype(np.float64) if v.dtype.kind == "f" else v
                for k, v in adapter.state(model, self.network).items()
            }
            with adapter.float64():
                self._float64[index] = adapter.build(
                    self.network, state, self.folder, device=self.device
                )
        return self._float64[index]

    def check(self, size: int, *, batch: int, modes: bool) -> list[Result]:
        """What `archspec check` compares: eval mode at `size` and the next
        odd size (tolerance.sizes), then, if `modes`, training mode and (for
        float32 sides) input gradients, on the float64 copies."""
        sizes = tolerance.sizes(size)
        found = [self.compare(s, batch=batch) for s in sizes]
        if modes:
            exact = tolerance.exact_size(sizes[0])
            found.append(self.compare(exact, batch=batch, train=True))
            if self.exact:
                found.append(self.compare_input_gradients(exact, batch=batch))
        return found

    def compare(
        self, size: int, *, batch: int = 2, seed: int = 0, train: bool = False
    ) -> Result:
        """The maps both sides report and the logits on one batch. Eval mode
        in float32 is bound by the first side's own float32 rounding, then
        the second's (tolerance). Training mode (batch statistics) runs on
        the float64 copies of float32 sides: over the few pixels of a deep
        stage at a small size, batch statistics turn float32 rounding into
        errors of order one (MobileNetV3-Large-0.75 at 64 px: torch's own
        float32 train-mode logits 30% off its float64)."""
        import numpy as np

        net = self.network
        x = images(net, np.random.default_rng(seed), batch, size)
        a, b = (backends.adapter(n) for n in self.names)
        result = Result(net, size, "train" if train else "eval")
        if train and self.exact:
            x = x.astype(np.float64)
            ma, mb = self.float64()
            with a.float64():
                ours = a.run(ma, x, train=True)
            with b.float64():
                theirs = b.run(mb, x, train=True)
            result.tolerance = tolerance.bound("float64")
        else:
            ours = a.run(self.models[0], x, train=train)
            _finite(ours, f"{net.title} at {size} px: {a.name}'s own")
            theirs = b.run(self.models[1], x, train=train)
            own = self._own(0, x, ours["logits"]) if self.exact else 0.0
            result.tolerance = tolerance.bound(self.dtype, own)
        for where, map_ in ours.items():
            if where in theirs:
                result.rows.append(error(where, theirs[where], map_))
        if self.exact and not train:
            tolerance.second_opinion(result, lambda: self._own(1, x, theirs["logits"]))
        return result

    def compare_input_gradients(
        self, size: int, *, batch: int = 2, seed: int = 0
    ) -> Result:
        """d(sum(logits * w)) / d(input) through the float64 copies (eval
        mode; see tolerance for why float64). Float32 sides only."""
        import numpy as np

        if not self.exact:
            raise ValueError("input gradients are compared for float32 sides only")
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
        """A side's own float32 error: its float64 copy against `float32`
        (0 where its framework cannot run float64 here)."""
        import numpy as np

        adapter = backends.adapter(self.names[index])
        if not adapter.float64_supported():
            return 0.0
        with adapter.float64():
            exact = adapter.run(
                self.float64_copy(index), x.astype(np.float64), maps=False
            )
        return error("float64", float32, exact["logits"]).max_rel


def _finite(maps: dict[str, Any], whose: str) -> None:
    """The reference side's maps must be numbers to compare the other's with:
    random weights calibrated on a few pixels can overflow float32 in a deep
    stage (DenseNet-169 at 34 px: inf at its last dense block, in every
    framework alike)."""
    import numpy as np

    bad = next((w for w, m in maps.items() if not np.isfinite(m).all()), None)
    if bad is not None:
        raise SpecError(
            f"{whose} {bad} is not finite: its random weights, calibrated at this "
            "size, overflow float32 where the deep stages see few pixels; "
            "compare at a larger --size"
        )


def images(net: ir.Network, rng: Any, batch: int, size: int) -> Any:
    """A float32 NCHW batch in the model's input range: images in 0-255 when the
    model normalises inside, else normalised ones."""
    import numpy as np

    shape = (batch, net.input.channels, size, size)
    if net.input.preprocess:
        return rng.uniform(0, 255, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)
