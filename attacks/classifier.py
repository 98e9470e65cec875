"""A membership classifier shared by the learned attacks: fit on labelled feature rows, score other rows.

Used by the shadow-model attack (:mod:`attacks.nn`, rows from the reference models), the white-box attack
(:mod:`attacks.white_box`) and the leaked-samples attacker (:mod:`attacks.leaked`, rows from the target itself).
"""

from __future__ import annotations

import warnings

import numpy as np


def check_finite(features: np.ndarray, attack: str, names: tuple[str, ...] = ()) -> None:
    """Raise a ``ValueError`` naming the columns of ``features [..., F]`` that hold NaN or infinite values."""
    bad = ~np.isfinite(features)
    if bad.any():
        columns = np.flatnonzero(bad.reshape(-1, features.shape[-1]).any(0))
        shown = [names[c] if c < len(names) else f"column {c}" for c in columns]
        raise ValueError(
            f"attack {attack!r}: {int(bad.sum())} feature values are NaN or infinite (in {', '.join(shown)}); the "
            "models probably diverged — lower the learning rate or check the training loss"
        )


def member_probabilities(
    X_train: np.ndarray,
    member: np.ndarray,
    X_score: np.ndarray,
    *,
    hidden: int,
    max_iter: int,
    max_train: int | None,
    seed: int,
    attack: str,
    scale: bool = True,
) -> np.ndarray:
    """Fit an MLP membership classifier on ``(X_train, member)`` and return its member probability on ``X_score``.

    The classifier is scikit-learn's ``MLPClassifier`` (one ReLU hidden layer of ``hidden`` units, Adam,
    ``max_iter`` epochs; convergence warnings silenced), on features standardised on the training rows when
    ``scale``. With ``rng = np.random.default_rng(seed)``, at most ``max_train`` training rows are kept (drawn
    without replacement, in their original order) and the MLP's ``random_state`` is then drawn from ``rng``, so the
    result is deterministic for a given ``seed``.

    Parameters
    ----------
    X_train
        Training features ``[n, F]``.
    member
        Their membership labels ``[n]`` (bool); both classes must be present.
    X_score
        Features ``[k, F]`` to score.
    max_train
        At most this many training rows (``None``: all).
    attack
        The attack's name, for error messages.

    Returns
    -------
    np.ndarray
        Member probabilities ``[k]`` in ``[0, 1]``.

    Raises
    ------
    ValueError
        If the (subsampled) training rows are all members or all non-members.
    """
    # imported here: scikit-learn costs seconds to import, and registering the attacks needs none of it
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    member = np.asarray(member, dtype=bool).ravel()
    if len(member) != len(X_train):
        raise ValueError(f"attack {attack!r}: {len(X_train)} training rows but {len(member)} membership labels")
    if member.all() or not member.any():
        raise ValueError(f"attack {attack!r}: its training rows are all IN or all OUT; it needs both to learn from")
    rng = np.random.default_rng(seed)
    if max_train is not None and len(X_train) > max_train:
        rows = np.sort(rng.choice(len(X_train), max_train, replace=False))
        X_train, member = X_train[rows], member[rows]
        if member.all() or not member.any():
            raise ValueError(f"attack {attack!r}: the {max_train} sampled training rows are all IN or all OUT; "
                             "raise its parameter max_train")
    model = MLPClassifier(
        hidden_layer_sizes=(hidden,), max_iter=max_iter, random_state=int(rng.integers(2**31 - 1))
    )
    if scale:
        scaler = StandardScaler().fit(X_train)
        X_train, X_score = scaler.transform(X_train), scaler.transform(X_score)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X_train, member)
    member_column = list(model.classes_).index(True)
    return model.predict_proba(X_score)[:, member_column]
