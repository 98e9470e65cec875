"""The one training loop of privbench, the hooks through which defenses shape it, and the engines that run it.

:func:`fit` trains the M models of an :class:`~targets.ensemble.Ensemble`, each on its own members of the pool
(``keep[m]``). Every epoch, every step::

    batch = next minibatch of every model              hooks.batches  (DP-SGD: Poisson sampling)
    hooks.extra_step(run, batch)                        (adversarial regularisation: the inference models' steps)
    outputs = engine.forward(ensemble, x, training)
    losses = hooks.loss(outputs, labels)               (label smoothing; cross-entropy or squared error)
    gradient = hooks.gradients(run, batch)              (DP-SGD: per-sample clipping and noise), or the
               backward pass of hooks.objective(...)    (adversarial regularisation adds its privacy term)
    optimizer step;  hooks.after_step(run)
    ... and after every epoch: hooks.end_epoch(run, epoch)  (early stopping; a model it deactivates is frozen)
    ... and at the end: hooks.finish(run), the run's facts

A defense fills only the hooks it needs (:class:`TrainingHooks`); an engine (:class:`Engine`, registered in
:data:`privkernel.registry.ENGINES`) decides how the M models are computed (stacked with ``vmap``, one by one, or
federated) and refuses, before anything runs, hooks it cannot serve.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch.func import functional_call
from torch.nn import functional as F

from privkernel.hashing import derive_seed
from privkernel.registry import ENGINES
from targets.ensemble import Ensemble, Inputs, minibatch_indices, n_records, take

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Grads = dict[str, torch.Tensor]


def default_loss(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean training loss per model: outputs ``[M, B, C]``, labels ``[M, B]`` → ``[M]``.

    Cross-entropy for class labels (integers); squared error for regression targets (floats, ``C = 1``).
    """
    if labels.is_floating_point():
        return ((outputs[..., 0] - labels) ** 2).mean(dim=1)
    per_point = F.cross_entropy(outputs.flatten(0, 1), labels.flatten(), reduction="none")
    return per_point.view(labels.shape).mean(dim=1)


@dataclass(frozen=True)
class TrainingSettings:
    """The recipe shared by the M models: passes over the data, minibatch size and optimizer."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float = 0.0


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


@dataclass(frozen=True)
class Batch:
    """One step's minibatch of every model: indices into the pool ``[M, B]`` and, for padded batches of uneven
    sizes (Poisson sampling), weights ``[M, B]`` (1 for a record, 0 for padding)."""

    index: torch.Tensor
    weight: torch.Tensor | None = None


@dataclass
class TrainingRun:
    """The state of one run of :func:`fit` that hooks read and change.

    ``keep`` is what the models train on (after :meth:`TrainingHooks.members`); ``active[M]`` is cleared by a
    hook for a model that has stopped: its loss no longer enters the objective, and its history is NaN.
    """

    ensemble: Ensemble
    X: Inputs
    y: torch.Tensor
    keep: np.ndarray
    settings: TrainingSettings
    engine: Engine
    seed: int
    active: torch.Tensor
    optimizer: torch.optim.Optimizer
    minibatch_rng: np.random.Generator

    @property
    def device(self) -> torch.device:
        return self.y.device

    def outputs(self, x: Inputs, *, training: bool) -> torch.Tensor:
        """Every model's outputs on its own inputs ``x[M, B, ...]`` → ``[M, B, outputs]``, through the engine."""
        return self.engine.forward(self.ensemble, x, training=training)


