"""Model architectures: each registered factory builds one ``nn.Module`` from the input shape.

The ensemble trainer stacks ``n_models`` instances of it, so an architecture never needs to know that it is
trained as part of an ensemble. No BatchNorm anywhere: it mixes samples, which DP-SGD cannot allow.
"""

from __future__ import annotations

import math

from torch import nn

from bench.registry import ARCHITECTURES, Param

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


@ARCHITECTURES.register(
    "logreg",
    description="Multinomial logistic regression (one linear layer).",
    accepts=("vector", "image"),
)
def logreg(input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), n_outputs))


@ARCHITECTURES.register(
    "mlp",
    description="Fully connected network: `depth` hidden layers of `width` units, activation and dropout.",
    params=[
        Param("depth", int, 2, "number of hidden layers", low=1, high=16),
        Param("width", int, 64, "units per hidden layer", low=1, high=8192),
        Param("activation", str, "relu", "hidden-layer non-linearity", choices=tuple(ACTIVATIONS)),
        Param("dropout", float, 0.0, "dropout rate after each hidden layer", low=0.0, high=1.0, high_inclusive=False),
    ],
    accepts=("vector", "image"),
)
def mlp(
    input_shape: tuple[int, ...], n_outputs: int, depth: int, width: int, activation: str, dropout: float
) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        fan_in = width
    layers.append(nn.Linear(fan_in, n_outputs))
    return nn.Sequential(*layers)
