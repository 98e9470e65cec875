"""Early stopping on a validation split of each model's own members, and the training helpers that the
defenses with their own training loop (early stopping, adversarial regularisation) share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch.func import functional_call, vmap

from privkernel.registry import DEFENSES, Param
from privkernel.hashing import derive_seed
from defenses.base import Defense
from targets.ensemble import Ensemble, Inputs, TrainingLog, make_optimizer, minibatch_indices, n_records, take

# --- helpers shared by the defenses that train with their own loop ---------------------------------------------


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


def model_outputs(ensemble: Ensemble, x: Inputs, *, engine: str, training: bool) -> torch.Tensor:
    """Outputs of every model on its own inputs ``x[M, B, ...]`` → ``[M, B, outputs]``, in training mode (dropout
    on) or evaluation mode, with gradients. ``engine`` "ensemble" runs the stacked models with vmap; "loop" calls
    them one by one (for modules that vmap cannot run)."""
    ensemble.template.train(training)
    if engine == "ensemble":
        def call(params: dict, buffers: dict, inputs: Inputs) -> torch.Tensor:
            return functional_call(ensemble.template, (params, buffers), (inputs,))

        return vmap(call, randomness="different")(ensemble.params, ensemble.buffers, x)
    outputs = []
    for m in range(ensemble.n_models):
        params = {k: v[m] for k, v in ensemble.params.items()}
        buffers = {k: v[m] for k, v in ensemble.buffers.items()}
        outputs.append(functional_call(ensemble.template, (params, buffers), (take(x, m),)))
    return torch.stack(outputs)


def held_out_loss(
    ensemble: Ensemble, X: Inputs, y: torch.Tensor, held_out: np.ndarray, loss_fn: Callable, *, engine: str,
    chunk: int = 2048,
) -> torch.Tensor:
    """Mean loss of each model on its own held-out points ``held_out[M, H]`` in evaluation mode → ``[M]``."""
    total = torch.zeros(ensemble.n_models, device=y.device)
    index = torch.from_numpy(held_out).to(y.device)
    with torch.no_grad():
        for start in range(0, index.shape[1], chunk):
            idx = index[:, start : start + chunk]
            outputs = model_outputs(ensemble, take(X, idx), engine=engine, training=False)
            total += loss_fn(outputs, y[idx]) * idx.shape[1]
    return total / index.shape[1]


def copy_models(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], which: torch.Tensor) -> None:
    """``target[k][m] ← source[k][m]`` for every stacked tensor ``k`` and every model ``m`` where ``which[m]``."""
    if not bool(which.any()):
        return
    with torch.no_grad():
        for name, value in target.items():
            value[which] = source[name][which]


@contextmanager
def seeded_training(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the dropout stream of a training run as :func:`targets.ensemble.train_ensemble` does, leaving the
    global random state as it was."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(derive_seed(seed, "dropout"))
        yield


# --- the defense -------------------------------------------------------------------------------------------------


@DEFENSES.register(
    "early_stopping",
    description="Stop each model when the loss on a validation split of its own members has not improved for "
    "`patience` epochs, and keep its best parameters (Caruana et al. 2001).",
    params=[
        Param("patience", int, 5, "epochs without improvement of the validation loss before a model stops",
              low=1, high=100_000),
        Param("validation_fraction", float, 0.2, "share of each model's members held out for validation "
              "(still counted as members by the audit)", low=0.0, high=0.5, low_inclusive=False),
    ],
)
class EarlyStopping(Defense):
    """Early stopping, model by model, with the best parameters restored.

    Caruana, Lawrence and Giles, "Overfitting in neural nets: backpropagation, conjugate gradient, and early
    stopping", NeurIPS 2001; evaluated against membership inference by Song and Mittal, "Systematic evaluation
    of privacy risks of machine learning models", USENIX Security 2021 (Section 6).

    Parameters
    ----------
    patience
        A model stops once its validation loss has not improved (strictly) for ``patience`` consecutive epochs.
    validation_fraction
        Share of each model's own members set aside, per model and seeded, as its validation split; every model
        holds out the same number (see :func:`hold_out_members`).

    Notes
    -----
    * The validation points are the defender's data set aside from its own training set: the model never trains
      on them, and ``TrainingLog.trained_on`` reports it, so the audit counts them as non-members of that model
      (their number per model is ``validation_members``). They choose the stopping epoch only.
    * Every model draws its minibatches from its remaining members. After each epoch the validation loss of every
      model is computed in evaluation mode; a model's best parameters are kept, and once it stops it is frozen
      (its best parameters are restored after every optimizer step, since Adam or weight decay move parameters
      even with a zero gradient) while the others go on. At the end every model holds its best parameters.
    * ``TrainingLog.history`` is the training loss per epoch and model, NaN after the model stopped. ``info``
      reports ``stopped_epoch_mean`` (the epoch a model stopped, or the last epoch run),
      ``best_epoch_mean`` (the epoch whose parameters were kept), ``stopped_early_fraction`` and
      ``validation_members`` (held-out members per model).
    """

    def __init__(self, patience: int = 5, validation_fraction: float = 0.2) -> None:
        super().__init__(patience=patience, validation_fraction=validation_fraction)
        self.patience = patience
        self.validation_fraction = validation_fraction

    def train(
        self, ensemble: Ensemble, X: Inputs, y: torch.Tensor, keep: np.ndarray, *, engine: str, seed: int,
        epochs: int, batch_size: int, lr: float, optimizer: str, momentum: float,
    ) -> TrainingLog:
        if n_records(X) != keep.shape[1]:
            raise ValueError(f"keep has {keep.shape[1]} columns for {n_records(X)} records")
        device = y.device
        n_models = ensemble.n_models
        train_keep, validation = hold_out_members(
            keep, self.validation_fraction, np.random.default_rng(derive_seed(seed, "validation"))
        )
        opt = make_optimizer(list(ensemble.params.values()), optimizer, lr, momentum, **self.optimizer_overrides())
        batch_rng = np.random.default_rng(derive_seed(seed, "minibatches"))

        best = {k: v.detach().clone() for k, v in ensemble.params.items()}
        best_loss = torch.full((n_models,), float("inf"), device=device)
        best_epoch = torch.zeros(n_models, dtype=torch.long, device=device)
        since_best = torch.zeros(n_models, dtype=torch.long, device=device)
        active = torch.ones(n_models, dtype=torch.bool, device=device)
        stopped_epoch = torch.full((n_models,), epochs, dtype=torch.long, device=device)
        history = np.full((epochs, n_models), np.nan, dtype=np.float32)
        with seeded_training(seed, device):
            for epoch in range(1, epochs + 1):
                batches = torch.from_numpy(minibatch_indices(train_keep, batch_size, batch_rng)).to(device)
                total = torch.zeros(n_models, device=device)
                for idx in batches:
                    losses = self.loss(model_outputs(ensemble, take(X, idx), engine=engine, training=True), y[idx])
                    opt.zero_grad(set_to_none=True)
                    (losses * active).sum().backward()
                    opt.step()
                    copy_models(best, ensemble.params, ~active)  # the stopped models do not move
                    total += losses.detach()
                history[epoch - 1] = np.where(active.cpu().numpy(), (total / len(batches)).cpu().numpy(), np.nan)

                loss = held_out_loss(ensemble, X, y, validation, self.loss, engine=engine)
                improved = active & (loss < best_loss)
                copy_models(ensemble.params, best, improved)
                best_loss = torch.where(improved, loss, best_loss)
                best_epoch = torch.where(improved, epoch, best_epoch)
                since_best = torch.where(improved, 0, since_best + active.long())
                stopping = active & (since_best >= self.patience)
                stopped_epoch = torch.where(stopping, epoch, stopped_epoch)
                active &= ~stopping
                if not bool(active.any()):
                    break
            copy_models(best, ensemble.params, torch.ones_like(active))
        stopped_epoch = torch.where(active, epoch, stopped_epoch)  # models still running when training ended
        return TrainingLog(history, {
            "stopped_epoch_mean": float(stopped_epoch.float().mean()),
            "best_epoch_mean": float(best_epoch.float().mean()),
            "stopped_early_fraction": float((stopped_epoch < epochs).float().mean()),
            "validation_members": float(validation.shape[1]),
        }, trained_on=train_keep)
