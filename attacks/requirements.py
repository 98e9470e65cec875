"""What an attack needs from the models, as typed requirements that the harness serves.

An attack declares its requirements at registration with the ``requires`` tag, a function of its parameters::

    @ATTACKS.register(
        "label_only", ...,
        requires=lambda p: (Release("labels"), PerturbedLabelQueries(noise=p["noise"], queries=p["queries"])),
    )
    def label_only(data: AttackData) -> AttackOutput: ...

The harness reads the requirements (:func:`requirements_of`), never the attack's parameters: for each one it
either serves the observation into :class:`attacks.base.AttackData` (the queries' robustness, the white-box
features, the rounds of one view) or skips the attack with the reason it cannot be served (a release that shows
labels only, an audit without population records). A parameter that only selects a requirement (``noise``,
``queries``, ``view``, ``site``, a leak's ``fraction``) is read by ``requires`` and not passed to the attack:
an attack receives the parameters its function takes (:func:`call_params`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from privkernel.registry import Component


class Requirement:
    """Base of every requirement; a requirement is a frozen dataclass whose fields select what is served."""


@dataclass(frozen=True)
class Release(Requirement):
    """The black-box release of every model on the audited records.

    Attributes
    ----------
    shows
        ``"probabilities"``: the attack reads the released probabilities (or regression predictions), so it
        cannot run on a release that shows less (top-k, label only); ``"labels"``: the predicted label is enough.
    """

    shows: Literal["probabilities", "labels"] = "probabilities"


@dataclass(frozen=True)
class Population(Requirement):
    """The outputs of every model on population records that no model trained on (RMIA's ``z``)."""


@dataclass(frozen=True)
class RecordFeatures(Requirement):
    """The input features of the audited records and of the population records, as flat vectors
    (``AttackData.features`` ``[N, F]``, ``population_features`` ``[P, F]``): what an attacker who holds the records
    themselves, and public records of the same distribution, can compute from (QMIA's quantile regressor). Tabular
    and fingerprint inputs are served; graphs are not."""


@dataclass(frozen=True)
class PerturbedLabelQueries(Requirement):
    """Label-only queries: for each model and audited record, the fraction of ``queries`` copies perturbed by
    Gaussian noise of standard deviation ``noise`` (in feature units) that the model labels correctly
    (``AttackData.target_robustness`` and ``reference_robustness``)."""

    noise: float
    queries: int


@dataclass(frozen=True)
class WhiteBoxFeatures(Requirement):
    """The released parameters, as per-record loss, gradient-norm and activation-norm features of every model
    (``AttackData.target_white_box``, ``reference_white_box``, ``white_box_names``). Served whatever the black-box
    release shows: a white-box attacker holds the weights."""


@dataclass(frozen=True)
class RoundSnapshots(Requirement):
    """The outputs of the models after every federated round (``AttackData.target_rounds`` and the others).

    Attributes
    ----------
    view
        ``"global"``: the global model after each round; ``"site"``: one site's local model after each round.
    site
        The site whose local models are watched (``view="site"``); None for the global view.
    """

    view: Literal["global", "site"]
    site: int | None = None

    def __post_init__(self) -> None:
        if self.view not in ("global", "site"):
            raise ValueError(f"RoundSnapshots: view={self.view!r} must be 'global' or 'site'")
        if (self.view == "site") != (self.site is not None):
            raise ValueError(
                f"RoundSnapshots: view={self.view!r} with site={self.site!r}; give a site for view 'site' only"
            )


@dataclass(frozen=True)
class LeakedMembership(Requirement):
    """The target's membership of some audited records: ``fraction`` of its members and of its non-members,
    drawn with ``seed`` (``AttackData.leaked_index``, ``leaked_membership``). The attack is scored on the others."""

    fraction: float
    seed: int


#: The requirements of an attack that declares none: it reads the released probabilities.
DEFAULT_REQUIREMENTS: tuple[Requirement, ...] = (Release("probabilities"),)

R = TypeVar("R", bound=Requirement)


def always(*requirements: Requirement) -> Callable[[Mapping[str, Any]], tuple[Requirement, ...]]:
    """A ``requires`` tag for an attack whose requirements do not depend on its parameters."""
    fixed = tuple(requirements)
    return lambda params: fixed


def requirements_of(component: Component, params: Mapping[str, Any] | None = None) -> tuple[Requirement, ...]:
    """The requirements of attack ``component`` with ``params`` (its defaults where a parameter is missing).

    Raises
    ------
    TypeError
        When the ``requires`` tag returns something other than :class:`Requirement` objects, or two of one type.
    """
    requires = component.tags.get("requires")  # a hook: called here, at the parameters, never resolved
    if requires is None:
        return DEFAULT_REQUIREMENTS
    out = tuple(requires({**{p.name: p.default for p in component.params}, **(params or {})}))
    kinds = [type(r) for r in out]
    if not all(isinstance(r, Requirement) for r in out) or len(set(kinds)) != len(kinds):
        raise TypeError(
            f"attack {component.name!r}: its requires tag returned {out!r}; return a tuple of "
            "attacks.requirements.Requirement objects, at most one of each type"
        )
    return out


def find(requirements: tuple[Requirement, ...], kind: type[R]) -> R | None:
    """The requirement of type ``kind`` among ``requirements``, or None."""
    return next((r for r in requirements if isinstance(r, kind)), None)


def call_params(attack: Callable[..., Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of ``params`` that the attack function takes (the others only select its requirements).

    An attack function with a ``**kwargs`` parameter receives all of them.
    """
    signature = inspect.signature(attack).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values()):
        return dict(params)
    return {k: v for k, v in params.items() if k in signature}
