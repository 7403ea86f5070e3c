"""Two backends of one variant compared through their runtime adapters
(`archspec check --backends A,B` for pairs other than torch,keras, which
`Pair` compares with its hooks into both frameworks).

A side is a runtime adapter (a backend's `runtime`: build a model from the
canonical weights, run it to [stem, each stage, logits] as NHWC arrays in
eval or train mode, take input gradients, switch to float64). PyTorch draws
the random weights and batch-norm statistics (`calibrate.randomize`), as
for every check; each side then holds them in its own layout. The
comparisons and their bounds are `Pair`'s (archspec.parity.tolerance).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import backends, ir, runtime
from ..errors import SpecError
from . import tolerance
from .calibrate import randomize
from .pair import images
from .tolerance import Result, error


class TorchSide:
    """The generated PyTorch model as a side (its maps NCHW -> NHWC)."""

    name = "torch"

    def build(self, network: ir.Network, state: dict, folder: Path | None) -> Any:
        import torch

        model = runtime.torch_model(network, folder)
        dtype = torch.get_default_dtype()
        model.load_state_dict(
            {
                k: torch.from_numpy(v).to(dtype)
                if v.dtype.kind == "f"
                else torch.from_numpy(v)
                for k, v in state.items()
            }
        )
        return model.eval()

    def state(self, model: Any, network: ir.Network) -> dict[str, Any]:
        return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}

    @contextlib.contextmanager
    def float64(self) -> Iterator[None]:
        import torch

        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            yield
        finally:
            torch.set_default_dtype(default)

    def run(
        self, model: Any, x: Any, *, train: bool = False, maps: bool = True
    ) -> list:
        import torch

        model = copy.deepcopy(model) if train else model  # keeps its statistics
        captured: list[Any] = []
        hooks = []
        if maps:
            first = getattr(model, model_stem_attribute(model))
            for m in (first, *model.stages):
                hooks.append(
                    m.register_forward_hook(
                        lambda _m, _i, out: captured.append(
                            (out[0] if isinstance(out, tuple) else out).clone()
                        )
                    )
                )
        try:
            model.train(train)
            if train:
                for m in model.modules():
                    if hasattr(m, "drop_path") and isinstance(m.drop_path, float):
                        m.drop_path = 0.0
                    if isinstance(m, torch.nn.Dropout):
                        m.p = 0.0
            param = next(model.parameters())
            with torch.no_grad():
                logits = model(torch.from_numpy(x).to(param.dtype))
        finally:
            for hook in hooks:
                hook.remove()
            model.eval()
        found = [t.double().numpy().transpose(0, 2, 3, 1) for t in captured]
        return [*found, logits.double().numpy()]

    def input_gradient(self, model: Any, x: Any, w: Any) -> Any:
        import torch

        param = next(model.parameters())
        tx = torch.from_numpy(x).to(param.dtype).requires_grad_(True)
        (model(tx) * torch.from_numpy(w).to(tx)).sum().backward()
        return tx.grad.numpy().transpose(0, 2, 3, 1)


class KerasSide:
    """The generated Keras model as a side, on Keras's own backend (float64
    needs TensorFlow's)."""

    name = "keras"

    def build(self, network: ir.Network, state: dict, folder: Path | None) -> Any:
        import keras
        import numpy as np

        from ..weights import keras_name, torch_to_keras
        from .frameworks import exact_constants
        from .pair import _features

        float64 = keras.config.floatx() == "float64"
        model = runtime.keras_model(network, folder)
        for name, arrays in torch_to_keras(network, state).items():
            dtype = np.float64 if float64 else np.float32
            model.get_layer(name).set_weights([a.astype(dtype) for a in arrays])
        if float64:
            exact_constants(model)
        boundaries = [
            ("stem", None, keras_name(network.stem[-1].name)),
            *((st.name, None, keras_name(st.blocks[-1].name)) for st in network.stages),
        ]
        model._archspec_features = _features(model, boundaries)
        return model

    def state(self, model: Any, network: ir.Network) -> dict[str, Any]:
        from ..weights import keras_to_torch

        return keras_to_torch(network, runtime.keras_layer_weights(model))

    def float64(self):
        from .frameworks import keras_float64

        return keras_float64()

    def run(
        self, model: Any, x: Any, *, train: bool = False, maps: bool = True
    ) -> list:
        from .frameworks import keras_call, to_numpy

        saved = model.get_weights() if train else None
        if train:
            for layer in model.layers:
                if hasattr(layer, "rate"):  # dropout, drop path included
                    layer.rate = 0.0
        try:
            out = keras_call(
                model._archspec_features, x.transpose(0, 2, 3, 1), training=train
            )
        finally:
            if saved is not None:
                model.set_weights(saved)
        found = [to_numpy(o) for o in out]
        return found if maps else found[-1:]

    def input_gradient(self, model: Any, x: Any, w: Any) -> Any:
        from .frameworks import keras_input_gradient

        return keras_input_gradient(model, x.transpose(0, 2, 3, 1), w)


def model_stem_attribute(model: Any) -> str:
    """The attribute of the model's last stem module (its output is the stem's)."""
    return model._archspec_stem  # set by Sides.build


def side(name: str) -> Any:
    """The runtime adapter of backend `name`."""
    if name == "torch":
        return TorchSide()
    if name == "keras":
        return KerasSide()
    backend = backends.get(name)
    adapter = getattr(backend, "runtime", None)
    if adapter is None:
        raise SpecError(
            f"--backends: backend {name!r} has no runtime adapter to run its models "
            "(compare it with torch,keras through `archspec check` without --backends)"
        )
    return adapter


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
        built = tuple(_build(side(n), network, state, folder) for n in names)
        return cls(network, names, folder, built)

    def float64(self) -> tuple[Any, Any]:
        """Float64 copies of both models, each holding its own float32
        model's weights (what its transfer gave it)."""
        import numpy as np

        if self._float64 is None:
            made = []
            for name, model in zip(self.names, self.models, strict=True):
                adapter = side(name)
                state = {
                    k: v.astype(np.float64) if v.dtype.kind == "f" else v
                    for k, v in adapter.state(model, self.network).items()
                }
                with adapter.float64():
                    made.append(_build(adapter, self.network, state, self.folder))
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
        a, b = (side(n) for n in self.names)
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
            adapter = side(name)
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

        adapter = side(self.names[index])
        with adapter.float64():
            exact = adapter.run(self.float64()[index], x.astype(np.float64), maps=False)
        return error("float64", float32, exact[-1]).max_rel


def _build(adapter: Any, network: ir.Network, state: dict, folder: Path | None) -> Any:
    model = adapter.build(network, state, folder)
    if isinstance(adapter, TorchSide):
        last = network.stem[-1].name
        if not hasattr(model, last):
            raise SpecError(
                f"check: the stem's last layer {last!r} is not a module of the "
                "PyTorch model"
            )
        model._archspec_stem = last
    return model
