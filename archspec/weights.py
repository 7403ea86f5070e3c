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


def torch_to_keras(
    network: ir.Network, state: Mapping[str, Any]
) -> dict[str, list[Any]]:
    """A torch state dict (as NumPy arrays) -> {Keras layer name: [weights]}."""
    import numpy as np

    expected = set()
    layers: dict[str, list[Any]] = {}
    for layer in network.weights():
        arrays = []
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
            arrays.append(np.ascontiguousarray(_to_keras(layer, suffix, array)))
        layers[keras_name(layer.path)] = arrays
    # BN's step counter has no Keras counterpart; anything else must be used.
    extra = sorted(
        k for k in state if k not in expected and not k.endswith(".num_batches_tracked")
    )
    if extra:
        raise SpecError(
            f"weights: unexpected tensors {extra[:5]}{'...' if len(extra) > 5 else ''}"
        )
    return layers


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
