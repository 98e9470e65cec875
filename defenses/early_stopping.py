"""Early stopping on a validation split of each model's own members, as hooks of the training loop."""

from __future__ import annotations

import numpy as np

from defenses.base import Defense
from privkernel.hashing import derive_seed
from privkernel.lazy import lazy_import
from privkernel.registry import DEFENSES, Param
from targets.training import LossFn, TrainingHooks, TrainingRun, copy_models, held_out_loss, hold_out_members

torch = lazy_import("torch")

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

    def hooks(self) -> TrainingHooks:
        return EarlyStoppingHooks(self.loss, self.patience, self.validation_fraction)


class EarlyStoppingHooks(TrainingHooks):
    """The training loop's hooks for :class:`EarlyStopping`: hold the validation members out, and after every
    epoch keep each model's best parameters and stop the models whose validation loss has not improved for
    ``patience`` epochs; a stopped model's best parameters are restored after every later step."""

    def __init__(self, loss: LossFn, patience: int, validation_fraction: float) -> None:
        super().__init__(loss)
        self.patience = patience
        self.validation_fraction = validation_fraction

    def members(self, keep: np.ndarray, seed: int) -> np.ndarray:
        train_keep, self.validation = hold_out_members(
            keep, self.validation_fraction, np.random.default_rng(derive_seed(seed, "validation"))
        )
        return train_keep

    def start(self, run: TrainingRun) -> None:
        n_models, device = run.ensemble.n_models, run.device
        self.best = {k: v.detach().clone() for k, v in run.ensemble.params.items()}
        self.best_loss = torch.full((n_models,), float("inf"), device=device)
        self.best_epoch = torch.zeros(n_models, dtype=torch.long, device=device)
        self.since_best = torch.zeros(n_models, dtype=torch.long, device=device)
        self.stopped_epoch = torch.full((n_models,), run.settings.epochs, dtype=torch.long, device=device)
        self.last_epoch = 0

    def after_step(self, run: TrainingRun) -> None:
        copy_models(self.best, run.ensemble.params, ~run.active)  # the stopped models do not move

    def end_epoch(self, run: TrainingRun, epoch: int) -> None:
        active = run.active
        loss = held_out_loss(run, self.validation, self.loss)
        improved = active & (loss < self.best_loss)
        copy_models(run.ensemble.params, self.best, improved)
        self.best_loss = torch.where(improved, loss, self.best_loss)
        self.best_epoch = torch.where(improved, epoch, self.best_epoch)
        self.since_best = torch.where(improved, 0, self.since_best + active.long())
        stopping = active & (self.since_best >= self.patience)
        self.stopped_epoch = torch.where(stopping, epoch, self.stopped_epoch)
        active &= ~stopping
        self.last_epoch = epoch

    def finish(self, run: TrainingRun) -> dict[str, float]:
        copy_models(self.best, run.ensemble.params, torch.ones_like(run.active))  # every model ends at its best
        stopped = torch.where(run.active, self.last_epoch, self.stopped_epoch)  # models running when training ended
        return {
            "stopped_epoch_mean": float(stopped.float().mean()),
            "best_epoch_mean": float(self.best_epoch.float().mean()),
            "stopped_early_fraction": float((stopped < run.settings.epochs).float().mean()),
            "validation_members": float(self.validation.shape[1]),
        }
