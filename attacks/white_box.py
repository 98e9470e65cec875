"""The white-box attack: a classifier on per-record losses, gradient norms and activation norms.

Nasr, M., Shokri, R. and Houmansadr, A. "Comprehensive Privacy Analysis of Deep Learning: Passive and Active
White-box Inference Attacks against Centralized and Federated Learning", IEEE S&P 2019 (the attack model reads the
loss, the per-layer gradients and the hidden activations of the target on a record); with the gradient-norm features
of Gupta, U., Stripelis, D. et al. "Membership Inference Attacks on Deep Regression Models for Neuroimaging",
MIDL 2021. The classifier is trained on the reference models, whose parameters the attacker also holds.
"""

from __future__ import annotations

import numpy as np

from attacks.base import AttackData
from attacks.classifier import check_finite, member_probabilities
from attacks.requirements import WhiteBoxFeatures, always
from privkernel.registry import ATTACKS, Param


def white_box_rows(
    features: np.ndarray, labels: np.ndarray, task: str = "classification", n_classes: int | None = None,
    transform: bool = True,
) -> np.ndarray:
    """Attack-classifier rows ``[..., N, F + C]`` (``F + 1`` for regression) from white-box features ``[..., N, F]``.

    Every white-box feature (a loss or an L2 norm, all non-negative) becomes ``log1p(max(value, 0))``, which keeps
    the small values of well-fitted records apart while taming the heavy tail of badly fitted ones; then the label
    follows, one-hot for classification and as its value for regression, so that the classifier can learn
    class-dependent (label-dependent) thresholds. ``n_classes`` sets the one-hot width (default: the largest
    label + 1). ``transform=False`` keeps the features as given (already calibrated z-scores).
    """
    features = np.asarray(features, dtype=np.float64)
    transformed = np.log1p(np.maximum(features, 0.0)) if transform else features
    labels = np.asarray(labels)
    if task == "regression":
        label_columns = labels.astype(np.float64)[:, None]
    else:
        width = n_classes if n_classes is not None else (int(labels.max()) + 1 if labels.size else 1)
        label_columns = np.eye(width)[labels]
    label_columns = np.broadcast_to(label_columns, (*features.shape[:-1], label_columns.shape[-1]))
    return np.concatenate([transformed, label_columns], axis=-1)


