"""The M models of a cell trained together as one stacked computation.

The M copies of an architecture are stacked parameter by parameter (``torch.func.stack_module_state``) and
run with ``torch.func.vmap``: one forward and one backward pass per step serve every model, each with its own
initialisation, its own minibatch stream drawn from its own training subset, and its own dropout masks.
Adam and SGD act elementwise, so one optimizer over the stacked tensors is M independent optimizers.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

from privkernel.hashing import derive_seed
from privkernel.lazy import lazy_import

if TYPE_CHECKING:
    from torch import nn

torch = lazy_import("torch")


@dataclass
class Ensemble:
    """``n_models`` instances of one architecture with stacked parameters (leading dimension M)."""

    template: nn.Module
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]

    @classmethod
    def initialise(
        cls, factory: Callable[[], nn.Module], n_models: int, seed: int, device: str | torch.device = "cpu"
    ) -> Ensemble:
        """Build ``n_models`` models, model ``m`` initialised from ``derive_seed(seed, "init", m)``."""
        models = []
        with torch.random.fork_rng(devices=[]):
            for m in range(n_models):
                torch.manual_seed(derive_seed(seed, "init", m))
                models.append(factory().to(device))
        params, buffers = torch.func.stack_module_state(models)
        template = copy.deepcopy(models[0]).to("meta")
        return cls(template, params, buffers)

    @classmethod
    def from_state(
        cls, factory: Callable[[], nn.Module], state: dict[str, torch.Tensor], device: str | torch.device = "cpu"
    ) -> Ensemble:
        """Rebuild an ensemble from :meth:`state` (as saved in the cache)."""
        template = factory().to("meta")
        names = dict(template.named_parameters())
        params = {k[len("param.") :]: v.to(device) for k, v in state.items() if k.startswith("param.")}
        buffers = {k[len("buffer.") :]: v.to(device) for k, v in state.items() if k.startswith("buffer.")}
        if set(params) != set(names):
            raise ValueError(f"saved parameters {sorted(params)} do not match the architecture's {sorted(names)}")
        return cls(template, params, buffers)

    def select(self, m: int) -> Ensemble:
        """Model ``m`` alone, as an ensemble of one whose tensors are views of this one's."""
        return Ensemble(self.template, {k: v[m : m + 1] for k, v in self.params.items()},
                        {k: v[m : m + 1] for k, v in self.buffers.items()})

    @property
    def n_models(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def state(self) -> dict[str, torch.Tensor]:
        """Stacked parameters and buffers, detached, on the CPU (for ``torch.save``)."""
        out = {f"param.{k}": v.detach().cpu() for k, v in self.params.items()}
        out.update({f"buffer.{k}": v.detach().cpu() for k, v in self.buffers.items()})
        return out

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.template, (params, buffers), (x,))

    def forward(self, x: Inputs, training: bool = True) -> torch.Tensor:
        """Outputs for per-model inputs ``x[M, B, ...]`` → ``[M, B, outputs]``, with gradients, in training mode
        (each model draws its own dropout masks) or evaluation mode."""
        self.template.train(training)
        return torch.func.vmap(self._call, randomness="different")(self.params, self.buffers, x)

    def predict(self, X: Inputs, batch_size: int = 4096) -> torch.Tensor:
        """Evaluation-mode outputs of every model on shared inputs ``X[N, ...]`` → ``[M, N, outputs]``, without
        gradients."""
        with torch.no_grad():  # a context, not the decorator: ``@torch.no_grad()`` would load torch at import
            self.template.eval()
            run = torch.func.vmap(self._call, in_dims=(0, 0, None), randomness="same")
            chunks = range(0, n_records(X), batch_size)
            return torch.cat([run(self.params, self.buffers, take(X, slice(i, i + batch_size))) for i in chunks], 1)


#: A forward reference (a string), so that importing this module, and the modules whose annotations name it, does not
#: load torch; annotations are never evaluated (``from __future__ import annotations`` everywhere).
Inputs: TypeAlias = "torch.Tensor | dict[str, torch.Tensor]"
"""Model inputs: one tensor, or a dict of tensors sharing their first dimension (e.g. a molecular graph's
``atoms``, ``bonds`` and ``mask``), passed to the module's ``forward`` as it is."""


def n_records(X: Inputs) -> int:
    """Number of records (first dimension) of model inputs."""
    return len(torch.utils._pytree.tree_flatten(X)[0][0])


def take(X: Inputs, index: torch.Tensor | slice) -> Inputs:
    """Rows ``index`` of every tensor of the inputs."""
    return torch.utils._pytree.tree_map(lambda t: t[index], X)


def minibatch_indices(keep: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """One epoch of minibatches for every model: ``[steps, M, batch_size]`` indices into the pool.

    Model ``m`` draws a fresh permutation of its own members (``keep[m]``); all models take the same number
    of steps, so a model with fewer members than the largest cycles through its permutation again.
    """
    members = [np.flatnonzero(row) for row in keep]
    if min(len(m) for m in members) == 0:
        raise ValueError("a model of the ensemble has no training points; use a larger dataset or fewer models")
    steps = math.ceil(max(len(m) for m in members) / batch_size)
    batches = np.stack([np.resize(rng.permutation(m), steps * batch_size) for m in members])
    return batches.reshape(len(members), steps, batch_size).transpose(1, 0, 2)
