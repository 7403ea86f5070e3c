"""Weights between the generated PyTorch and Keras models, by name.

Both backends name their tensors after the IR's layers, so the transfer is a
walk over `network.weights()` with the layout changes of REFERENCE.md:

    layer             PyTorch (state dict)                  Keras (layer `path` with . -> _)
    convolution       {path}.weight  (O, I, kh, kw)         kernel (kh, kw, I, O)
    depthwise conv    {path}.weight  (C*m, 1, kh, kw)       depthwise_kernel (kh, kw, C, m)
    grouped conv      {path}.weight  (O, I/g, kh, kw)       kernel (kh, kw, I/g, O)
    conv bias         {path}.bias                           bias
    batch norm        {path}.weight, .bias,                 gamma, beta,
                      .running_mean, .running_var           moving_mean, moving_variance
    dense             {path}.weight (out, in), .bias        kernel (in, out), bias

Biases exist where the IR says so (`bias` of convolution and dense weights).

Arrays are NumPy arrays; nothing here imports torch or Keras. A missing,
unexpected or mis-shaped tensor is an error naming it, never a partial load.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import ir
from .errors import SpecError


def keras_name(path: str) -> str:
    """The Keras layer name of an IR layer: `stages.0.1.se.reduce` -> `stages_0_1_se_reduce`."""
    return path.replace(".", "_")


def _torch_layout(layer: ir.Weights) -> list[tuple[str, tuple[int, ...]]]:
    """(state-dict suffix, shape) of each tensor of a layer, in Keras's order."""
    if isinstance(layer, ir.Conv2dWeights):
        tensors = [("weight", layer.shape)]
        return tensors + ([("bias", (layer.out_channels,))] if layer.bias else [])
    if isinstance(layer, ir.BatchNormWeights):
        c = (layer.channels,)
        return [("weight", c), ("bias", c), ("running_mean", c), ("running_var", c)]
    tensors = [("weight", (layer.out_features, layer.in_features))]
    return tensors + ([("bias", (layer.out_features,))] if layer.bias else [])


def _to_keras(layer: ir.Weights, suffix: str, array: Any) -> Any:
    if suffix != "weight" or isinstance(layer, ir.BatchNormWeights):
        return array
    if isinstance(layer, ir.DenseWeights):
        return array.T
    if layer.depthwise:  # (C * m, 1, kh, kw) -> (kh, kw, C, m): m per channel
        c, k = layer.in_channels, layer.kernel
        return array.reshape(c, -1, k, k).transpose(2, 3, 0, 1)
    return array.transpose(2, 3, 1, 0)


def _to_torch(layer: ir.Weights, suffix: str, array: Any) -> Any:
    if suffix != "weight" or isinstance(layer, ir.BatchNormWeights):
        return array
    if isinstance(layer, ir.DenseWeights):
        return array.T
    if layer.depthwise:  # (kh, kw, C, m) -> (C * m, 1, kh, kw)
        k = layer.kernel
        return array.transpose(2, 3, 0, 1).reshape(-1, 1, k, k)
    return array.transpose(3, 2, 0, 1)


def _torch_tensors(
    network: ir.Network, state: Mapping[str, Any]
) -> list[tuple[ir.Weights, list[tuple[str, Any]]]]:
    """Each weight layer of `network` with its (suffix, array) pairs from a
    torch state dict, every tensor present with its shape, none left over
    (BN's step counter aside): what every conversion from the canonical
    layout checks first."""
    import numpy as np

    expected = set()
    found = []
    for layer in network.weights():
        tensors = []
        for suffix, shape in _torch_layout(layer):
            key = f"{layer.path}.{suffix}"
            expected.add(key)
            if key not in state:
                raise SpecError(f"weights: missing tensor {key!r} (shape {shape})")
            array = np.asarray(state[key])
            if tuple(array.shape) != shape:
                raise SpecError(
                    f"weights: tensor {key!r} has shape {tuple(array.shape)}; expected {shape}"
                )
            tensors.append((suffix, array))
        found.append((layer, tensors))
    # BN's step counter has no counterpart elsewhere; anything else must be used.
    extra = sorted(
        k for k in state if k not in expected and not k.endswith(".num_batches_tracked")
    )
    if extra:
        raise SpecError(
            f"weights: unexpected tensors {extra[:5]}{'...' if len(extra) > 5 else ''}"
        )
    return found


def check_state(network: ir.Network, state: Mapping[str, Any]) -> None:
    """That `state` holds `network`'s weights in the canonical layout: every
    tensor present with its shape, none left over (a SpecError naming it)."""
    _torch_tensors(network, state)


def torch_to_keras(
    network: ir.Network, state: Mapping[str, Any]
) -> dict[str, list[Any]]:
    """A torch state dict (as NumPy arrays) -> {Keras layer name: [weights]}."""
    import numpy as np

    return {
        keras_name(layer.path): [
            np.ascontiguousarray(_to_keras(layer, suffix, array))
            for suffix, array in tensors
        ]
        for layer, tensors in _torch_tensors(network, state)
    }


