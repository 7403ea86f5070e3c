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
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from archspec import convert, ir, runtime
from archspec.errors import SpecError
from archspec.weights import flax_to_torch, torch_to_flax


class FlaxRuntime(runtime.Adapter):
    name = "flax"
    layout = "NHWC"
    extra = "archspec[flax]"

    def build(
        self,
        network: ir.Network,
        state: dict[str, Any],
        folder=None,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        **kwargs: Any,
    ) -> Any:
        """A model holding `state` (canonical layout), built without drawing
        its random initial weights (B0: 1.6 s instead of 22 s eagerly); its
        dtype is the arrays' (float64 inside `float64()`). On JAX's default
        device, in float32 only (`archspec profile` casts for itself)."""
        from flax import nnx

        if (device, dtype) != ("cpu", "float32"):
            raise SpecError(
                f"--device {device} --dtype {dtype}: flax models are compared "
                "in float32 on the CPU only"
            )

        cls = self.generated(network, folder)
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
    ) -> dict[str, Any]:
        """{where: map} at the stem and each stage, then {"logits": ...}
        (only the logits without `maps`), for the NCHW NumPy batch x, as NHWC
        NumPy arrays. train: batch statistics, dropout and drop path off; the
        model's running statistics are left as they were."""
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

        with _xla_memory():
            out = jax.jit(forward)(state, jax.numpy.asarray(x.transpose(0, 2, 3, 1)))
        # Stage i is the IR's `stages.{i}` (archspec.expand names them so).
        wheres = ["stem", *(f"stages.{i}" for i in range(len(model.stages)))]
        names = [*wheres, "logits"][-len(out) :]
        return dict(zip(names, map(np.asarray, out), strict=True))

    def float64_supported(self) -> bool:
        return True

    def input_gradient(self, model: Any, x: Any, w: Any) -> Any:
        """d(sum(logits * w)) / dx at the NCHW batch x (eval mode), NHWC."""
        import jax
        import jax.numpy as jnp
        import numpy as np
        from flax import nnx

        graph, state = nnx.split(model)

        def loss(image):
            return jnp.sum(nnx.merge(graph, state)(image) * w)

        with _xla_memory():
            image = jnp.asarray(x.transpose(0, 2, 3, 1))
            return np.asarray(jax.jit(jax.grad(loss))(image))

    # Weight files: safetensors, keyed by nnx.state's paths, in Flax's layouts.

    def read(self, network: ir.Network, src: Path) -> dict[str, Any]:
        """A generated Flax model's .safetensors file in the canonical layout."""
        arrays = convert.load_safetensors(src)
        try:
            return flax_to_torch(network, arrays)
        except SpecError as exc:
            why = "; ".join(
                d.message.removeprefix("weights: ") for d in exc.diagnostics.items
            )
            raise SpecError(
                f"{src}: not Flax weights of {network.title}: {why}"
            ) from None

    def write(self, network: ir.Network, state: dict[str, Any], dst: Path) -> int:
        """`state` as a .safetensors file of the model's state paths (load it
        with runtime.set_flax_arrays); returns the tensor count."""
        if dst.suffix != ".safetensors":
            raise SpecError(
                f"{dst}: Flax weight files are safetensors files; name it *.safetensors"
            )
        arrays = torch_to_flax(network, state)  # checks every tensor
        with convert.atomic(dst, ".safetensors") as temp:
            convert.safetensors().save_file(
                arrays,
                temp,
                metadata={"framework": "flax", "model": network.class_name},
            )
        return len(arrays)

    # `archspec profile`: the process is this backend's alone.

    def configure(self, device: str, threads: int | None = None) -> None:
        """Pin JAX to `device`; `threads` limits XLA's CPU thread pool by
        pinning the process to that many CPUs (XLA sizes its pool from the
        CPUs the process may use)."""
        if threads and hasattr(os, "sched_setaffinity"):
            # Before JAX starts.
            cpus = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, cpus[:threads])
        import jax
        import jax.numpy as jnp

        if device == "cpu":
            jax.config.update("jax_platforms", "cpu")
        else:
            try:
                jax.devices("gpu")
            except RuntimeError:
                raise SpecError(
                    "--device cuda: JAX sees no GPU on this machine "
                    "(pip install 'jax[cuda12]')"
                ) from None
        # One-time set-up (the XLA client, its thread pools) must not count as
        # the first variant's memory.
        jax.jit(lambda a: a * 2)(jnp.ones(8)).block_until_ready()

    def forward(
        self, network: ir.Network, folder: Path, *, device: str, dtype: str, batch: int
    ) -> Callable[[], None]:
        """The eval-mode forward of a model holding random weights
        (archspec.weights.random_state; built abstractly, as eager
        initialisation is slow), compiled ahead of time (not timed)."""
        import jax
        import jax.numpy as jnp
        import numpy as np
        from flax import nnx

        from archspec.weights import random_state

        model = self.build(network, random_state(network), folder)
        graph, state = nnx.split(model)
        jnp_dtype = jnp.dtype(dtype)
        target = jax.devices()[0]

        def cast(a):
            return a.astype(jnp_dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a

        state = jax.device_put(jax.tree.map(cast, state), target)
        del model
        size = network.input.resolution
        x = np.random.default_rng(0).random(
            (batch, size, size, network.input.channels), dtype=np.float32
        )
        x = jax.device_put(jnp.asarray(x, dtype=jnp_dtype), target)

        def logits(state, x):
            return nnx.merge(graph, state)(x, train=False)

        compiled = jax.jit(logits).lower(state, x).compile()

        def forward() -> None:
            compiled(state, x).block_until_ready()

        return forward

    def free_memory(self, device: str) -> int | None:
        """Bytes free on the GPU, as XLA's allocator sees them."""
        if device != "cuda":
            return None
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        if "bytes_limit" not in stats:
            return None
        return stats["bytes_limit"] - stats.get("bytes_in_use", 0)

    def memory_start(self, device: str) -> None:
        """The GPU peak is not measured (XLA's allocator)."""

    def memory_peak(self, device: str) -> None:
        return None

    def release(self, device: str) -> None:
        import jax

        jax.clear_caches()

    def versions(self, device: str) -> dict[str, Any]:
        import flax
        import jax

        info: dict[str, Any] = {
            "jax": jax.__version__,
            "flax": flax.__version__,
            "jax_backend": jax.default_backend(),
        }
        if hasattr(os, "sched_getaffinity"):
            info["cpus_allowed"] = len(os.sched_getaffinity(0))
        if device == "cuda":
            info["gpu"] = jax.devices()[0].device_kind
        return info


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


@contextlib.contextmanager
def _xla_memory() -> Iterator[None]:
    """XLA running out of memory as a clear error. In float64 (check's
    train-mode and gradient modes) its CPU backend computes a depthwise
    convolution as a dense one with a block-diagonal k*k*C*C kernel (float32
    ones stay grouped), so wide depthwise layers need gigabytes whatever the
    image size: EfficientNetV2-L's float64 input gradient asked for 35 GB at
    64 px."""
    import jax

    try:
        yield
    except jax.errors.JaxRuntimeError as exc:
        if "RESOURCE_EXHAUSTED" not in str(exc):
            raise
        raise SpecError(
            f"flax: XLA ran out of memory ({str(exc).splitlines()[0]}): its CPU "
            "backend expands each float64 depthwise convolution into a dense one; "
            "check this variant with --modes none (no float64 train-mode and "
            "gradient checks), or a smaller variant first"
        ) from None
