"""Adversarial regularisation (Nasr, Shokri and Houmansadr, CCS 2018): train each model against its own
membership-inference model in a min-max game."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from privkernel.registry import DEFENSES, Param
from privkernel.hashing import derive_seed
from defenses.base import Defense
from defenses.early_stopping import hold_out_members, model_outputs, seeded_training
from targets.ensemble import Ensemble, Inputs, TrainingLog, make_optimizer, minibatch_indices, take


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
        one_hot = F.one_hot(labels, log_probs.shape[-1]).to(log_probs.dtype)
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

    def train(
        self, ensemble: Ensemble, X: Inputs, y: torch.Tensor, keep: np.ndarray, *, engine: str, seed: int,
        epochs: int, batch_size: int, lr: float, optimizer: str, momentum: float,
    ) -> TrainingLog:
        device = y.device
        n_models = ensemble.n_models
        rng = np.random.default_rng(derive_seed(seed, "advreg", "sampling"))
        train_keep, reference = hold_out_members(keep, self.reference_fraction, rng)
        members = [np.flatnonzero(row) for row in train_keep]
        with torch.no_grad():  # the number of outputs, from one record
            one = torch.zeros(n_models, 1, dtype=torch.long, device=device)
            n_classes = model_outputs(ensemble, take(X, one), engine=engine, training=False).shape[-1]
        inference = InferenceModels(n_models, n_classes, self.width, derive_seed(seed, "advreg", "init"), device)
        inference_opt = torch.optim.Adam(list(inference.params.values()), lr=self.inference_lr)
        opt = make_optimizer(list(ensemble.params.values()), optimizer, lr, momentum, **self.optimizer_overrides())
        batch_rng = np.random.default_rng(derive_seed(seed, "minibatches"))

        def draw(pools: list[np.ndarray] | np.ndarray) -> torch.Tensor:
            picked = np.stack([pool[rng.integers(0, len(pool), batch_size)] for pool in pools])
            return torch.from_numpy(picked).to(device)

        history = np.zeros((epochs, n_models), dtype=np.float32)
        gain = correct = torch.zeros(n_models, device=device)
        with seeded_training(seed, device):
            for epoch in range(epochs):
                batches = torch.from_numpy(minibatch_indices(train_keep, batch_size, batch_rng)).to(device)
                total = torch.zeros(n_models, device=device)
                gain = torch.zeros(n_models, device=device)
                correct = torch.zeros(n_models, device=device)
                for idx in batches:
                    for _ in range(self.inference_steps):
                        g, c = self._inference_step(ensemble, inference, inference_opt, X, y, draw(members),
                                                    draw(reference), engine)
                        gain += g
                        correct += c
                    outputs = model_outputs(ensemble, take(X, idx), engine=engine, training=True)
                    losses = self.loss(outputs, y[idx])
                    privacy = F.logsigmoid(inference.logits(torch.log_softmax(outputs, -1), y[idx])).mean(dim=1)
                    opt.zero_grad(set_to_none=True)
                    (losses + self.alpha * privacy).sum().backward()
                    opt.step()
                    total += losses.detach()
                history[epoch] = (total / len(batches)).cpu().numpy()
        inner_steps = len(batches) * self.inference_steps
        return TrainingLog(history, {
            "inference_gain": float((gain / inner_steps).mean()),
            "inference_accuracy": float((correct / inner_steps).mean()),
            "reference_members": float(reference.shape[1]),
        }, trained_on=train_keep)

    @staticmethod
    def _inference_step(
        ensemble: Ensemble, inference: InferenceModels, opt: torch.optim.Optimizer, X: Inputs, y: torch.Tensor,
        member_idx: torch.Tensor, reference_idx: torch.Tensor, engine: str,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One ascent step of every inference model on ``G``; returns its gain and accuracy per model ``[M]``."""
        both = torch.cat([member_idx, reference_idx], dim=1)  # one forward pass for the two minibatches
        with torch.no_grad():
            log_probs = torch.log_softmax(model_outputs(ensemble, take(X, both), engine=engine, training=False), -1)
        in_logits, out_logits = inference.logits(log_probs, y[both]).split(member_idx.shape[1], dim=1)
        gain = F.logsigmoid(in_logits).mean(dim=1) + F.logsigmoid(-out_logits).mean(dim=1)  # [M]
        opt.zero_grad(set_to_none=True)
        (-gain).sum().backward()
        opt.step()
        accuracy = ((in_logits > 0).float().mean(dim=1) + (out_logits <= 0).float().mean(dim=1)) / 2
        return gain.detach(), accuracy.detach()
