"""Adversarial regularisation (Nasr, Shokri and Houmansadr, CCS 2018): train each model against its own
membership-inference model in a min-max game."""

from __future__ import annotations

import math

import numpy as np

from defenses.base import Defense
from privkernel.hashing import derive_seed
from privkernel.lazy import lazy_import
from privkernel.registry import DEFENSES, Param
from targets.ensemble import take
from targets.training import Batch, TrainingHooks, TrainingRun, hold_out_members

torch = lazy_import("torch")


class InferenceModels:
    """M membership-inference models, one per classifier, stacked like the ensemble (batched matmuls).

    Each maps a classifier's output on a labelled record to the logit of "member". Its inputs, after Nasr et
    al.'s black-box inference model: the probability vector sorted in decreasing order and the one-hot label,
    each through its own layer (``C → width``, ReLU), then, joined with the log-probability of the true class,
    two layers (``2·width + 1 → width → 1``). The log-probability of the true class is an addition to the
    paper's inputs: once the vector is sorted, the two inputs no longer say which probability belongs to the
    true class, and that probability (the loss) is what the strongest attacks of this benchmark read.

    Parameters
    ----------
    n_models, n_classes, width
        Number of stacked models ``M``, classes ``C`` and hidden units.
    seed
        Initialisation (uniform in ``±1/√fan_in`` like ``torch.nn.Linear``).
    """

    def __init__(self, n_models: int, n_classes: int, width: int, seed: int, device: torch.device) -> None:
        generator = torch.Generator().manual_seed(seed)
        shapes = {
            "probs": (n_classes, width), "label": (n_classes, width),
            "hidden": (2 * width + 1, width), "out": (width, 1),
        }
        self.params: dict[str, torch.Tensor] = {}
        for name, (fan_in, fan_out) in shapes.items():
            bound = 1.0 / math.sqrt(fan_in)
            for suffix, shape in (("w", (n_models, fan_in, fan_out)), ("b", (n_models, 1, fan_out))):
                value = (torch.rand(shape, generator=generator) * 2 - 1) * bound
                self.params[f"{name}.{suffix}"] = value.to(device).requires_grad_(True)

    def _layer(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.params[f"{name}.b"], x, self.params[f"{name}.w"])

    def logits(self, log_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Member logits ``[M, B]`` from the classifiers' log-probabilities ``[M, B, C]`` and labels ``[M, B]``."""
        probs = log_probs.exp().sort(dim=-1, descending=True).values
        one_hot = torch.nn.functional.one_hot(labels, log_probs.shape[-1]).to(log_probs.dtype)
        true_class = log_probs.gather(-1, labels.unsqueeze(-1))
        joined = torch.cat([
            torch.relu(self._layer("probs", probs)), torch.relu(self._layer("label", one_hot)), true_class
        ], dim=-1)
        return self._layer("out", torch.relu(self._layer("hidden", joined))).squeeze(-1)


@DEFENSES.register(
    "advreg",
    description="Adversarial regularisation (Nasr et al. 2018): min-max training against an inference model per "
    "model that tells its training members from a reference set held out of its own members.",
    params=[
        Param("alpha", float, 1.0, "weight λ of the inference model's gain in the classifier's loss", low=0.0,
              high=1000.0),
        Param("inference_steps", int, 1, "inference-model steps (k) before each classifier step", low=1, high=100),
        Param("reference_fraction", float, 0.2, "share of each model's members held out as the defender's "
              "reference (non-training) set; still counted as members by the audit", low=0.0, high=0.5,
              low_inclusive=False),
        Param("inference_lr", float, 1e-2, "Adam learning rate of the inference models", low=0.0,
              low_inclusive=False, high=10.0),
        Param("width", int, 64, "hidden units of the inference models", low=1, high=8192),
    ],
    tasks=("classification",),
)
class AdversarialRegularization(Defense):
    """Membership privacy through adversarial regularisation.

    Nasr, Shokri and Houmansadr, "Machine learning with membership privacy using adversarial regularization",
    ACM CCS 2018. The classifier ``f`` solves ``min_f [ L_D(f) + λ · max_h G(h; f) ]`` where the gain of the
    inference model ``h`` is ``G = E_D[log h(x, y, f(x))] + E_D'[log(1 − h(x', y', f(x')))]`` over the training
    set ``D`` and a reference set ``D'`` of non-members.

    Parameters
    ----------
    alpha
        λ; ``0`` trains the plain classifier (on fewer points, see below) while the inference models still learn.
    inference_steps
        k: the inference models take ``k`` steps, each on a fresh minibatch of members and of reference points,
        before every classifier step (the paper's Algorithm 1).
    reference_fraction
        Share of each model's members set aside as its reference set ``D'``.
    inference_lr, width
        Adam learning rate and hidden size of the inference models.

    Notes
    -----
    * The reference set. Nasr et al. give the defender a reference set ``D'`` from the same distribution, disjoint
      from its training set. Here a defender owns only its model's members (``keep[m]``): every other pool record is
      an audited non-member, whose use in training would leak the answer into the audit, and the test split is
      for utility only. So each model sets aside ``reference_fraction`` of its own members (seeded, the same number
      for every model) and does not train on them. ``TrainingLog.trained_on`` reports it, so the audit counts these
      records as what they are for that model, non-members (as Nasr et al.'s reference set is); their number per
      model is ``reference_members``.
    * One step of the game, for every model at once: ``k`` inference steps maximise ``G`` on minibatches of the
      model's training members (label 1) and of its reference points (label 0), with the classifier's outputs in
      evaluation mode (as released) and held fixed; then one classifier step minimises
      ``mean CE(f(x), y) + λ · mean log h(x, y, f(x))`` over a minibatch of members (training-mode outputs), the
      classifier's term of ``G``; ``h`` is held fixed.
    * The classifier uses the training settings (optimizer, lr, batch size, epochs); an epoch is one pass over each
      model's training members. ``history`` is the classification loss alone. ``info``: ``inference_gain`` (mean
      ``G`` over the last epoch's inference steps; ``−2·log 2 ≈ −1.386`` is chance), ``inference_accuracy``
      (accuracy of the inference models over the same steps) and ``reference_members``.
    """

    def __init__(
        self, alpha: float = 1.0, inference_steps: int = 1, reference_fraction: float = 0.2,
        inference_lr: float = 1e-2, width: int = 64,
    ) -> None:
        super().__init__(alpha=alpha, inference_steps=inference_steps, reference_fraction=reference_fraction,
                         inference_lr=inference_lr, width=width)
        self.alpha = alpha
        self.inference_steps = inference_steps
        self.reference_fraction = reference_fraction
        self.inference_lr = inference_lr
        self.width = width

    def hooks(self) -> TrainingHooks:
        return AdversarialHooks(self)


class AdversarialHooks(TrainingHooks):
    """The training loop's hooks for :class:`AdversarialRegularization`: hold the reference set out; before every
    classifier step, ``k`` steps of the inference models (the extra step); the classifier's objective gains
    ``λ · mean log h``."""

    def __init__(self, defense: AdversarialRegularization) -> None:
        super().__init__(defense.loss)
        self.defense = defense

    def members(self, keep: np.ndarray, seed: int) -> np.ndarray:
        self.rng = np.random.default_rng(derive_seed(seed, "advreg", "sampling"))
        train_keep, self.reference = hold_out_members(keep, self.defense.reference_fraction, self.rng)
        self.training_members = [np.flatnonzero(row) for row in train_keep]
        return train_keep

    def start(self, run: TrainingRun) -> None:
        n_models, device = run.ensemble.n_models, run.device
        with torch.no_grad():  # the number of outputs, from one record
            one = torch.zeros(n_models, 1, dtype=torch.long, device=device)
            n_classes = run.outputs(take(run.X, one), training=False).shape[-1]
        self.inference = InferenceModels(n_models, n_classes, self.defense.width,
                                         derive_seed(run.seed, "advreg", "init"), device)
        self.inference_opt = torch.optim.Adam(list(self.inference.params.values()), lr=self.defense.inference_lr)
        self._reset_epoch(run)

    def _reset_epoch(self, run: TrainingRun) -> None:
        self.gain = torch.zeros(run.ensemble.n_models, device=run.device)
        self.correct = torch.zeros(run.ensemble.n_models, device=run.device)
        self.inner_steps = 0

    def _draw(self, run: TrainingRun, pools: list[np.ndarray] | np.ndarray) -> torch.Tensor:
        size = run.settings.batch_size
        picked = np.stack([pool[self.rng.integers(0, len(pool), size)] for pool in pools])
        return torch.from_numpy(picked).to(run.device)

    def extra_step(self, run: TrainingRun, batch: Batch) -> None:
        """``k`` ascent steps of every inference model on ``G``, each on fresh minibatches of training members
        (label 1) and reference points (label 0), with the classifiers' released (evaluation-mode) outputs."""
        for _ in range(self.defense.inference_steps):
            member_idx, reference_idx = self._draw(run, self.training_members), self._draw(run, self.reference)
            both = torch.cat([member_idx, reference_idx], dim=1)  # one forward pass for the two minibatches
            with torch.no_grad():
                log_probs = torch.log_softmax(run.outputs(take(run.X, both), training=False), -1)
            in_logits, out_logits = self.inference.logits(log_probs, run.y[both]).split(member_idx.shape[1], dim=1)
            logsigmoid = torch.nn.functional.logsigmoid
            gain = logsigmoid(in_logits).mean(dim=1) + logsigmoid(-out_logits).mean(dim=1)  # [M]
            self.inference_opt.zero_grad(set_to_none=True)
            (-gain).sum().backward()
            self.inference_opt.step()
            self.gain += gain.detach()
            self.correct += ((in_logits > 0).float().mean(dim=1) + (out_logits <= 0).float().mean(dim=1)).detach() / 2
            self.inner_steps += 1

    def objective(self, run: TrainingRun, losses: torch.Tensor, outputs: torch.Tensor,
                  labels: torch.Tensor) -> torch.Tensor:
        member_logits = self.inference.logits(torch.log_softmax(outputs, -1), labels)
        privacy = torch.nn.functional.logsigmoid(member_logits).mean(dim=1)
        return losses + self.defense.alpha * privacy

    def end_epoch(self, run: TrainingRun, epoch: int) -> None:
        self.last = (self.gain / self.inner_steps, self.correct / self.inner_steps)
        self._reset_epoch(run)

    def finish(self, run: TrainingRun) -> dict[str, float]:
        gain, accuracy = self.last
        return {
            "inference_gain": float(gain.mean()),
            "inference_accuracy": float(accuracy.mean()),
            "reference_members": float(self.reference.shape[1]),
        }
