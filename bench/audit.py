"""Auditing one target model from released outputs: run an attack, choose thresholds on references, measure.

Used by every cell of a grid (on the outputs of its M models) and by ``python -m bench audit`` (on outputs a user
computed elsewhere), so both produce the same numbers from the same outputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from attacks.base import AttackData, AttackOutput
from bench.metrics import attack_metrics, best_threshold, epsilon_at_threshold, epsilon_threshold
from bench.registry import ATTACKS
from bench.spec import ComponentSpec

#: δ of the empirical ε lower bound (95 % Clopper–Pearson) stored for every attack.
EPSILON_DELTA = 1e-5


@dataclass(frozen=True)
class Audit:
    """Released outputs of ``M`` models on ``N`` audited records, with each model's membership.

    Attributes
    ----------
    outputs
        Log-probabilities ``[M, N, C]``.
    keep
        ``keep[m, i]``: record ``i`` is in model ``m``'s training set ``[M, N]``.
    labels
        True labels ``[N]``.
    population_outputs, population_labels
        Outputs ``[M, P, C]`` on population records that no model trained on, with labels ``[P]``, or ``None``.
    """

    outputs: np.ndarray
    keep: np.ndarray
    labels: np.ndarray
    population_outputs: np.ndarray | None = None
    population_labels: np.ndarray | None = None

    @property
    def n_models(self) -> int:
        return len(self.keep)

    def attack_data(self, target: int, excluded: Iterable[int] = ()) -> AttackData:
        """The attacker's view of ``target``: the other models (less ``excluded``) are its references."""
        refs = [m for m in range(self.n_models) if m != target and m not in set(excluded)]
        has_population = self.population_outputs is not None
        return AttackData(
            self.outputs[target], self.labels, self.outputs[refs], self.keep[refs],
            population_target=self.population_outputs[target] if has_population else None,
            population_references=self.population_outputs[refs] if has_population else None,
            population_labels=self.population_labels,
        )


def calibration_models(n_models: int, target: int, k: int) -> list[int]:
    """The ``k`` reference models whose own audits choose a target's thresholds: the ones after it, cyclically."""
    return [(target + 1 + i) % n_models for i in range(k)]


def run_attack(attack: ComponentSpec, audit: Audit, target: int, excluded: Iterable[int] = ()) -> AttackOutput:
    """Scores of one attack against model ``target``, with a check that they are one finite score per record."""
    data = audit.attack_data(target, excluded)
    out = ATTACKS.get(attack.name).obj(data, **attack.kwargs)
    out = out if isinstance(out, AttackOutput) else AttackOutput(out)
    scores = np.asarray(out.scores, dtype=np.float64)
    if scores.shape != data.labels.shape or np.isnan(scores).any():
        n_nan = int(np.isnan(scores).sum()) if scores.shape == data.labels.shape else "?"
        raise RuntimeError(
            f"attack {attack.label()} returned scores of shape {scores.shape} with {n_nan} NaN; "
            f"expected {data.labels.shape} finite scores"
        )
    return AttackOutput(scores, dict(out.info))


def score_target(attack: ComponentSpec, audit: Audit, target: int, calibration: list[int]) -> dict[str, np.ndarray]:
    """The target's scores and diagnostics (``info/<name>``), and each calibration model's scores when it is
    audited in the target's place (with the target left out of its references)."""
    out = run_attack(attack, audit, target)
    return {
        "target": out.scores,
        "calibration": np.stack([run_attack(attack, audit, r, excluded={target}).scores for r in calibration]),
        **{f"info/{k}": np.array(v, dtype=np.float64) for k, v in out.info.items()},
    }


def target_metrics(
    scores: dict[str, np.ndarray], keep: np.ndarray, target: int, calibration: list[int]
) -> dict[str, Any]:
    """Every metric of one target's scores; the thresholds are chosen on the calibration models' audits."""
    reference_scores, reference_membership = scores["calibration"].ravel(), keep[calibration].ravel()
    threshold = best_threshold(reference_scores, reference_membership)
    eps_threshold = epsilon_threshold(reference_scores, reference_membership, EPSILON_DELTA)
    return {
        **attack_metrics(scores["target"], keep[target], threshold).as_row(),
        "epsilon_lower_bound": epsilon_at_threshold(scores["target"], keep[target], eps_threshold, EPSILON_DELTA),
        **{k.split("/", 1)[1]: float(v) for k, v in scores.items() if k.startswith("info/")},
    }