class TrainingHooks:
    """The plain training; a defense subclasses it and overrides the hooks it fills.

    A fresh instance serves one run of :func:`fit` (hooks may keep state between calls). :meth:`filled` names the
    overridden hooks, so that an engine refuses, at grid load, a defense whose hooks it cannot run.

    Parameters
    ----------
    loss
        Mean loss per model (``[M, B, C], [M, B] → [M]``), :func:`default_loss` unless a defense shapes it.
    """

    #: The hooks a subclass may override (besides ``loss``), in the order the loop calls them.
    HOOKS: ClassVar[tuple[str, ...]] = (
        "members", "start", "batches", "extra_step", "objective", "gradients", "after_step", "end_epoch", "finish",
    )

    def __init__(self, loss: LossFn = default_loss) -> None:
        self.loss = loss

    @classmethod
    def filled(cls) -> tuple[str, ...]:
        """The hooks this class overrides."""
        return tuple(h for h in cls.HOOKS if getattr(cls, h) is not getattr(TrainingHooks, h))

    def members(self, keep: np.ndarray, seed: int) -> np.ndarray:
        """The records each model trains on ``[M, N]``, a subset of ``keep`` (a defense may hold some out)."""
        return keep

    def start(self, run: TrainingRun) -> None:
        """Work before the first epoch (state that needs the models or the settings)."""

    def batches(self, run: TrainingRun) -> Iterator[Batch]:
        """One epoch of minibatches; by default shuffled fixed-size batches of every model's members
        (:func:`targets.ensemble.minibatch_indices`) from the ``"minibatches"`` stream of the run's seed."""
        for index in minibatch_indices(run.keep, run.settings.batch_size, run.minibatch_rng):
            yield Batch(torch.from_numpy(index).to(run.device))

    def extra_step(self, run: TrainingRun, batch: Batch) -> None:
        """Work before each step of the models (an adversary's own steps)."""

    def objective(self, run: TrainingRun, losses: torch.Tensor, outputs: torch.Tensor,
                  labels: torch.Tensor) -> torch.Tensor:
        """What each model's step minimises ``[M]``; its loss unless a defense adds a term."""
        return losses

    def gradients(self, run: TrainingRun, batch: Batch) -> tuple[Grads, torch.Tensor] | None:
        """Each model's gradient for this step (``{name: [M, *shape]}``) and its loss to report ``[M]``, or None
        for the backward pass of the objective."""
        return None

    def after_step(self, run: TrainingRun) -> None:
        """Work after each optimizer step."""

    def end_epoch(self, run: TrainingRun, epoch: int) -> None:
        """Work after epoch ``epoch`` (1-based); clearing ``run.active[m]`` stops model ``m``."""

    def finish(self, run: TrainingRun) -> dict[str, float]:
        """Work after the last epoch (e.g. restoring the best parameters); returns the run's scalar facts, which the
        store reports (e.g. the ε reached)."""
        return {}


def make_optimizer(params: list[torch.Tensor], settings: TrainingSettings) -> torch.optim.Optimizer:
    """The settings' optimizer over stacked parameters (elementwise: M independent optimizers)."""
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)


def fit(
    ensemble: Ensemble, X: Inputs, y: torch.Tensor, keep: np.ndarray, settings: TrainingSettings, *, seed: int,
    hooks: TrainingHooks | None = None, engine: Engine | None = None,
) -> TrainingLog:
    """Train every model of ``ensemble`` on its own members of the pool ``(X, y)``: the one training loop.

    Parameters
    ----------
    keep
        ``[M, N]``: the pool records model ``m`` may train on.
    seed
        Seeds the minibatch order (NumPy) and dropout (torch) of this run, and every stream a hook derives.
    hooks
        What a defense changes (:class:`TrainingHooks`); the plain training if None.
    engine
        How the models are computed; the stacked ensemble if None.

    Returns
    -------
    TrainingLog
        Mean training loss per epoch and model ``[epochs, M]`` (NaN where a model had stopped), the hooks' facts
        and, when the hooks held records out, the records each model trained on.
    """
    hooks = hooks or TrainingHooks()
    engine = engine or StackedEngine()
    if n_records(X) != keep.shape[1]:
        raise ValueError(f"keep has {keep.shape[1]} columns for {n_records(X)} records")
    device = y.device
    n_models = ensemble.n_models
    train_keep = hooks.members(keep, seed)
    run = TrainingRun(
        ensemble, X, y, train_keep, settings, engine, seed,
        active=torch.ones(n_models, dtype=torch.bool, device=device),
        optimizer=make_optimizer(list(ensemble.params.values()), settings),
        minibatch_rng=np.random.default_rng(derive_seed(seed, "minibatches")),
    )
    history = np.full((settings.epochs, n_models), np.nan, dtype=np.float32)
    hooks.start(run)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(derive_seed(seed, "dropout"))
        for epoch in range(1, settings.epochs + 1):
            total, steps = torch.zeros(n_models, device=device), 0
            for batch in hooks.batches(run):
                total += _step(run, hooks, batch)
                steps += 1
            history[epoch - 1] = np.where(run.active.cpu().numpy(), (total / steps).cpu().numpy(), np.nan)
            hooks.end_epoch(run, epoch)
            if not bool(run.active.any()):
                break
    return TrainingLog(history, hooks.finish(run), trained_on=None if train_keep is keep else train_keep)


def _step(run: TrainingRun, hooks: TrainingHooks, batch: Batch) -> torch.Tensor:
    """One optimizer step of every model; returns each model's loss to report ``[M]``."""
    hooks.extra_step(run, batch)
    transformed = hooks.gradients(run, batch)
    if transformed is None:
        x, labels = take(run.X, batch.index), run.y[batch.index]
        outputs = run.outputs(x, training=True)
        losses = hooks.loss(outputs, labels)
        objective = hooks.objective(run, losses, outputs, labels)
        run.optimizer.zero_grad(set_to_none=True)
        (objective * run.active).sum().backward()
        reported = losses.detach()
    else:
        grads, reported = transformed
        for name, param in run.ensemble.params.items():
            param.grad = grads[name]
    run.optimizer.step()
    hooks.after_step(run)
    return reported


# --- helpers for hooks that hold members out ----------------------------------------------------------------