def calibrate_per_record(
    target: np.ndarray, references: np.ndarray, reference_keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each record's white-box features as z-scores against reference models that did not train on it.

    With ``x = log1p(max(feature, 0))``, the target's row of record ``i`` becomes ``(x_t(i) − μ(i)) / σ(i)``, the
    mean and (population) standard deviation over ``k`` references that left ``i`` out — as LiRA compares a
    record's score with its OUT distribution, so that records that are hard for every model stop looking like
    non-members. A reference's own row is standardised against ``k`` OUT references *other than itself*, so the
    classifier trains on rows distributed as the target's.

    Every row uses the same ``k`` (the smallest number of OUT references of any record, less one): the first
    ``k`` OUT references in reference order, or for a reference among them the first ``k + 1`` without itself.
    A varying count would leak: where every record is IN for exactly half of all models, a member of the target
    has one OUT reference more than a non-member, and the spread of a z-score depends on its sample size (see
    :func:`attacks.lira.equal_count_masks`).

    Parameters
    ----------
    target
        Target features ``[N, F]``.
    references
        Reference features ``[R, N, F]``.
    reference_keep
        Membership of the records in the references ``[R, N]``.

    Returns
    -------
    target_z, reference_z
        ``[N, F]`` and ``[R, N, F]``.

    Raises
    ------
    ValueError
        When a record has fewer than 3 OUT references (``k`` would be below 2).
    """
    x_t = np.log1p(np.maximum(np.asarray(target, dtype=np.float64), 0.0))
    x_r = np.log1p(np.maximum(np.asarray(references, dtype=np.float64), 0.0))
    out = ~np.asarray(reference_keep, dtype=bool)
    k = int(out.sum(0).min()) - 1
    if k < 2:
        raise ValueError(
            f"attack 'white_box' with calibrate: a record has only {k + 1} reference models that left it out; "
            "per-record calibration needs at least 3 — raise protocol.n_models or set calibrate: false"
        )
    rank = np.cumsum(out, axis=0)
    first_k, first_k1 = [(out & (rank <= n))[..., None] for n in (k, k + 1)]
    s1_k, s2_k = (x_r * first_k).sum(0), (x_r**2 * first_k).sum(0)
    s1_k1, s2_k1 = (x_r * first_k1).sum(0), (x_r**2 * first_k1).sum(0)

    def z(x: np.ndarray, total: np.ndarray, squares: np.ndarray) -> np.ndarray:
        mean = total / k
        return (x - mean) / (np.sqrt(np.maximum(squares / k - mean**2, 0.0)) + 1e-6)

    own = first_k  # a reference among the first k OUT of a record is replaced by the (k + 1)-th
    return z(x_t, s1_k, s2_k), z(x_r, np.where(own, s1_k1 - x_r, s1_k), np.where(own, s2_k1 - x_r**2, s2_k))


def require_white_box(data: AttackData, attack: str, references: bool = True) -> None:
    """Raise a ``ValueError`` naming the fix when ``data`` lacks the white-box features ``attack`` reads."""
    missing = data.target_white_box is None or (references and data.reference_white_box is None)
    if missing:
        raise ValueError(
            f"attack {attack!r} needs white-box features of the models (AttackData.target_white_box"
            + (" and reference_white_box" if references else "")
            + "); the harness computes them (targets.white_box.white_box_features) for attacks that "
            "require WhiteBoxFeatures() — run it through the grid, or pass the features when building AttackData"
        )
    n_features = data.target_white_box.shape[-1]
    if data.target_white_box.shape != (len(data.labels), n_features) or (
        references and data.reference_white_box.shape != (data.n_references, len(data.labels), n_features)
    ):
        raise ValueError(
            f"attack {attack!r}: white-box features shaped target {data.target_white_box.shape}, references "
            f"{None if data.reference_white_box is None else data.reference_white_box.shape} do not match "
            f"{data.n_references} references on {len(data.labels)} records; pass [N, F] and [R, N, F]"
        )


@ATTACKS.register(
    "white_box",
    description="MLP attack classifier on the white-box features of each record — its loss, per-layer gradient "
    "norms and activation norms — trained on the reference models labelled by their membership (Nasr et al. "
    "2019; Gupta et al. 2021).",
    params=[
        Param("hidden", int, 64, "width of the attack MLP's hidden layer", low=1, high=4096),
        Param("max_iter", int, 200, "maximum training epochs of the attack MLP (Adam)", low=1, high=10000),
        Param("max_train", int, 20000, "at most this many reference (model, point) rows to train on", low=2),
        Param("seed", int, 0, "seed of the row subsample and of the MLP's initialisation and shuffling", low=0),
        Param("calibrate", bool, False, "standardise each record's features against the references that left it "
              "out (LiRA's per-record comparison) before the classifier"),
    ],
    requires=always(WhiteBoxFeatures()),
    tasks=("classification", "regression"),
    access="white-box",
)
def white_box_attack(
    data: AttackData, hidden: int = 64, max_iter: int = 200, max_train: int = 20000, seed: int = 0,
    calibrate: bool = False,
) -> np.ndarray:
    """Score = the attack classifier's member probability for the target's white-box features on each point.

    Every (reference model ``r``, pool point ``x``) pair is a training row: :func:`white_box_rows` of
    ``reference_white_box[r, x]`` (log1p of the loss, of every gradient and activation norm, then the label),
    labelled ``reference_keep[r, x]``. An MLP (:func:`attacks.classifier.member_probabilities`: standardised
    features, one ReLU hidden layer, Adam) is fitted to at most ``max_train`` rows drawn with ``seed`` and applied
    to the target's rows. Deterministic for a given ``seed``.

    Raises
    ------
    ValueError
        Without white-box features, without references, if their rows are all IN or all OUT, or if a feature is
        NaN or infinite.
    """
    require_white_box(data, "white_box")
    keep = np.asarray(data.reference_keep, dtype=bool).ravel()
    if data.n_references == 0 or keep.all() or not keep.any():
        raise ValueError(
            "attack 'white_box' needs reference models with both IN and OUT points to train on; "
            "run it with at least 2 models (protocol.n_models) and a membership split"
        )
    check_finite(data.reference_white_box, "white_box", data.white_box_names)
    check_finite(data.target_white_box, "white_box", data.white_box_names)
    n_classes = data.target.shape[-1] if data.task == "classification" else None
    target, references = data.target_white_box, data.reference_white_box
    if calibrate:
        target, references = calibrate_per_record(target, references, data.reference_keep)
    rows = white_box_rows(references, data.labels, data.task, n_classes, transform=not calibrate)
    return member_probabilities(
        rows.reshape(-1, rows.shape[-1]), keep,
        white_box_rows(target, data.labels, data.task, n_classes, transform=not calibrate),
        hidden=hidden, max_iter=max_iter, max_train=max_train, seed=seed, attack="white_box",
    )