def keras_to_torch(
    network: ir.Network, layers: Mapping[str, list[Any]]
) -> dict[str, Any]:
    """{Keras layer name: [weights]} -> a torch state dict of NumPy arrays."""
    import numpy as np

    state: dict[str, Any] = {}
    expected = set()
    for layer in network.weights():
        name = keras_name(layer.path)
        expected.add(name)
        layout = _torch_layout(layer)
        arrays = layers.get(name)
        if arrays is None:
            raise SpecError(f"weights: missing Keras layer {name!r}")
        if len(arrays) != len(layout):
            raise SpecError(
                f"weights: Keras layer {name!r} has {len(arrays)} weights; expected {len(layout)}"
            )
        for (suffix, shape), array in zip(layout, arrays, strict=True):
            converted = np.ascontiguousarray(
                _to_torch(layer, suffix, np.asarray(array))
            )
            if tuple(converted.shape) != shape:
                raise SpecError(
                    f"weights: Keras layer {name!r} weight {suffix!r} has shape "
                    f"{tuple(np.asarray(array).shape)}; expected {shape} in PyTorch layout"
                )
            state[f"{layer.path}.{suffix}"] = converted
        if isinstance(layer, ir.BatchNormWeights):
            state[f"{layer.path}.num_batches_tracked"] = np.zeros((), dtype=np.int64)
    extra = sorted(
        name for name, arrays in layers.items() if arrays and name not in expected
    )
    if extra:
        raise SpecError(f"weights: unexpected Keras layers with weights {extra[:5]}")
    return state


# Flax NNX: `nnx.state(model)` paths are the IR's layer paths, the kernels in
# lax's layouts (convolutions HWIO with I = in/groups, so a depthwise kernel
# is (kh, kw, 1, C*m), PyTorch's channel order; dense (in, out)) and batch norm
# as scale, bias, mean, var.
FLAX_NAMES = {
    "weight": "kernel",
    "bias": "bias",
    "running_mean": "mean",
    "running_var": "var",
}


def _flax_suffix(layer: ir.Weights, suffix: str) -> str:
    if isinstance(layer, ir.BatchNormWeights) and suffix == "weight":
        return "scale"
    return FLAX_NAMES[suffix]


def _to_flax(layer: ir.Weights, suffix: str, array: Any) -> Any:
    if suffix != "weight" or isinstance(layer, ir.BatchNormWeights):
        return array
    return array.T if array.ndim == 2 else array.transpose(2, 3, 1, 0)


def torch_to_flax(network: ir.Network, state: Mapping[str, Any]) -> dict[str, Any]:
    """A torch state dict (as NumPy arrays) -> {Flax state path: array}."""
    import numpy as np

    return {
        f"{layer.path}.{_flax_suffix(layer, suffix)}": np.ascontiguousarray(
            _to_flax(layer, suffix, array)
        )
        for layer, tensors in _torch_tensors(network, state)
        for suffix, array in tensors
    }


def flax_to_torch(network: ir.Network, arrays: Mapping[str, Any]) -> dict[str, Any]:
    """{Flax state path: array} -> a torch state dict of NumPy arrays."""
    import numpy as np

    state: dict[str, Any] = {}
    expected = set()
    for layer in network.weights():
        for suffix, shape in _torch_layout(layer):
            key = f"{layer.path}.{_flax_suffix(layer, suffix)}"
            expected.add(key)
            if key not in arrays:
                raise SpecError(f"weights: missing Flax variable {key!r}")
            array = np.asarray(arrays[key])
            if array.ndim == 4:
                converted = array.transpose(3, 2, 0, 1)
            elif array.ndim == 2:
                converted = array.T
            else:
                converted = array
            if tuple(converted.shape) != shape:
                raise SpecError(
                    f"weights: Flax variable {key!r} has shape {tuple(array.shape)}; "
                    f"expected {shape} in PyTorch layout"
                )
            state[f"{layer.path}.{suffix}"] = np.ascontiguousarray(converted)
        if isinstance(layer, ir.BatchNormWeights):
            state[f"{layer.path}.num_batches_tracked"] = np.zeros((), dtype=np.int64)
    extra = sorted(k for k in arrays if k not in expected)
    if extra:
        raise SpecError(f"weights: unexpected Flax variables {extra[:5]}")
    return state


def random_state(network: ir.Network, seed: int = 0) -> dict[str, Any]:
    """Random weights in the canonical layout (a torch state dict of NumPy
    float32 arrays), drawn with NumPy, no framework needed: He-normal kernels,
    zero biases, batch norm as the identity (scale 1, shift 0, mean 0,
    variance 1), so activations keep their scale through any depth. What
    `archspec profile` runs a model with when its framework's own
    initialisation is slow (Flax's eager one)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    state: dict[str, Any] = {}
    for layer in network.weights():
        norm = isinstance(layer, ir.BatchNormWeights)
        for suffix, shape in _torch_layout(layer):
            key = f"{layer.path}.{suffix}"
            if norm and suffix in ("weight", "running_var"):
                state[key] = np.ones(shape, np.float32)
            elif norm or suffix == "bias":
                state[key] = np.zeros(shape, np.float32)
            else:
                fan_in = int(np.prod(shape[1:]))
                array = rng.standard_normal(shape, dtype=np.float32)
                state[key] = array * np.float32((2.0 / fan_in) ** 0.5)
        if norm:
            state[f"{layer.path}.num_batches_tracked"] = np.zeros((), dtype=np.int64)
    return state
