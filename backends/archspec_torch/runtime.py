"""The PyTorch backend's runtime adapter: what archspec's tools need to use a
generated PyTorch module (build a model, move weights in the canonical
layout, run it in eval and train mode and in float64, read and write its
weight files, time it). Imports torch only when called; the compiler never
does.

The canonical layout is PyTorch's own state dict, as NumPy arrays: this
backend's weights need no conversion.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from archspec import convert, ir, runtime
from archspec.errors import SpecError
from archspec.weights import check_state


class TorchRuntime(runtime.Adapter):
    name = "torch"
    layout = "NCHW"
    extra = "archspec[torch]"

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
        """A model holding `state` (canonical layout) in eval mode on
        `device`, in `dtype` (float32: torch's default dtype, so float64
        inside `float64()`, its constants then the doubles of the literals);
        `run` reports its maps at the stem's last layer, each stage and each
        head convolution."""
        import torch

        model = self.model(network, folder, **kwargs)
        self.load(model, network, state)
        maps = [
            ("stem", network.stem[-1].name),
            *((stage.name, stage.name) for stage in network.stages),
            *((x.name, x.name) for x in network.head if isinstance(x, ir.Conv)),
        ]
        for _, path in maps:
            try:
                model.get_submodule(path)
            except AttributeError:
                raise SpecError(
                    f"check: {path!r} is not a module of the PyTorch model"
                ) from None
        model._archspec_maps = maps  # what `run` reports
        if dtype != "float32":
            model = model.to(getattr(torch, dtype))
        return model.to(device).eval()

    def load(self, model: Any, network: ir.Network, state: dict[str, Any]) -> None:
        import torch

        dtype = torch.get_default_dtype()
        model.load_state_dict(
            {
                k: torch.from_numpy(v).to(dtype)
                if v.dtype.kind == "f"
                else torch.from_numpy(v)
                for k, v in state.items()
            }
        )

    def state(self, model: Any, network: ir.Network) -> dict[str, Any]:
        return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}

    @contextlib.contextmanager
    def float64(self) -> Iterator[None]:
        """Models built inside are float64 (torch's default dtype)."""
        import torch

        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            yield
        finally:
            torch.set_default_dtype(default)

    def run(
        self, model: Any, x: Any, *, train: bool = False, maps: bool = True
    ) -> dict[str, Any]:
        """{where: map} at the stem, each stage and each head convolution,
        then {"logits": ...} (only the logits without `maps`), for the NCHW
        NumPy batch x, as NHWC float64 NumPy arrays. train: batch
        statistics, dropout and drop path off, on a copy (the model's running
        statistics are left as they were)."""
        import torch

        model = copy.deepcopy(model) if train else model
        captured: dict[str, Any] = {}

        def keep(where: str) -> Callable:
            # A stage of cells hands on (x, prev); the head may then change x
            # in place (NASNet's ReLU): keep a copy.
            def hook(_m: Any, _i: Any, out: Any) -> None:
                captured[where] = (out[0] if isinstance(out, tuple) else out).clone()

            return hook

        hooks = [
            model.get_submodule(path).register_forward_hook(keep(where))
            for where, path in (model._archspec_maps if maps else [])
        ]
        try:
            model.train(train)
            if train:
                deterministic(model)
            param = next(model.parameters())
            with torch.no_grad():
                logits = model(torch.from_numpy(x).to(param.device, param.dtype))
        finally:
            for hook in hooks:
                hook.remove()
            model.eval()
        found = {
            where: t.double().cpu().numpy().transpose(0, 2, 3, 1)
            for where, t in captured.items()
        }
        found["logits"] = logits.double().cpu().numpy()
        return found

    def input_gradient(self, model: Any, x: Any, w: Any) -> Any:
        """d(sum(logits * w)) / dx at the NCHW batch x (eval mode), NHWC."""
        import torch

        param = next(model.parameters())
        tx = torch.from_numpy(x).to(param.device, param.dtype).requires_grad_(True)
        (model(tx) * torch.from_numpy(w).to(tx)).sum().backward()
        return tx.grad.cpu().numpy().transpose(0, 2, 3, 1)

    def float64_supported(self) -> bool:
        return True

    # Weight files: a state dict, torch.save's format or safetensors.

    def read(self, network: ir.Network, src: Path) -> dict[str, Any]:
        """A weight file (torch.save's or .safetensors) in the canonical layout."""
        return convert.load_state_dict(src)

    def write(self, network: ir.Network, state: dict[str, Any], dst: Path) -> int:
        """`state` as a .safetensors file (by the name), else torch.save's
        format; returns the tensor count."""
        import numpy as np

        check_state(network, state)
        if dst.suffix == ".safetensors":
            arrays = {k: np.ascontiguousarray(v) for k, v in state.items()}
            with convert.atomic(dst, ".safetensors") as temp:
                convert.safetensors().save_file(arrays, temp)
            return len(state)
        try:
            import torch
        except ImportError:
            raise SpecError(
                f"{dst}: torch.save's format needs torch: pip install "
                "'archspec[torch]' (or name the output *.safetensors)"
            ) from None
        with convert.atomic(dst, ".pt") as temp:
            torch.save({k: torch.from_numpy(v) for k, v in state.items()}, temp)
        return len(state)

    # `archspec profile`: the process is this backend's alone.

    def configure(self, device: str, threads: int | None = None) -> None:
        """Check the device exists and pin torch to it (and to `threads`)."""
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise SpecError("--device cuda: torch sees no CUDA device on this machine")
        if threads:
            torch.set_num_threads(threads)
        # One-time set-up (thread pools, kernel caches) must not count as the
        # first variant's memory: run a small convolution first.
        conv = torch.nn.Conv2d(3, 8, 3).to(device)
        with torch.inference_mode():
            conv(torch.rand(1, 3, 16, 16, device=device))

    def forward(
        self, network: ir.Network, folder: Path, *, device: str, dtype: str, batch: int
    ) -> Callable[[], None]:
        """The eval-mode forward of a freshly initialised model on one random
        batch, as a callable to time."""
        import torch

        torch_dtype = getattr(torch, dtype)
        model = self.model(network, folder).eval().to(device, dtype=torch_dtype)
        size = network.input.resolution
        x = torch.rand(
            batch,
            network.input.channels,
            size,
            size,
            device=device,
            dtype=torch_dtype,
        )
        cuda = device == "cuda"

        def forward() -> None:
            with torch.inference_mode():
                model(x)
            if cuda:
                torch.cuda.synchronize()

        return forward

    def free_memory(self, device: str) -> int | None:
        """Bytes free on the GPU (None on the CPU)."""
        if device != "cuda":
            return None
        import torch

        return torch.cuda.mem_get_info()[0]

    def memory_start(self, device: str) -> int | None:
        """On the GPU: reset the allocator's peak and return the bytes in use
        (None on the CPU, measured from the process's RSS instead)."""
        if device != "cuda":
            return None
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()

    def memory_peak(self, device: str) -> int | None:
        """The allocator's peak in bytes since `memory_start` (GPU only)."""
        if device != "cuda":
            return None
        import torch

        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()

    def release(self, device: str) -> None:
        if device == "cuda":
            import torch

            torch.cuda.empty_cache()

    def versions(self, device: str) -> dict[str, Any]:
        """What a measurement ran on, framework-wise."""
        import torch

        info: dict[str, Any] = {
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        }
        if device == "cuda":
            info["gpu"] = torch.cuda.get_device_name()
        return info


def deterministic(model: Any) -> None:
    """Drop path and dropout off in a PyTorch model (train mode without
    randomness)."""
    import torch

    for m in model.modules():
        if hasattr(m, "drop_path") and isinstance(m.drop_path, float):
            m.drop_path = 0.0
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
