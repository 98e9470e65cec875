"""What an attack receives: the released outputs of one target and of its reference models.

The target's membership is not in here: an attack cannot peek at the answer it is scored on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np

from attacks.signals import true_class_log_probs

#: The outputs of an :class:`AttackData` whose true-class signals :meth:`AttackData.true_class` gives.
TrueClassPart = Literal["target", "references", "population_target", "population_references"]
#: The field holding each part's precomputed signals.
TRUE_CLASS_FIELDS: dict[str, str] = {
    "target": "target_true_class", "references": "reference_true_class",
    "population_target": "population_target_true_class", "population_references": "population_reference_true_class",
}


@dataclass(frozen=True)
class PerModel:
    """Marks an :class:`AttackData` field as one part of an observation that every model of an audit has.

    An audit holds the observation ``name`` of all ``M`` models as one array whose models' axis is ``axis``
    (``[M, N, ...]``, or ``[T, M, N, ...]`` for rounds); the attacker's view of a target is the target's slice
    (``part="target"``) and the references' (``part="references"``).
    """

    name: str
    part: Literal["target", "references"]
    axis: int = 0


def per_model(name: str, part: Literal["target", "references"], axis: int = 0, default: Any = MISSING) -> Any:
    """A dataclass field that holds the ``part`` of the per-model observation ``name`` (see :class:`PerModel`)."""
    return field(default=default, metadata={"per_model": PerModel(name, part, axis)})


@dataclass(frozen=True)
class AttackData:
    """The attacker's view of one audit.

    The fields made by :func:`per_model` are the target's and the references' parts of an observation that every
    model has; an audit of all models (:class:`bench.audit.Audit`) holds them by observation name and slices them
    with :meth:`of_models`, so a new observation is declared here only.

    Attributes
    ----------
    target
        Released outputs of the target on the ``N`` pool points: log-probabilities ``[N, C]``.
    labels
        True labels of the pool points ``[N]``.
    references
        Released outputs of the ``R`` reference models on the same points ``[R, N, C]``.
    reference_keep
        Membership of the pool points in each reference model's training set ``[R, N]``.
    population_target, population_references, population_labels
        Outputs of the target ``[P, C]`` and of the references ``[R, P, C]`` on ``P`` population points drawn
        from the same distribution and used to train none of the models (RMIA's ``z``), with their labels.
        ``None`` when the audit has no population.
    task
        ``"classification"`` (outputs are log-probabilities) or ``"regression"`` (outputs are predictions
        ``[..., N, 1]`` and labels are the true values).
    target_robustness, reference_robustness
        For label-only attacks: the fraction of noisy queries around each pool point that the target ``[N]``
        and each reference ``[R, N]`` still label correctly; ``None`` unless an attack asked for them.
    target_white_box, reference_white_box, white_box_names
        For white-box attacks: features computed from the released parameters (per-layer per-sample gradient
        norms, the loss, hidden-activation norms) of the target ``[N, F]`` and of each reference ``[R, N, F]``
        on every pool point, and the ``F`` feature names; ``None`` unless an attack asked for them.
    features, population_features
        For attacks that read the records themselves: the input features of the pool points ``[N, F]`` and of the
        population points ``[P, F]``, flattened; ``None`` unless an attack asked for them.
    shadow_outputs, shadow_labels, shadow_keep
        The classic shadow-model setting (Shokri et al. 2017; Song & Mittal 2021): ``S`` shadow models' released
        outputs on their own ``Ns`` shadow records ``[S, Ns, C]``, those records' labels ``[Ns]`` and each shadow
        model's membership of them ``[S, Ns]``; ``None`` unless given (``bench audit``). Attacks that learn a rule
        from outputs with known membership (thresholds, histograms, a classifier) learn it on these when given,
        instead of on the references (:meth:`AttackData.labelled_outputs`); per-example attacks cannot use them.
    leaked_index, leaked_membership
        For the leaked-samples attacker: the pool points ``[L]`` whose membership in the *target* the attacker
        knows, and that membership ``[L]``. The harness scores the attack on the other points only.
    target_rounds, reference_rounds, population_target_rounds, population_reference_rounds
        For federated cells and an insider's view: the outputs after each of ``T`` rounds (of the global model,
        or of one site's local model) of the target ``[T, N, C]`` and the references ``[T, R, N, C]``, and on
        the population ``[T, P, C]``, ``[T, R, P, C]``; ``None`` unless an attack asked for them.
    target_true_class, reference_true_class, population_target_true_class, population_reference_true_class
        Classification: ``log p_y`` and ``log(1 − p_y)`` of the outputs above, stacked on a last axis of 2
        (``[N, 2]``, ``[R, N, 2]``, ``[P, 2]``, ``[R, P, 2]``), as an audit computes them once for all its models
        (:func:`attacks.signals.model_signals`); read them with :meth:`true_class`, which computes them from the
        outputs when they are not given. A view with other outputs is made with :meth:`with_outputs`, which drops
        them.
    """

    target: np.ndarray = per_model("outputs", "target")
    labels: np.ndarray
    references: np.ndarray = per_model("outputs", "references")
    reference_keep: np.ndarray = field(metadata={"per_target": True})
    population_target: np.ndarray | None = per_model("population_outputs", "target", default=None)
    population_references: np.ndarray | None = per_model("population_outputs", "references", default=None)
    population_labels: np.ndarray | None = None
    target_robustness: np.ndarray | None = per_model("robustness", "target", default=None)
    reference_robustness: np.ndarray | None = per_model("robustness", "references", default=None)
    task: str = "classification"
    target_white_box: np.ndarray | None = per_model("white_box", "target", default=None)
    reference_white_box: np.ndarray | None = per_model("white_box", "references", default=None)
    white_box_names: tuple[str, ...] = ()
    features: np.ndarray | None = None
    population_features: np.ndarray | None = None
    shadow_outputs: np.ndarray | None = None
    shadow_labels: np.ndarray | None = None
    shadow_keep: np.ndarray | None = None
    leaked_index: np.ndarray | None = field(default=None, metadata={"per_target": True})
    leaked_membership: np.ndarray | None = field(default=None, metadata={"per_target": True})
    target_rounds: np.ndarray | None = per_model("rounds", "target", axis=1, default=None)
    reference_rounds: np.ndarray | None = per_model("rounds", "references", axis=1, default=None)
    population_target_rounds: np.ndarray | None = per_model("population_rounds", "target", axis=1, default=None)
    population_reference_rounds: np.ndarray | None = per_model("population_rounds", "references", axis=1,
                                                                default=None)
    target_true_class: np.ndarray | None = per_model("true_class", "target", default=None)
    reference_true_class: np.ndarray | None = per_model("true_class", "references", default=None)
    population_target_true_class: np.ndarray | None = per_model("population_true_class", "target", default=None)
    population_reference_true_class: np.ndarray | None = per_model("population_true_class", "references",
                                                                    default=None)

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.target.shape[0] != n or self.references.shape[1:2] != (n,) or self.reference_keep.shape[1:] != (n,):
            raise ValueError(
                f"inconsistent attack inputs: target {self.target.shape}, labels {self.labels.shape}, "
                f"references {self.references.shape}, reference_keep {self.reference_keep.shape}"
            )
        if self.population_target is not None:
            p = len(self.population_labels)
            if self.population_target.shape[0] != p or self.population_references.shape[:2] != (
                len(self.references), p
            ):
                raise ValueError(
                    f"inconsistent population: target {self.population_target.shape}, labels {p}, "
                    f"references {self.population_references.shape}"
                )
        if self.shadow_outputs is not None:
            s_shape = np.shape(self.shadow_outputs)
            if (len(s_shape) != 3 or np.shape(self.shadow_labels) != s_shape[1:2]
                    or np.shape(self.shadow_keep) != s_shape[:2]):
                raise ValueError(
                    f"inconsistent shadow inputs: shadow_outputs {s_shape}, shadow_labels "
                    f"{np.shape(self.shadow_labels)}, shadow_keep {np.shape(self.shadow_keep)}"
                )
        for part, name in TRUE_CLASS_FIELDS.items():
            given, outputs = getattr(self, name), getattr(self, part)
            if given is not None and (outputs is None or np.shape(given) != (*np.shape(outputs)[:-1], 2)):
                raise ValueError(f"inconsistent {name}: {np.shape(given)} for outputs {np.shape(outputs)}")
        if self.features is not None and len(self.features) != n:
            raise ValueError(f"inconsistent features: {self.features.shape} for {n} pool points")
        if self.population_features is not None and (
            self.population_labels is None or len(self.population_features) != len(self.population_labels)
        ):
            raise ValueError(f"inconsistent population features: {self.population_features.shape}")

    @property
    def n_references(self) -> int:
        return len(self.references)

    def with_outputs(self, **outputs: np.ndarray | None) -> AttackData:
        """A copy whose outputs (``target``, ``references``, ``population_target``, ``population_references``, and
        ``population_labels``) are replaced, without the true-class signals of the old outputs: they are computed
        from the new ones when read (:meth:`true_class`). ``dataclasses.replace`` would keep the stale signals."""
        unknown = sorted(set(outputs) - {*TRUE_CLASS_FIELDS, "population_labels"})
        if unknown:
            raise TypeError(f"with_outputs replaces outputs only ({', '.join(TRUE_CLASS_FIELDS)}), not {unknown}")
        return replace(self, **outputs, **dict.fromkeys(TRUE_CLASS_FIELDS.values()))

    def true_class(self, part: TrueClassPart) -> tuple[np.ndarray, np.ndarray]:
        """``log p_y`` and ``log(1 − p_y)`` (:func:`attacks.signals.true_class_log_probs`) of the outputs of
        ``part`` (``"target"``, ``"references"``, ``"population_target"`` or ``"population_references"``) on their
        records, read from the audit's signals when it gave them, else computed from the outputs."""
        given = getattr(self, TRUE_CLASS_FIELDS[part])
        if given is not None:
            return given[..., 0], given[..., 1]
        labels = self.population_labels if part.startswith("population") else self.labels
        return true_class_log_probs(getattr(self, part), labels)

    def labelled_outputs(self) -> LabelledOutputs | None:
        """The outputs with known membership that a rule-learning attack learns on: the shadow models' on their
        own records when given, else the references' on the audited records, else None."""
        if self.shadow_outputs is not None:
            return LabelledOutputs(self.shadow_outputs, np.asarray(self.shadow_labels),
                                   np.asarray(self.shadow_keep, dtype=bool), "shadow")
        if self.n_references:
            return LabelledOutputs(self.references, np.asarray(self.labels),
                                   np.asarray(self.reference_keep, dtype=bool), "references")
        return None

    def require_references(self, attack: str) -> None:
        """Raise the ``ValueError`` of a per-example attack (one that compares each record's output with the
        references' outputs on that same record) that has no references."""
        if self.n_references == 0:
            shadow = (" Shadow models scored on their own records cannot serve it: their records are not the audited "
                      "ones." if self.shadow_outputs is not None else "")
            raise ValueError(
                f"attack {attack!r} compares each record's output with reference models' outputs on the same record "
                f"and has no reference models.{shadow} Give references: grids, protocol.n_models >= 2; audits, "
                "reference_outputs and reference_membership on the audited records"
            )

    @classmethod
    def of_models(
        cls,
        observed: Mapping[str, np.ndarray | None],
        shared: Mapping[str, Any],
        keep: np.ndarray,
        target: int,
        references: Sequence[int],
        leaked: np.ndarray | None = None,
    ) -> AttackData:
        """The view of ``target`` from observations of every model: the per-model arrays ``observed`` (by
        observation name, see :func:`observations`) are sliced along their models' axis into the target's part and
        the references' part; ``shared`` (the fields of :func:`shared_fields`) passes as it is. With ``leaked``
        (record indices), the attacker also knows the target's membership ``keep[target, leaked]``.

        Raises
        ------
        TypeError
            For an observation or a shared field that :class:`AttackData` does not have.
        """
        known = observations()
        unknown = sorted(set(observed) - set(known)) + sorted(set(shared) - set(shared_fields()))
        if unknown:
            raise TypeError(
                f"AttackData has no observation or field {', '.join(map(repr, unknown))}; its per-model observations "
                f"are {', '.join(known)} and its shared fields {', '.join(shared_fields())}"
            )
        refs = list(references)
        parts: dict[str, Any] = {}
        for name, array in observed.items():
            if array is None:
                continue
            axis = known[name]["axis"]
            index: list[Any] = [slice(None)] * axis
            parts[known[name]["target"]] = array[(*index, target)]
            parts[known[name]["references"]] = array[(*index, refs)]
        return cls(
            **parts, **shared, reference_keep=keep[refs], leaked_index=leaked,
            leaked_membership=None if leaked is None else keep[target, leaked],
        )

    def residuals(self) -> tuple[np.ndarray, np.ndarray]:
        """Regression only: prediction − label of the target ``[N]`` and of the references ``[R, N]``."""
        labels = np.asarray(self.labels, dtype=np.float64)
        return (np.asarray(self.target, dtype=np.float64)[..., 0] - labels,
                np.asarray(self.references, dtype=np.float64)[..., 0] - labels)


@dataclass(frozen=True)
class LabelledOutputs:
    """Released outputs of models with known membership, for an attack to learn a rule on.

    Attributes
    ----------
    outputs
        ``[S, Ns, C]`` (predictions ``[S, Ns, 1]`` for regression).
    labels
        The records' labels ``[Ns]``.
    keep
        Each model's membership of the records ``[S, Ns]``.
    source
        ``"shadow"`` (shadow models on their own records) or ``"references"`` (reference models on the audited
        records).
    """

    outputs: np.ndarray
    labels: np.ndarray
    keep: np.ndarray
    source: str

    def residuals(self) -> np.ndarray:
        """Regression only: prediction − label ``[S, Ns]``."""
        return np.asarray(self.outputs, dtype=np.float64)[..., 0] - np.asarray(self.labels, dtype=np.float64)


def observations() -> dict[str, dict[str, Any]]:
    """Every per-model observation of :class:`AttackData` by name: its ``target`` and ``references`` fields and
    its models' ``axis`` in an audit of all models. A new observation is a new pair of :func:`per_model` fields."""
    out: dict[str, dict[str, Any]] = {}
    for f in fields(AttackData):
        marker = f.metadata.get("per_model")
        if marker is not None:
            out.setdefault(marker.name, {"axis": marker.axis})[marker.part] = f.name
    return out


def shared_fields() -> tuple[str, ...]:
    """The fields of :class:`AttackData` that every model's view shares (labels, the task, feature names)."""
    return tuple(f.name for f in fields(AttackData)
                 if "per_model" not in f.metadata and "per_target" not in f.metadata)


@dataclass(frozen=True)
class AttackOutput:
    """Scores and diagnostics of one attack run.

    An attack returns either a score array ``[N]`` or an :class:`AttackOutput` whose ``info`` (numbers only,
    e.g. how many points had no IN reference) becomes extra columns of the results store.

    Attributes
    ----------
    threshold
        The attack's own decision rule, "member if score >= threshold", where the attack learns one (Song &
        Mittal's thresholds, chosen on the references): the balanced accuracy is then measured at it. None: the
        harness chooses a threshold on the calibration models' audits.
    class_thresholds
        The thresholds the attack learned per class, in the units of its statistic (class → τ), for reports.
    """

    scores: np.ndarray
    info: dict[str, float] = field(default_factory=dict)
    threshold: float | None = None
    class_thresholds: dict[int, float] | None = None
