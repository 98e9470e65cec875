"""Auditing one target model from released outputs: run an attack, choose thresholds on references, measure.

Used by every cell of a grid (on the outputs of its M models) and by ``python -m bench audit`` (on outputs a user
computed elsewhere), so both produce the same numbers from the same outputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from attacks.base import AttackData, AttackOutput, observations, shared_fields
from attacks.requirements import (
    LeakedMembership,
    PerturbedLabelQueries,
    Population,
    RecordFeatures,
    Release,
    RoundSnapshots,
    WhiteBoxFeatures,
    call_params,
    find,
    requirements_of,
)
from bench.metrics import (
    attack_metrics,
    best_threshold,
    calibration_metrics,
    epsilon_at_threshold,
    epsilon_threshold,
    roc_curve,
)
from bench.spec import ComponentSpec
from privkernel.errors import BenchError
from privkernel.hashing import derive_seed
from privkernel.registry import ATTACKS, Component

if TYPE_CHECKING:
    import pandas as pd

#: δ of the empirical ε lower bound (95 % Clopper–Pearson) stored for every attack.
EPSILON_DELTA = 1e-5


class Audit:
    """What ``M`` models show on ``N`` audited records, with each model's membership.

    Every per-model observation that :class:`attacks.base.AttackData` declares (:func:`attacks.base.observations`)
    is held under its name with the models on its axis, and every shared field as it is: the attacker's view of one
    target is sliced from them (:meth:`attack_data`), so a new observation is declared in ``AttackData`` only.

    Parameters
    ----------
    outputs
        Released log-probabilities ``[M, N, C]`` (predictions ``[M, N, 1]`` for regression).
    keep
        ``keep[m, i]``: record ``i`` is in model ``m``'s training set ``[M, N]``.
    labels
        True labels ``[N]``.
    population_outputs, population_labels
        Outputs ``[M, P, C]`` on population records that no model trained on, with labels ``[P]``, or ``None``.
    **more
        Further per-model observations by name (``robustness`` ``[M, N]``, ``white_box`` ``[M, N, F]``, ``rounds``
        ``[T, M, N, C]``, ``population_rounds`` ``[T, M, P, C]``) and shared fields (``task``,
        ``white_box_names``); None values are left out.

    Raises
    ------
    TypeError
        For a name that ``AttackData`` declares neither as an observation nor as a shared field.
    """

    def __init__(
        self,
        outputs: np.ndarray,
        keep: np.ndarray,
        labels: np.ndarray,
        population_outputs: np.ndarray | None = None,
        population_labels: np.ndarray | None = None,
        **more: Any,
    ) -> None:
        known, shared = observations(), shared_fields()
        unknown = sorted(set(more) - set(known) - set(shared))
        if unknown:
            raise TypeError(
                f"Audit: AttackData declares no observation or field {', '.join(map(repr, unknown))}; its "
                f"observations are {', '.join(known)} and its shared fields {', '.join(shared)}"
            )
        given = {"outputs": outputs, "population_outputs": population_outputs, "labels": labels,
                 "population_labels": population_labels, **more}
        self.keep = keep
        self.observed: dict[str, np.ndarray] = {k: v for k, v in given.items() if k in known and v is not None}
        self.shared: dict[str, Any] = {k: v for k, v in given.items() if k in shared and v is not None}

    @property
    def n_models(self) -> int:
        return len(self.keep)

    @property
    def outputs(self) -> np.ndarray:
        return self.observed["outputs"]

    @property
    def labels(self) -> np.ndarray:
        return self.shared["labels"]

    @property
    def population_outputs(self) -> np.ndarray | None:
        return self.observed.get("population_outputs")

    def attack_data(
        self, target: int, excluded: Iterable[int] = (), leaked: np.ndarray | None = None
    ) -> AttackData:
        """The attacker's view of ``target``: the other models (less ``excluded``) are its references; with
        ``leaked`` (record indices) the attacker also knows the target's membership of those records."""
        refs = [m for m in range(self.n_models) if m != target and m not in set(excluded)]
        return AttackData.of_models(self.observed, self.shared, self.keep, target, refs, leaked)


