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
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.utils._pytree import tree_flatten, tree_map

from privkernel.hashing import derive_seed


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
        params, buffers = stack_module_state(models)
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

    @property
    def n_models(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def state(self) -> dict[str, torch.Tensor]:
        """Stacked parameters and buffers, detached, on the CPU (for ``torch.save``)."""
        out = {f"param.{k}": v.detach().cpu() for k, v in self.params.items()}
        out.update({f"buffer.{k}": v.detach().cpu() for k, v in self.buffers.items()})
        return out

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template, (params, buffers), (x,))

    def forward(self, x: Inputs) -> torch.Tensor:
        """Training-mode outputs for per-model inputs ``x[M, B, ...]`` → ``[M, B, outputs]``."""
        self.template.train()
        return vmap(self._call, randomness="different")(self.params, self.buffers, x)

    @torch.no_grad()
    def predict(self, X: Inputs, batch_size: int = 4096) -> torch.Tensor:
        """Evaluation-mode outputs of every model on shared inputs ``X[N, ...]`` → ``[M, N, outputs]``."""
        self.template.eval()
        run = vmap(self._call, in_dims=(0, 0, None), randomness="same")
        chunks = range(0, n_records(X), batch_size)
        return torch.cat([run(self.params, self.buffers, take(X, slice(i, i + batch_size))) for i in chunks], 1)


Inputs = torch.Tensor | dict[str, torch.Tensor]
"""Model inputs: one tensor, or a dict of tensors sharing their first dimension (e.g. a molecular graph's
``atoms``, ``bonds`` and ``mask``), passed to the module's ``forward`` as it is."""


def n_records(X: Inputs) -> int:
    """Number of records (first dimension) of model inputs."""
    return len(tree_flatten(X)[0][0])


def take(X: Inputs, index: torch.Tensor | slice) -> Inputs:
    """Rows ``index`` of every tensor of the inputs."""
    return tree_map(lambda t: t[index], X)


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


@dataclass(frozen=True)
class TrainingLog:
    """What a training run reports: the mean loss per epoch and model ``[epochs, M]``, scalar facts (for example
    the ε a private training reached), which become columns of the results store, and, when the procedure held
    some of a model's members out of its training (a validation or reference set), the records each model
    really trained on ``trained_on[M, N]``: the audit then counts the held-out records as non-members. A procedure
    whose intermediate models an insider sees (federated rounds) keeps them as ``snapshots`` (name → tensor)."""

    history: np.ndarray
    info: dict[str, float] = field(default_factory=dict)
    trained_on: np.ndarray | None = None
    snapshots: dict[str, torch.Tensor] = field(default_factory=dict)


def make_optimizer(
    params: list[torch.Tensor], optimizer: str, lr: float, momentum: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """The training settings' optimizer over stacked parameters (elementwise: M independent optimizers)."""
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _epochs_of_minibatches(keep: np.ndarray, batch_size: int, epochs: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(derive_seed(seed, "minibatches"))
    return [minibatch_indices(keep, batch_size, rng) for _ in range(epochs)]


def train_ensemble(
    ensemble: Ensemble,
    X: Inputs,
    y: torch.Tensor,
    keep: np.ndarray,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str,
    momentum: float,
    seed: int,
    weight_decay: float = 0.0,
) -> TrainingLog:
    """Train every model of ``ensemble`` on its own members of the pool ``(X, y)``, all in one computation.

    Parameters
    ----------
    loss_fn
        Maps outputs ``[M, B, C]`` and labels ``[M, B]`` to one mean loss per model ``[M]``. The step
        minimises their sum: the models share no parameter, so each gets exactly its own gradient.
    seed
        Seeds the minibatch order (NumPy) and dropout (torch) of this training run.
    weight_decay
        L2 penalty of the optimizer (the ``l2`` defense).

    Returns
    -------
    TrainingLog
        Mean training loss per epoch and model, ``[epochs, M]``.
    """
    opt = make_optimizer(list(ensemble.params.values()), optimizer, lr, momentum, weight_decay)
    history = np.zeros((epochs, ensemble.n_models), dtype=np.float32)
    device = y.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(derive_seed(seed, "dropout"))
        for epoch, batches in enumerate(_epochs_of_minibatches(keep, batch_size, epochs, seed)):
            total = torch.zeros(ensemble.n_models, device=device)
            for idx in torch.from_numpy(batches).to(device):
                losses = loss_fn(ensemble.forward(take(X, idx)), y[idx])
                opt.zero_grad(set_to_none=True)
                losses.sum().backward()
                opt.step()
                total += losses.detach()
            history[epoch] = (total / len(batches)).cpu().numpy()
    return TrainingLog(history)


def train_loop(
    ensemble: Ensemble,
    X: Inputs,
    y: torch.Tensor,
    keep: np.ndarray,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str,
    momentum: float,
    seed: int,
    weight_decay: float = 0.0,
) -> TrainingLog:
    """The reference implementation of :func:`train_ensemble`: the same work, one model after the other.

    Same initialisation, minibatches and optimizer; only dropout masks differ (they are drawn per model
    instead of for the stack). Used to check the ensemble path and as the fallback for models that cannot
    be stacked.
    """
    history = np.zeros((epochs, ensemble.n_models), dtype=np.float32)
    device = y.device
    all_batches = [torch.from_numpy(b).to(device) for b in _epochs_of_minibatches(keep, batch_size, epochs, seed)]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(derive_seed(seed, "dropout"))
        ensemble.template.train()
        for m in range(ensemble.n_models):
            params = {k: v[m].detach().clone().requires_grad_(True) for k, v in ensemble.params.items()}
            buffers = {k: v[m] for k, v in ensemble.buffers.items()}
            opt = make_optimizer(list(params.values()), optimizer, lr, momentum, weight_decay)
            for epoch, batches in enumerate(all_batches):
                total = 0.0
                for idx in batches[:, m]:
                    outputs = functional_call(ensemble.template, (params, buffers), (take(X, idx),))
                    loss = loss_fn(outputs[None], y[idx][None])[0]
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.item()
                history[epoch, m] = total / len(batches)
            with torch.no_grad():
                for k, v in params.items():
                    ensemble.params[k][m] = v
    return TrainingLog(history)

