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
from attacks.signals import model_signals
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


#: The true-class signals an audit holds: (observation, the outputs it is computed from, their labels).
TRUE_CLASS_SOURCES = (("true_class", "outputs", "labels"),
                      ("population_true_class", "population_outputs", "population_labels"))


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
        The true-class signals ``true_class`` ``[M, N, 2]`` and ``population_true_class`` ``[M, P, 2]``
        (:func:`attacks.signals.model_signals`; computed here from the outputs when not given, for classification),
        further per-model observations by name (``robustness`` ``[M, N]``, ``white_box`` ``[M, N, F]``, ``rounds``
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
        if self.shared.get("task", "classification") == "classification":  # every attack's true-class signals
            for name, source, labelled in TRUE_CLASS_SOURCES:
                if name not in self.observed and source in self.observed:
                    self.observed[name] = model_signals(self.observed[source], self.shared[labelled])

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


def _calibration_scores(
    attack: ComponentSpec, audit: Audit, target: int, model: int, leaked: np.ndarray | None
) -> np.ndarray:
    """The scores of calibration model ``model`` audited in the target's place (the target left out of its
    references); a failure says that it was this audit that failed."""
    try:
        return run_attack(attack, audit, model, excluded={target}, leaked=leaked).scores
    except ValueError as exc:
        raise ValueError(
            f"on the calibration audit of model {model} (audited in the target's place with the other "
            f"{audit.n_models - 2} models as references): {exc}. Audit fewer calibration models "
            "(--calibration-models, protocol.calibration_models) or give more reference models"
        ) from exc


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
        "calibration": np.array([_calibration_scores(attack, audit, target, r, known)
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
    "reference_outputs": (False, "[R, N, C] R reference models' outputs on the same N records (LiRA, RMIA, BASE)"),
    "reference_membership": (False, "[R, N] membership of the records in each reference model's training set"),
    "shadow_outputs": (False, "[S, Ns, C] S shadow models' outputs on their own Ns shadow records (the classic "
                              "setting: threshold attacks, privacy risk, NN attack)"),
    "shadow_labels": (False, "[Ns] true class of each shadow record"),
    "shadow_membership": (False, "[S, Ns] 1 where the shadow record is in that shadow model's training set"),
    "population_target_outputs": (False, "[P, C] the target's outputs on P records no model trained on (RMIA)"),
    "population_reference_outputs": (False, "[R, P, C] the reference models' outputs on those records"),
    "population_labels": (False, "[P] their true classes"),
    "features": (False, "[N, F] the audited records' input features (QMIA)"),
    "population_features": (False, "[P, F] the population records' input features (QMIA)"),
}

#: Arrays that come together or not at all.
ARRAY_GROUPS = (
    ("reference_outputs", "reference_membership"),
    ("shadow_outputs", "shadow_labels", "shadow_membership"),
    ("population_target_outputs", "population_labels"),
    ("features", "population_features"),
)


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


def _check_labels(name: str, labels: np.ndarray, n_classes: int, length: int | None = None) -> None:
    if labels.ndim != 1 or (length is not None and len(labels) != length):
        raise BenchError(f"array {name!r} must be [{length if length is not None else 'n'}] (one class per record), "
                         f"got {labels.shape}")
    if len(labels) == 0 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= n_classes:
        shown = f"{labels.dtype} in [{labels.min()}, {labels.max()}]" if len(labels) else "no records"
        raise BenchError(f"array {name!r} must hold integers in [0, {n_classes}) (the target's classes), got {shown}")


def _check_membership(name: str, membership: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if membership.shape != shape:
        raise BenchError(f"array {name!r} has shape {membership.shape}, expected {shape}")
    if not np.isin(membership, (0, 1)).all():
        raise BenchError(f"array {name!r} must hold 0/1 (or booleans) only")
    membership = membership.astype(bool).reshape(-1, shape[-1])
    for m, row in enumerate(membership):
        if row.all() or not row.any():
            which = name if len(shape) == 1 else f"{name}[{m}]"
            raise BenchError(f"{which} must mark both members and non-members; it marks "
                             f"{'only members' if row.all() else 'no member'}")
    return membership.reshape(shape)


def outputs_audit(arrays: Mapping[str, Any], *, logits: bool = False, source: str = "the outputs") -> Audit:
    """Check the arrays of :data:`OUTPUT_ARRAYS` (``None`` values count as absent) and turn them into an audit
    whose model 0 is the target; ``source`` names them in error messages.

    References (outputs of models on the audited records), shadow models (outputs on their own records) and the
    population are each optional; without any of them only the attacks that need neither still run.
    """
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
    groups = list(ARRAY_GROUPS)
    if "reference_outputs" in arrays:  # the references' outputs on the population come with them
        groups.append(("population_target_outputs", "population_reference_outputs"))
    elif "population_reference_outputs" in arrays:
        raise BenchError(f"{source}: population_reference_outputs without reference_outputs; give the references' "
                         "outputs on the audited records too, or leave both out")
    for group in groups:
        present = [k for k in group if k in arrays]
        if present and len(present) != len(group):
            raise BenchError(f"{source}: give all of {', '.join(group)} or none; found only {', '.join(present)}")
    target = arrays["target_outputs"]
    if target.ndim != 2:
        raise BenchError(f"target_outputs must be [N, C] (one row of class scores per record), got {target.shape}")
    n, c = target.shape
    _check_labels("labels", arrays["labels"], c, n)
    keep_rows = [_check_membership("target_membership", arrays["target_membership"], (n,))[None]]
    outputs = [_log_probabilities("target_outputs", target, logits)[None]]
    n_refs = 0
    if "reference_outputs" in arrays:
        refs = arrays["reference_outputs"]
        if refs.ndim != 3 or len(refs) == 0 or refs.shape[1:] != (n, c):
            raise BenchError(f"array 'reference_outputs' has shape {refs.shape}, expected [R, {n}, {c}] with R >= 1 "
                             "reference models scored on the audited records (shadow models scored on their own "
                             "records go in shadow_outputs)")
        n_refs = len(refs)
        keep_rows.append(_check_membership("reference_membership", arrays["reference_membership"], (n_refs, n)))
        outputs.append(_log_probabilities("reference_outputs", refs, logits))
    more: dict[str, Any] = {}
    if "shadow_outputs" in arrays:
        shadow = arrays["shadow_outputs"]
        if shadow.ndim != 3 or len(shadow) == 0 or shadow.shape[2] != c:
            raise BenchError(f"array 'shadow_outputs' has shape {shadow.shape}, expected [S, Ns, {c}]: S >= 1 shadow "
                             f"models' outputs on their own Ns records, with the target's {c} classes")
        s_models, n_shadow = shadow.shape[:2]
        _check_labels("shadow_labels", arrays["shadow_labels"], c, n_shadow)
        more.update(
            shadow_outputs=_log_probabilities("shadow_outputs", shadow, logits), shadow_labels=arrays["shadow_labels"],
            shadow_keep=_check_membership("shadow_membership", arrays["shadow_membership"], (s_models, n_shadow)),
        )
    population, p_labels = None, None
    if "population_target_outputs" in arrays:
        p_labels = arrays["population_labels"]
        _check_labels("population_labels", p_labels, c)
        p = len(p_labels)
        expected = {"population_target_outputs": (p, c)}
        if n_refs:
            expected["population_reference_outputs"] = (n_refs, p, c)
        for name, shape in expected.items():
            if arrays[name].shape != shape:
                raise BenchError(f"array {name!r} has shape {arrays[name].shape}, expected {shape}")
        population = np.concatenate([_log_probabilities(name, arrays[name], logits).reshape(-1, p, c)
                                     for name in expected])
    if "features" in arrays:
        features, p_features = arrays["features"], arrays["population_features"]
        if features.ndim != 2 or len(features) != n:
            raise BenchError(f"array 'features' has shape {features.shape}, expected [{n}, F]")
        if population is None or p_features.shape != (len(p_labels), features.shape[1]):
            raise BenchError(f"array 'population_features' has shape {p_features.shape}, expected "
                             f"[P, {features.shape[1]}] for the P population records (population_labels)")
        for name in ("features", "population_features"):
            if not np.issubdtype(arrays[name].dtype, np.number) or not np.isfinite(arrays[name]).all():
                raise BenchError(f"array {name!r} must hold finite numbers")
        more.update(features=features.astype(np.float64), population_features=p_features.astype(np.float64))
    return Audit(np.concatenate(outputs), np.concatenate(keep_rows).astype(bool), arrays["labels"], population,
                 p_labels, **more)


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
AUDIT_COLUMNS = ("attack", "knowledge", "learned_on", "auc", "balanced_accuracy", "tpr_at_fpr_0", "tpr_at_fpr_0.1pct",
                 "tpr_at_fpr_1pct", "epsilon_lower_bound", "skipped")


def default_calibration(n_references: int) -> int:
    """Reference models audited in the target's place by default: 2, or fewer when fewer than 3 references leave
    each such audit at least one reference."""
    return min(2, max(n_references - 1, 0))


def audit_attacks(audit: Audit, attacks: Sequence[str] | None) -> list[ComponentSpec]:
    """The attacks of an audit table: the labels given, with parameters as grids print them
    (``confidence(thresholds=global)``), or by default every attack whose attacker knows no part of the target's
    membership (an attacker told part of it, ``leaked``, runs only when named)."""
    from bench.spec import parse_label

    if attacks is None:
        names = [n for n in ATTACKS.names() if ATTACKS.get(n).tag("knowledge", None, "references") == "references"]
        return [parse_label(n, ATTACKS) for n in names]
    if not attacks:
        raise BenchError("no attack named (attacks=, or --attacks); give attack names from "
                         "`python -m bench list attacks`")
    return [parse_label(label, ATTACKS) for label in attacks]


def _learned_on(scores: Mapping[str, np.ndarray], audit: Audit) -> str | None:
    """Where an attack that learned its own decision rule learned it; None for the others."""
    if "decision_threshold" not in scores:
        return None
    if scores.get("info/thresholds_learned", 1) == 0:
        return "fixed rule"
    if "shadow_outputs" in audit.shared:
        return "shadow"
    return "references" if audit.n_models > 1 else None


def audit_table(audit: Audit, attacks: Sequence[str] | None = None, calibration: int | None = None) -> pd.DataFrame:
    """Run black-box attacks on an audit's target (model 0) and measure them, one row per attack.

    Parameters
    ----------
    audit
        The target's outputs, and any of: reference models' outputs on the same records, shadow models' outputs on
        their own records, population outputs, the records' features (:func:`load_outputs`, :func:`outputs_audit`).
    attacks
        Attack labels, with parameters as grids print them (default: :func:`audit_attacks`).
    calibration
        Reference models audited in the target's place, for the attacks that learn no threshold of their own
        (default: :func:`default_calibration`); at most ``R − 1`` of the ``R`` references, since each such audit
        leaves the target out of its references.

    Returns
    -------
    pandas.DataFrame
        ``attack`` (its label), ``knowledge`` (``leaked``: the attacker was told part of the target's membership),
        ``learned_on`` (where an attack that learns its own rule learned it: ``shadow`` or ``references``), the
        metrics of :func:`target_metrics` (the balanced accuracy at the attack's own thresholds where it learns
        them), ``class_thresholds`` (``class:τ`` pairs) and, for an attack that cannot run, the ``skipped`` reason.
    """
    import pandas as pd

    specs = audit_attacks(audit, attacks)
    n_references = audit.n_models - 1
    most = max(n_references - 1, 0)
    k = default_calibration(n_references) if calibration is None else calibration
    if not 0 <= k <= most:
        raise BenchError(
            f"calibration_models (--calibration-models) must be between 0 and {most}, got {k}: each calibration model "
            f"is audited in the target's place with the other references (the target left out), so of the "
            f"{n_references} reference models at most {most} can be while keeping a reference each"
        )
    chosen = calibration_models(audit.n_models, 0, k)
    servable = Servable(population=audit.population_outputs is not None, queries=False, parameters=False,
                        features="features" in audit.shared)
    rows = []
    for spec in specs:
        component = ATTACKS.get(spec.name)
        row: dict[str, Any] = {"attack": spec.label(),
                               "knowledge": component.tag("knowledge", spec.kwargs, "references")}
        reason = skip_reason(component, spec.kwargs, servable)
        if reason:
            row["skipped"] = reason
        else:
            try:
                scores = score_target(spec, audit, 0, chosen)
                row.update(target_metrics(scores, audit.keep, 0, chosen))
                if _learned_on(scores, audit) is not None:
                    row["learned_on"] = _learned_on(scores, audit)
            except ValueError as exc:  # the attack cannot run on these outputs (e.g. no references): say why
                row["skipped"] = str(exc)
            else:
                if "class_thresholds/classes" in scores:
                    row["class_thresholds"] = " ".join(
                        f"{c}:{t:.6g}" for c, t in zip(scores["class_thresholds/classes"],
                                                      scores["class_thresholds/values"], strict=True))
        rows.append(row)
    return pd.DataFrame(rows)