def leaked_records(keep: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The records whose membership a leaked-samples attacker knows: ``fraction`` of the model's members and the
    same fraction of its non-members (rounded, at least one of each), drawn with ``seed``; sorted indices."""
    rng = np.random.default_rng(seed)
    chosen = []
    for group in (np.flatnonzero(keep), np.flatnonzero(~keep)):
        n = min(len(group) - 1, max(1, round(fraction * len(group))))
        chosen.append(rng.choice(group, n, replace=False))
    return np.sort(np.concatenate(chosen))


def leak_of(attack: ComponentSpec, target: int) -> tuple[float, int] | None:
    """``(fraction, seed)`` of the leak an attack requires (:class:`LeakedMembership`) about ``target``, or None
    for an attack that requires none."""
    leak = find(requirements_of(ATTACKS.get(attack.name), attack.kwargs), LeakedMembership)
    return None if leak is None else (leak.fraction, derive_seed(leak.seed, "leak", target))


@dataclass(frozen=True)
class Servable:
    """What an audit can serve an attack's requirements (:mod:`attacks.requirements`).

    Attributes
    ----------
    release
        What the release shows: ``"probabilities"``, or less (``"top-k"``, ``"labels"`` ...).
    population
        Outputs on population records.
    queries
        Label-only queries of the models on perturbed records.
    parameters
        The models' parameters (white-box features).
    rounds
        The models of every federated round.
    features
        The audited and population records' input features, as flat vectors.
    """

    release: str = "probabilities"
    population: bool = True
    queries: bool = True
    parameters: bool = True
    rounds: bool = False
    features: bool = True


def skip_reason(
    attack: Component, params: Mapping[str, Any] | None, servable: Servable, task: str = "classification"
) -> str | None:
    """Why ``attack`` (with ``params``) cannot run here: the task is not one it supports, or one of its
    requirements is something the audit cannot serve; None when it can run. A white-box attack
    (:class:`WhiteBoxFeatures`) sees the weights, whatever the release shows."""
    tasks = attack.tag("tasks", params)
    if task not in tasks:
        return f"supports {' and '.join(tasks)} only; this cell is {task}"
    required = requirements_of(attack, params)
    release = find(required, Release)
    if release is not None and release.shows == "probabilities" and servable.release != "probabilities":
        return f"needs probabilities; the release shows {servable.release} only"
    if find(required, WhiteBoxFeatures) is not None and not servable.parameters:
        return "needs the model's parameters (white-box access); the audit has released outputs only"
    if find(required, Population) is not None and not servable.population:
        return "needs population records (outputs on data no model trained on)"
    if find(required, PerturbedLabelQueries) is not None and not servable.queries:
        return "needs label-only queries of the models on perturbed records"
    if find(required, RecordFeatures) is not None and not servable.features:
        return "needs the records' input features as flat vectors (and population records'); these inputs are not"
    if find(required, RoundSnapshots) is not None and not servable.rounds:
        return "needs the models of every federated round; runs on cells with training engine 'federated' only"
    return None


def calibration_models(n_models: int, target: int, k: int) -> list[int]:
    """The ``k`` reference models whose own audits choose a target's thresholds: the ones after it, cyclically."""
    return [(target + 1 + i) % n_models for i in range(k)]


def run_attack(
    attack: ComponentSpec, audit: Audit, target: int, excluded: Iterable[int] = (), leaked: np.ndarray | None = None
) -> AttackOutput:
    """Scores of one attack against model ``target``, with a check that they are one finite score per record."""
    data = audit.attack_data(target, excluded, leaked)
    function = ATTACKS.get(attack.name).obj
    out = function(data, **call_params(function, attack.kwargs))
    out = out if isinstance(out, AttackOutput) else AttackOutput(out)
    scores = np.asarray(out.scores, dtype=np.float64)
    if scores.shape != data.labels.shape or np.isnan(scores).any():
        n_nan = int(np.isnan(scores).sum()) if scores.shape == data.labels.shape else "?"
        raise RuntimeError(
            f"attack {attack.label()} returned scores of shape {scores.shape} with {n_nan} NaN; "
            f"expected {data.labels.shape} finite scores"
        )
    return AttackOutput(scores, dict(out.info), out.threshold, out.class_thresholds)


def score_target(attack: ComponentSpec, audit: Audit, target: int, calibration: list[int]) -> dict[str, np.ndarray]:
    """The target's scores and diagnostics (``info/<name>``), and each calibration model's scores when it is
    audited in the target's place (with the target left out of its references).

    For a leaked-samples attacker, ``evaluated`` ``[N]`` and ``calibration_evaluated`` ``[k, N]`` mark the
    records whose membership was *not* leaked: metrics are computed on those only.
    """
    models = [target, *calibration]
    leaks = [leak_of(attack, m) for m in models]
    leaked = [None if leak is None else leaked_records(audit.keep[m], *leak)
              for m, leak in zip(models, leaks, strict=True)]
    out = run_attack(attack, audit, target, leaked=leaked[0])
    n = audit.keep.shape[1]
    scores = {
        "target": out.scores,
        "calibration": np.array([run_attack(attack, audit, r, excluded={target}, leaked=known).scores
                                 for r, known in zip(calibration, leaked[1:], strict=True)]).reshape(-1, n),
        **{f"info/{k}": np.array(v, dtype=np.float64) for k, v in out.info.items()},
    }
    if out.threshold is not None:
        scores["decision_threshold"] = np.array(out.threshold, dtype=np.float64)
    if out.class_thresholds:
        scores["class_thresholds/classes"] = np.array(list(out.class_thresholds), dtype=np.int64)
        scores["class_thresholds/values"] = np.array(list(out.class_thresholds.values()), dtype=np.float64)
    if leaked[0] is not None:
        evaluated = np.ones((len(models), audit.keep.shape[1]), dtype=bool)
        for row, known in zip(evaluated, leaked, strict=True):
            row[known] = False
        scores["evaluated"], scores["calibration_evaluated"] = evaluated[0], evaluated[1:]
    return scores


def target_metrics(
    scores: dict[str, np.ndarray], keep: np.ndarray, target: int, calibration: list[int], n_targets: int = 1
) -> dict[str, Any]:
    """Every metric of one target's scores; the thresholds are chosen on the calibration models' audits. Records
    marked not ``evaluated`` (leaked to the attacker) take no part.

    Beside the target's metrics, ``calibration_tpr_at_fpr_0``, ``calibration_tpr_at_fpr_0.1pct``,
    ``calibration_tpr_at_fpr_1pct`` and ``calibration_auc`` are the same metrics measured on the calibration
    models' audits (each audit separately, then averaged over the calibration models;
    :func:`bench.metrics.calibration_metrics`): what the attacker measures without the target's membership, on which
    the leaderboard chooses a setting's strongest attack. Only the calibration models that are not themselves
    audited as targets (models ``n_targets`` and above) take part in them, so that the choice never rests on an
    audit of a model whose target audit it then reports; they are NaN when every calibration model is a target."""
    n = keep.shape[1]
    evaluated = scores.get("evaluated", np.ones(n, dtype=bool))
    reference_evaluated = scores.get("calibration_evaluated", np.ones((len(calibration), n), dtype=bool))
    reference_scores = scores["calibration"][reference_evaluated]
    reference_membership = keep[calibration][reference_evaluated]
    target_scores, members = scores["target"][evaluated], keep[target][evaluated]
    if "decision_threshold" in scores:  # the attack learned its own rule: its accuracy is measured at it
        threshold = float(scores["decision_threshold"])
    elif calibration:
        threshold = best_threshold(reference_scores, reference_membership)
    else:
        threshold = float("nan")
    epsilon = float("nan")
    if calibration:
        eps_threshold = epsilon_threshold(reference_scores, reference_membership, EPSILON_DELTA)
        epsilon = epsilon_at_threshold(target_scores, members, eps_threshold, EPSILON_DELTA)
    return {
        **attack_metrics(target_scores, members, threshold).as_row(),
        **calibration_metrics(scores["calibration"], keep[calibration], reference_evaluated,
                              selected=np.asarray(calibration, dtype=int) >= n_targets),
        "epsilon_lower_bound": epsilon,
        **{k.split("/", 1)[1]: float(v) for k, v in scores.items() if k.startswith("info/")},
    }


# --- `python -m bench audit`: outputs computed elsewhere ---------------------------------------------------------

#: Arrays of an outputs file: name → (required, meaning).
OUTPUT_ARRAYS = {
    "target_outputs": (True, "[N, C] the target's probabilities (or logits, with --logits) on the N audited records"),
    "target_membership": (True, "[N] 1 where the record is in the target's training set, else 0"),
    "labels": (True, "[N] true class of each audited record, integers in [0, C)"),
    "reference_outputs": (True, "[R, N, C] the R reference (shadow) models' outputs on the same records"),
    "reference_membership": (True, "[R, N] membership of the records in each reference model's training set"),
    "population_target_outputs": (False, "[P, C] the target's outputs on P records no model trained on (RMIA)"),
    "population_reference_outputs": (False, "[R, P, C] the reference models' outputs on those records"),
    "population_labels": (False, "[P] their true classes"),
}


def _log_probabilities(name: str, values: np.ndarray, logits: bool) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise BenchError(f"array {name!r} holds {int((~np.isfinite(values)).sum())} NaN or infinite values; fix them")
    if logits:
        shifted = values - values.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    if values.min() < 0 or values.max() > 1:
        raise BenchError(
            f"array {name!r} has values outside [0, 1] (min {values.min():.3g}, max {values.max():.3g}): these look "
            "like logits; pass --logits, or give probabilities"
        )
    deviation = np.abs(values.sum(axis=-1) - 1).max()
    if deviation > 1e-3:
        raise BenchError(
            f"the rows of {name!r} do not sum to 1 (largest deviation {deviation:.3g}); give probabilities, "
            "or pass --logits if these are unnormalised scores"
        )
    return np.log(np.maximum(values, np.finfo(np.float64).tiny))


def load_outputs(path: str, logits: bool = False) -> Audit:
    """Read and check an outputs file (see :data:`OUTPUT_ARRAYS`); the target is model 0 of the audit."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise BenchError(f"no outputs file {path}; give the path of an .npz file") from None
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot read {path} as an .npz of numeric arrays ({exc}); see `bench audit --help`") from None
    return outputs_audit(arrays, logits=logits, source=str(path))


def outputs_audit(arrays: Mapping[str, Any], *, logits: bool = False, source: str = "the outputs") -> Audit:
    """Check the arrays of :data:`OUTPUT_ARRAYS` (``None`` values count as absent) and turn them into an audit
    whose model 0 is the target; ``source`` names them in error messages."""
    arrays = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
    unknown = sorted(set(arrays) - set(OUTPUT_ARRAYS))
    if unknown:
        raise BenchError(f"{source}: unknown array(s) {', '.join(unknown)}; the arrays are "
                         f"{', '.join(OUTPUT_ARRAYS)}")
    missing = [k for k, (required, _) in OUTPUT_ARRAYS.items() if required and k not in arrays]
    if missing:
        raise BenchError(
            f"{source} lacks the array(s) {', '.join(missing)}; it has {', '.join(sorted(arrays)) or 'none'}. "
            f"Expected: " + "; ".join(f"{k} {meaning}" for k, (_, meaning) in OUTPUT_ARRAYS.items())
        )
    target, refs = arrays["target_outputs"], arrays["reference_outputs"]
    if target.ndim != 2:
        raise BenchError(f"target_outputs must be [N, C] (one row of class scores per record), got {target.shape}")
    n, c = target.shape
    expected = {"target_membership": (n,), "labels": (n,), "reference_outputs": (len(refs), n, c),
                "reference_membership": (len(refs), n)}
    if refs.ndim != 3 or len(refs) == 0:
        raise BenchError(f"reference_outputs must be [R, N, C] with R >= 1 reference models, got {refs.shape}")
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise BenchError(f"array {name!r} has shape {arrays[name].shape}, expected {shape} to match target_outputs")
    labels = arrays["labels"]
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= c:
        raise BenchError(f"array 'labels' must hold integers in [0, {c}), got {labels.dtype} in "
                         f"[{labels.min()}, {labels.max()}]")
    keep = np.concatenate([arrays["target_membership"][None], arrays["reference_membership"]])
    if not np.isin(keep, (0, 1)).all():
        raise BenchError("target_membership and reference_membership must hold 0/1 (or booleans) only")
    keep = keep.astype(bool)
    for m, row in enumerate(keep):
        if row.all() or not row.any():
            which = "target_membership" if m == 0 else f"reference_membership[{m - 1}]"
            raise BenchError(f"{which} must mark both members and non-members")
    outputs = np.concatenate([_log_probabilities("target_outputs", target, logits)[None],
                              _log_probabilities("reference_outputs", refs, logits)])
    population = [k for k in OUTPUT_ARRAYS if k.startswith("population")]
    present = [k for k in population if k in arrays]
    if present and len(present) != len(population):
        raise BenchError(f"give all of {', '.join(population)} or none; found only {', '.join(present)}")
    if not present:
        return Audit(outputs, keep, labels)
    p_labels = arrays["population_labels"]
    p = len(p_labels)
    if p == 0 or not np.issubdtype(p_labels.dtype, np.integer) or p_labels.min() < 0 or p_labels.max() >= c:
        raise BenchError(f"array 'population_labels' must hold at least one integer in [0, {c})")
    for name, shape in {"population_target_outputs": (p, c), "population_reference_outputs": (len(refs), p, c)}.items():
        if arrays[name].shape != shape:
            raise BenchError(f"array {name!r} has shape {arrays[name].shape}, expected {shape}")
    p_outputs = np.concatenate([_log_probabilities("population_target_outputs", arrays["population_target_outputs"],
                                                   logits)[None],
                                _log_probabilities("population_reference_outputs",
                                                   arrays["population_reference_outputs"], logits)])
    return Audit(outputs, keep, labels, p_outputs, p_labels)


def threshold_at_fpr(scores: np.ndarray, membership: np.ndarray, max_fpr: float) -> float:
    """The lowest threshold whose FPR on these (reference) scores is at most ``max_fpr``."""
    fpr, _, thresholds = roc_curve(scores, membership)
    return float(thresholds[np.flatnonzero(fpr <= max_fpr + 1e-12)[-1]])


def union_metrics(
    scores: dict[str, dict[str, np.ndarray]], keep: np.ndarray, target: int, calibration: list[int], max_fpr: float
) -> tuple[dict[str, float], np.ndarray]:
    """The union of the members flagged by several attacks, each thresholded at ``max_fpr``.

    Each attack's threshold is the lowest one whose FPR on the calibration models' audits is at most
    ``max_fpr`` (what an attacker can do); a target record is flagged when any attack flags it. The union's TPR
    and FPR are then **measured** on the target: its FPR can exceed ``max_fpr`` (false positives add up
    across attacks). The ``oracle_*`` columns repeat this with each threshold set on the target's own
    non-members, as TPR at a fixed FPR is read in evaluations (Krüger et al. 2024).

    Returns
    -------
    metrics, flagged
        ``union_tpr``, ``union_fpr``, ``overlap_tpr`` (members flagged by every attack), each attack's
        ``tpr.<attack>`` and ``fpr.<attack>``, and the same with ``oracle_``; and the union's decisions ``[N]``.
    """
    members = keep[target]
    row: dict[str, float] = {"union_max_fpr": max_fpr}
    flagged_by_references = None
    for prefix in ("", "oracle_"):
        decisions = {}
        for name, sc in scores.items():
            if prefix:
                threshold = threshold_at_fpr(sc["target"], members, max_fpr)
            else:
                threshold = threshold_at_fpr(sc["calibration"].ravel(), keep[calibration].ravel(), max_fpr)
            decisions[name] = sc["target"] >= threshold
        flagged = np.logical_or.reduce(list(decisions.values()))
        every = np.logical_and.reduce(list(decisions.values()))
        row[f"{prefix}union_tpr"] = float(flagged[members].mean())
        row[f"{prefix}union_fpr"] = float(flagged[~members].mean())
        row[f"{prefix}overlap_tpr"] = float(every[members].mean())
        for name, d in decisions.items():
            row[f"{prefix}tpr.{name}"] = float(d[members].mean())
            row[f"{prefix}fpr.{name}"] = float(d[~members].mean())
        flagged_by_references = flagged if flagged_by_references is None else flagged_by_references
    return row, flagged_by_references


#: The columns of an audit table, in the order they are printed.
AUDIT_COLUMNS = ("attack", "auc", "balanced_accuracy", "tpr_at_fpr_0", "tpr_at_fpr_0.1pct", "tpr_at_fpr_1pct",
                 "epsilon_lower_bound", "skipped")


def audit_table(audit: Audit, attacks: Sequence[str] | None = None, calibration: int = 2) -> pd.DataFrame:
    """Run black-box attacks on an audit's target (model 0) and measure them, one row per attack.

    Parameters
    ----------
    audit
        The target's and its reference models' outputs (:func:`load_outputs`, :func:`outputs_audit`).
    attacks
        Attack names (default: every registered attack).
    calibration
        Reference models audited in the target's place to choose the balanced-accuracy threshold.

    Returns
    -------
    pandas.DataFrame
        ``attack`` and the metrics of :func:`target_metrics`; an attack that cannot run on these outputs has a
        ``skipped`` reason instead.
    """
    import pandas as pd

    names = list(ATTACKS.names() if attacks is None else attacks)
    if not names:
        raise BenchError("no attack named (attacks=, or --attacks); give attack names from "
                         "`python -m bench list attacks`")
    if not 1 <= calibration <= audit.n_models - 1:
        raise BenchError(f"calibration_models (--calibration-models) must be between 1 and the "
                         f"{audit.n_models - 1} reference models, got {calibration}")
    chosen = calibration_models(audit.n_models, 0, calibration)
    servable = Servable(population=audit.population_outputs is not None, queries=False, parameters=False)
    rows = []
    for name in names:
        component = ATTACKS.get(name)
        row: dict[str, Any] = {"attack": name}
        reason = skip_reason(component, None, servable)
        if reason:
            row["skipped"] = reason
        else:
            spec = ComponentSpec.make(name, component.validate({}), component.validate({}))
            try:
                row.update(target_metrics(score_target(spec, audit, 0, chosen), audit.keep, 0, chosen))
            except ValueError as exc:  # the attack cannot run on these outputs (e.g. too few references): say why
                row["skipped"] = str(exc)
        rows.append(row)
    return pd.DataFrame(rows)