def hold_out_members(keep: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Set aside ``fraction`` of each model's own members.

    Every model holds out the same number of its members, ``round(fraction · fewest members)`` (at least 1),
    drawn uniformly from its own members, so that the held-out sets stack as ``[M, H]``.

    Returns
    -------
    train_keep, held_out
        ``train_keep[M, N]``: the members each model still trains on; ``held_out[M, H]``: indices into the pool
        of each model's held-out members.
    """
    members = [np.flatnonzero(row) for row in keep]
    fewest = min(len(m) for m in members)
    if fewest < 2:
        raise ValueError(
            f"a model has {fewest} training point(s): holding some out needs at least 2; use more data or fewer models"
        )
    n_held = min(max(1, round(fraction * fewest)), fewest - 1)
    held_out = np.stack([rng.choice(m, n_held, replace=False) for m in members])
    train_keep = keep.copy()
    np.put_along_axis(train_keep, held_out, False, axis=1)
    return train_keep, held_out


def held_out_loss(run: TrainingRun, held_out: np.ndarray, loss_fn: LossFn, chunk: int = 2048) -> torch.Tensor:
    """Mean loss of each model on its own held-out points ``held_out[M, H]`` in evaluation mode → ``[M]``."""
    total = torch.zeros(run.ensemble.n_models, device=run.device)
    index = torch.from_numpy(held_out).to(run.device)
    with torch.no_grad():
        for start in range(0, index.shape[1], chunk):
            idx = index[:, start : start + chunk]
            outputs = run.outputs(take(run.X, idx), training=False)
            total += loss_fn(outputs, run.y[idx]) * idx.shape[1]
    return total / index.shape[1]


def copy_models(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], which: torch.Tensor) -> None:
    """``target[k][m] ← source[k][m]`` for every stacked tensor ``k`` and every model ``m`` where ``which[m]``."""
    if not bool(which.any()):
        return
    with torch.no_grad():
        for name, value in target.items():
            value[which] = source[name][which]


# --- engines ------------------------------------------------------------------------------------------------


class Engine:
    """How the M models of a cell are computed and trained; registered in :data:`privkernel.registry.ENGINES`
    with the training settings it alone reads (its parameters).

    An engine is built with its parameters (``ENGINES.get(name).obj(**params)``); the stacked and loop engines
    have none.

    Attributes
    ----------
    stacked
        Whether one computation serves all M models (``vmap``); False when they run one after the other.
    runs_hooks
        The hooks of :class:`TrainingHooks` it can serve (``loss`` always).
    """

    stacked: ClassVar[bool] = True
    runs_hooks: ClassVar[frozenset[str]] = frozenset(TrainingHooks.HOOKS)
    name: ClassVar[str] = ""

    def refuses(self, hooks: type[TrainingHooks]) -> str | None:
        """Why this engine cannot run a defense with these hooks, or None."""
        unserved = [h for h in hooks.filled() if h not in self.runs_hooks]
        if unserved:
            return (f"it fills the training hook(s) {', '.join(unserved)}, which the {self.name} engine does not run")
        return None

    def forward(self, ensemble: Ensemble, x: Inputs, *, training: bool) -> torch.Tensor:
        """Outputs of every model on its own inputs ``x[M, B, ...]`` → ``[M, B, outputs]``, with gradients."""
        return ensemble.forward(x, training)

    def train(
        self, ensemble: Ensemble, X: Inputs, y: torch.Tensor, keep: np.ndarray, settings: TrainingSettings, *,
        seed: int, hooks: TrainingHooks,
    ) -> TrainingLog:
        """Train the ensemble in place (see :func:`fit`)."""
        return fit(ensemble, X, y, keep, settings, seed=seed, hooks=hooks, engine=self)


@ENGINES.register("ensemble", description="The M models stacked parameter by parameter and trained as one "
                  "vmap-ed computation: one forward and backward pass per step serve every model.")
class StackedEngine(Engine):
    """The default engine: :meth:`Engine.forward` over the stacked parameters."""

    name = "ensemble"


@ENGINES.register("loop", description="The same training with each model's forward pass computed on its own, "
                  "one after the other: the reference for the stacked engine, and the fallback for modules that "
                  "vmap cannot run.")
class LoopEngine(Engine):
    """Every step calls each model with :func:`torch.func.functional_call` in turn. Minibatches, optimizer and
    hooks are those of the stacked engine; dropout masks are drawn model after model from the same stream (with
    torch's current ``vmap`` they come out equal to the stacked engine's, which the tests check)."""

    name = "loop"
    stacked = False

    def forward(self, ensemble: Ensemble, x: Inputs, *, training: bool) -> torch.Tensor:
        ensemble.template.train(training)
        outputs = []
        for m in range(ensemble.n_models):
            params = {k: v[m] for k, v in ensemble.params.items()}
            buffers = {k: v[m] for k, v in ensemble.buffers.items()}
            outputs.append(functional_call(ensemble.template, (params, buffers), (take(x, m),)))
        return torch.stack(outputs)
