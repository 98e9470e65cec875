"""Model architectures: each registered factory builds one ``nn.Module`` from the input shape.

A factory is called as ``factory(input_shape, n_outputs, **params)``. ``input_shape`` is the shape of one record:

* a tuple for tensor inputs — ``(F,)`` for vectors, ``(C, H, W)`` for images, ``(D, H, W)`` or ``(C, D, H, W)`` for
  volumes;
* a dict ``{key: per-record shape}`` for dict inputs — for a molecular graph
  ``{"atoms": (A, F), "mask": (A,), "bonds": (E, 3), "bond_mask": (E,)}`` (see :mod:`targets.graphs`), and
  ``forward`` then receives the dict of batched tensors.

The ``accepts`` tag lists the input kinds ("vector", "image", "volume", "graph") an architecture can take. The ensemble
trainer stacks ``n_models`` instances and runs them with ``torch.func.vmap``, so modules avoid in-place ops on
their inputs, ``.item()`` and data-dependent Python control flow. No BatchNorm anywhere: it mixes samples, which
DP-SGD cannot allow; GroupNorm or LayerNorm normalise within one record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from privkernel.errors import BenchError
from privkernel.lazy import lazy_import
from privkernel.registry import ARCHITECTURES, Param

if TYPE_CHECKING:
    from torch import nn

torch = lazy_import("torch")

#: The ``activation`` choices of ``mlp``: the name of the ``torch.nn`` module class of each (looked up when a model
#: is built, so that registering the architectures does not load torch).
ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "gelu": "GELU"}

InputShape = tuple[int, ...] | Mapping[str, tuple[int, ...]]


def _tensor_shape(input_shape: InputShape, architecture: str, suggestion: str) -> tuple[int, ...]:
    """The per-record shape of a tensor input; a dict (graph) shape is refused with a hint."""
    if isinstance(input_shape, Mapping):
        raise BenchError(
            f"architecture {architecture!r} takes vector or image inputs, but the dataset gives a dict of arrays "
            f"({', '.join(input_shape)}); {suggestion}"
        )
    return tuple(int(d) for d in input_shape)


@ARCHITECTURES.register(
    "logreg",
    description="Multinomial logistic regression (one linear layer).",
    accepts=("vector", "image"),
)
def logreg(input_shape: InputShape, n_outputs: int) -> nn.Module:
    shape = _tensor_shape(input_shape, "logreg", "use mpnn for graphs, or a fingerprint featurization")
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(math.prod(shape), n_outputs))


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
    input_shape: InputShape, n_outputs: int, depth: int, width: int, activation: str, dropout: float
) -> nn.Module:
    shape = _tensor_shape(input_shape, "mlp", "use mpnn for graphs, or a fingerprint featurization")
    layers: list[nn.Module] = [torch.nn.Flatten()]
    fan_in = math.prod(shape)
    for _ in range(depth):
        layers += [torch.nn.Linear(fan_in, width), getattr(torch.nn, ACTIVATIONS[activation])()]
        if dropout > 0:
            layers.append(torch.nn.Dropout(dropout))
        fan_in = width
    layers.append(torch.nn.Linear(fan_in, n_outputs))
    return torch.nn.Sequential(*layers)


# --- convolutional network for images ---------------------------------------------------------------------------


def _groups(channels: int, most: int = 8) -> int:
    """The largest number of GroupNorm groups, at most ``most``, that divides ``channels``."""
    return max(g for g in range(1, min(most, channels) + 1) if channels % g == 0)


#: The ``torch.nn`` convolution class of each number of spatial dimensions, by name (looked up when a model is built).
CONVOLUTIONS = {2: "Conv2d", 3: "Conv3d"}


def conv_net(
    spatial: int, fan_in: int, n_outputs: int, channels: int, depth: int, kernel_size: int, dropout: float,
    architecture: str,
) -> list[nn.Module]:
    """The layers shared by ``cnn`` (``spatial`` = 2) and ``cnn3d`` (3): ``depth`` blocks of convolution (same
    padding) → GroupNorm → ReLU → dropout, global mean pooling and a linear head."""
    if kernel_size % 2 == 0:
        raise BenchError(
            f"architecture {architecture!r}: kernel_size={kernel_size} must be odd (same padding); use e.g. 3 or 5"
        )
    from targets._layers import GlobalMeanPool

    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [
            getattr(torch.nn, CONVOLUTIONS[spatial])(fan_in, channels, kernel_size, padding=kernel_size // 2),
            torch.nn.GroupNorm(_groups(channels), channels),
            torch.nn.ReLU(),
        ]
        if dropout > 0:
            layers.append(torch.nn.Dropout(dropout))
        fan_in = channels
    return [*layers, GlobalMeanPool(spatial), torch.nn.Linear(channels, n_outputs)]


@ARCHITECTURES.register(
    "cnn",
    description="Convolutional network for images [C, H, W]: `depth` blocks of conv (`channels` filters, "
    "`kernel_size`, same padding) → GroupNorm → ReLU → dropout; global mean pooling; a linear head.",
    params=[
        Param("channels", int, 32, "filters per convolution", low=1, high=1024),
        Param("depth", int, 2, "number of convolution blocks", low=1, high=16),
        Param("kernel_size", int, 3, "convolution kernel size (odd)", low=1, high=15),
        Param("dropout", float, 0.0, "dropout rate after each block", low=0.0, high=1.0, high_inclusive=False),
    ],
    accepts=("image",),
)
def cnn(
    input_shape: InputShape, n_outputs: int, channels: int, depth: int, kernel_size: int, dropout: float
) -> nn.Module:
    shape = _tensor_shape(input_shape, "cnn", "use mpnn for graphs")
    if len(shape) != 3:
        raise BenchError(
            f"architecture 'cnn' needs image inputs shaped [C, H, W] per record, got {list(shape)}; use an image "
            "dataset (inputs: image) or mlp/logreg for vectors"
        )
    return torch.nn.Sequential(*conv_net(2, shape[0], n_outputs, channels, depth, kernel_size, dropout, "cnn"))


# --- message passing over molecular graphs ----------------------------------------------------------------------


@ARCHITECTURES.register(
    "mpnn",
    description="Message-passing network over molecular graphs as edge lists (features: graph): a message weight "
    "per bond type, `steps` rounds with residual LayerNorm updates, mean or sum readout, an MLP head.",
    params=[
        Param("hidden", int, 64, "atom state size", low=1, high=4096),
        Param("steps", int, 3, "message-passing rounds", low=1, high=16),
        Param("dropout", float, 0.0, "dropout rate on atom states and in the head", low=0.0, high=1.0,
              high_inclusive=False),
        Param("readout", str, "mean", "pooling of atom states into one vector", choices=("mean", "sum")),
    ],
    accepts=("graph",),
    version=2,  # 2: edge lists (targets.graphs) instead of a dense adjacency
)
def mpnn(
    input_shape: InputShape, n_outputs: int, hidden: int, steps: int, dropout: float, readout: str
) -> nn.Module:
    """``input_shape`` is the dict ``{"atoms": (A, F), "mask": (A,), "bonds": (E, 3), "bond_mask": (E,)}`` of one
    record (:mod:`targets.graphs`)."""
    from targets.featurizers import BOND_TYPE_NAMES
    from targets.graphs import RECORD_KEYS

    if not isinstance(input_shape, Mapping) or not all(k in input_shape for k in RECORD_KEYS):
        got = list(input_shape) if isinstance(input_shape, Mapping) else f"a tensor shaped {list(input_shape)}"
        raise BenchError(
            f"architecture 'mpnn' needs graph inputs (a dict with {', '.join(RECORD_KEYS)}), got {got}; use "
            "features: graph (features cached before edge lists are computed anew), or mlp/logreg for fingerprints"
        )
    atoms, bonds = tuple(input_shape["atoms"]), tuple(input_shape["bonds"])
    if len(atoms) != 2 or bonds[1:] != (3,):
        raise BenchError(
            f"architecture 'mpnn': per-record atoms must be [A, F] and bonds [E, 3], got {list(atoms)} and "
            f"{list(bonds)}; use targets.featurizers.graph to build the inputs"
        )
    from targets._layers import MPNN

    return MPNN(atoms[-1], len(BOND_TYPE_NAMES), n_outputs, hidden, steps, dropout, readout)


# --- convolutional network for volumes --------------------------------------------------------------------------


@ARCHITECTURES.register(
    "cnn3d",
    description="3-D convolutional network for volumes [D, H, W] or [C, D, H, W] (e.g. brain-MRI-like scans, as "
    "in Gupta et al. 2021): `depth` blocks of 3-D conv (`channels` filters, `kernel_size`, same padding) → "
    "GroupNorm → ReLU → dropout; global mean pooling over (D, H, W); a linear head.",
    params=[
        Param("channels", int, 8, "filters per convolution", low=1, high=1024),
        Param("depth", int, 2, "number of convolution blocks", low=1, high=16),
        Param("kernel_size", int, 3, "convolution kernel size (odd)", low=1, high=15),
        Param("dropout", float, 0.0, "dropout rate after each block", low=0.0, high=1.0, high_inclusive=False),
    ],
    accepts=("volume",),
)
def cnn3d(
    input_shape: InputShape, n_outputs: int, channels: int, depth: int, kernel_size: int, dropout: float
) -> nn.Module:
    """A 3-D CNN for per-record volumes.

    Parameters
    ----------
    input_shape
        Shape of one record: ``(D, H, W)`` (one channel, added inside the module) or ``(C, D, H, W)``.
    n_outputs
        Number of classes, or 1 for regression.
    channels, depth, kernel_size, dropout
        Filters per convolution, number of blocks, odd kernel size (same padding) and dropout rate after each block.

    Returns
    -------
    nn.Module
        An ``nn.Sequential`` mapping ``[B, D, H, W]`` (or ``[B, C, D, H, W]``) to ``[B, n_outputs]``. It uses no
        in-place op on its input, no ``.item()`` and no data-dependent branch, so it runs under ``torch.func.vmap``.

    Raises
    ------
    BenchError
        For graph (dict) inputs, a per-record shape that is not 3-d or 4-d, or an even ``kernel_size``.
    """
    if isinstance(input_shape, Mapping):
        raise BenchError(
            f"architecture 'cnn3d' takes volume inputs, but the dataset gives a dict of arrays "
            f"({', '.join(input_shape)}); use mpnn for graphs"
        )
    shape = tuple(int(d) for d in input_shape)
    if len(shape) not in (3, 4):
        raise BenchError(
            f"architecture 'cnn3d' needs volume inputs shaped [D, H, W] or [C, D, H, W] per record, got {list(shape)}; "
            "use a volume dataset (e.g. npz with inputs: volume), cnn for images [C, H, W] or mlp/logreg for vectors"
        )
    from targets._layers import AddChannel

    fan_in = 1 if len(shape) == 3 else shape[0]
    layers = conv_net(3, fan_in, n_outputs, channels, depth, kernel_size, dropout, "cnn3d")
    return torch.nn.Sequential(*([AddChannel()] if len(shape) == 3 else []), *layers)
