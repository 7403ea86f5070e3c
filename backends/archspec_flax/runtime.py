"""The Flax backend's runtime adapter: what archspec's tools need to use a
generated Flax module (build a model, move weights in the canonical layout,
run it in eval and train mode and in float64). Imports jax and flax only
when called; the compiler never does.

The canonical layout is PyTorch's state dict as NumPy arrays (what the
references and `archspec weights` hold); archspec.weights maps it to Flax's
state paths and kernel layouts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from archspec import ir, runtime
from archspec.weights import flax_to_torch, torch_to_flax


class FlaxRuntime:
    name = "flax"
    layout = "NHWC"
    extra = "archspec[flax]"

    def model(self, network: ir.Network, folder=None, **kwargs: Any) -> Any:
        """A freshly initialised model (kwargs: the generated constructor's)."""
        return runtime.flax_model(network, folder, **kwargs)

    def build(
        self, network: ir.Network, state: dict[str, Any], folder=None, **kwargs: Any
    ) -> Any:
        """A model holding `state` (canonical layout), built without drawing
        its random initial weights (B0: 1.6 s instead of 22 s eagerly); its
        dtype is the arrays' (float64 inside `float64()`)."""
        from flax import nnx

        module = runtime.import_generated(network, "flax", folder)
        cls = getattr(module, network.class_name)
        model = nnx.eval_shape(lambda: cls(**kwargs))
        self.load(model, network, state)
        _concrete_rngs(model)
        return model

    def load(self, model: Any, network: ir.Network, state: dict[str, Any]) -> None:
        runtime.set_flax_arrays(model, torch_to_flax(network, state))

    def state(self, model: Any, network: ir.Network) -> dict[str, Any]:
        return flax_to_torch(network, runtime.flax_arrays(model))

    @contextlib.contextmanager
    def float64(self) -> Iterator[None]:
        """Arrays may be float64 inside (JAX rounds them to float32 outside)."""
        import jax

        with jax.enable_x64(True):
            yield

    def run(
        self, model: Any, x: Any, *, train: bool = False, maps: bool = True
    ) -> list[Any]:
        """[stem output, each stage's, logits] (or [logits] without `maps`)
        for the NCHW NumPy batch x, as NHWC NumPy arrays. train: batch
        statistics, dropout and drop path off; the model's running statistics
        are left as they were."""
        import jax
        import numpy as np
        from flax import nnx

        for _, m in nnx.iter_modules(model):
            if isinstance(m, nnx.Dropout) and train:
                m.rate = 0.0
        graph, state = nnx.split(model)

        def forward(state, x):
            net = nnx.merge(graph, state)
            found = []
            if maps:
                cells = hasattr(net.stages[0], "skip_reduction")
                h = prev = net.forward_stem(x, train=train)
                found.append(h)
                for stage in net.stages:
                    if cells:
                        h, prev = stage(h, prev, train=train)
                    else:
                        h = stage(h, train=train)
                    found.append(h)
            found.append(net(x, train=train))
            return found

        out = jax.jit(forward)(state, jax.numpy.asarray(x.transpose(0, 2, 3, 1)))
        return [np.asarray(o) for o in out]

    def input_gradient(self, model: Any, x: Any, w: Any) -> Any:
        """d(sum(logits * w)) / dx at the NCHW batch x (eval mode), NHWC."""
        import jax
        import jax.numpy as jnp
        import numpy as np
        from flax import nnx

        graph, state = nnx.split(model)

        def loss(image):
            return jnp.sum(nnx.merge(graph, state)(image) * w)

        return np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(x.transpose(0, 2, 3, 1))))


def _concrete_rngs(model: Any) -> None:
    """Real keys for the RNG streams of a model built abstractly (its dropout
    layers'): the seed-0 key folded with each stream's index, so no two
    layers draw the same masks."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    state = nnx.state(model, nnx.RngState)
    for i, (_, variable) in enumerate(nnx.to_flat_state(state)):
        if isinstance(variable, nnx.RngKey):
            variable.set_value(jax.random.fold_in(jax.random.key(0), i))
        else:
            variable.set_value(jnp.zeros((), jnp.uint32))
    nnx.update(model, state)
