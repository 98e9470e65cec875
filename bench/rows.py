"""The rows of the results store: how the typed results of one cell become its columns.

The pipeline (:mod:`bench.pipeline`) runs the stages and hands over typed results — one :class:`TargetResult`
per attack × target, one :class:`UnionResult` per union × target, one :class:`AuditedRecords` per audited
target; this module turns them into the store's rows and samples (:mod:`bench.store`). Columns fall into
namespaces that no reader has to guess at:

- identity: ``cell_key``, ``dataset``, ``dataset.<param>``, ``architecture``, ``architecture.<param>``,
  ``defense``, ``defense.<param>``, ``training.<param>`` (``training.engine`` included), the protocol parameters
  (``n_models``, ``n_targets``, ``test_fraction``, ``calibration_models``), ``seed``; per row ``attack``,
  ``attack.<param>``, ``attack_key``, ``target`` and the threat (``access``, ``knowledge``);
- display labels, written once and never parsed back: ``cell`` (the cell's label) and ``label.dataset``,
  ``label.architecture``, ``label.defense`` (a component's name with the parameters that differ from their
  defaults, e.g. ``dpsgd(epsilon=1.0)``);
- facts that a component reports, prefixed by who reported them: ``fact.<name>`` for the training (e.g. the ε
  that DP-SGD's accountant reached, ``fact.epsilon``, beside the ε asked for, ``defense.epsilon``) and
  ``attack_fact.<name>`` for an attack's diagnostics (e.g. ``attack_fact.lira_k_in``);
- metrics: the utility of the target model (``test_accuracy``, ...) and the attack's metrics (``auc``, ...),
  unprefixed;
- provenance, never part of a result's identity: ``version.<family>`` (the code version of each component,
  ``version.attack`` the row's attack's) and ``run.<field>`` (the run that last wrote the row: ``run.id``,
  ``run.time``, ``run.grid``, ``run.grid_path``, ``run.privbench``; see :class:`bench.store.RunRecord`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bench.spec import Cell, ComponentSpec, Union
from privkernel.registry import ARCHITECTURES, ATTACKS, DATASETS, DEFENSES

#: Prefix of the facts the training of a cell reports (its defense or engine).
FACT = "fact."
#: Prefix of the diagnostics an attack reports beside its scores.
ATTACK_FACT = "attack_fact."
#: Prefix of the display labels of a cell's components.
LABEL = "label."
#: The component families whose labels the store carries (``label.<family>``).
LABELLED = ("dataset", "architecture", "defense")
#: The ``attack`` value of a union's rows.
UNION = "union"
#: Prefix of the columns naming the run that wrote a row (they differ between two runs of the same code).
RUN = "run."
#: Prefix of the code versions of a row's components.
VERSION = "version."


@dataclass(frozen=True)
class TargetResult:
    """What one attack measured on one target model of a cell.

    Parameters
    ----------
    attack
        The attack and its resolved parameters.
    target
        Index of the target model.
    access, knowledge
        The attacker's threat class (e.g. ``black-box`` with ``references``).
    utility
        The target model's utility (``test_accuracy``, ...); empty when the attack was skipped.
    facts
        Scalars the training of the cell reported (e.g. the accountant's ``epsilon``).
    metrics
        The attack's metrics on the target (``auc``, ``tpr_at_fpr_0.1pct``, ...).
    attack_facts
        Diagnostics the attack reported (e.g. how many reference models it found).
    skipped
        Why the attack could not run on this cell, or None when it ran.
    """

    attack: ComponentSpec
    target: int
    access: str
    knowledge: str
    utility: Mapping[str, float] = field(default_factory=dict)
    facts: Mapping[str, float] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    attack_facts: Mapping[str, float] = field(default_factory=dict)
    skipped: str | None = None


@dataclass(frozen=True)
class StageTime:
    """One stage of one cell (or the whole cell, ``"cell"``): the seconds of its own work (the stages it read not
    included), and how many of its entries were computed and how many read from the cache. The store keeps them in
    its ``stage_times`` table (:func:`bench.store.read_stage_times`)."""

    seconds: float
    computed: int
    read: int


@dataclass(frozen=True)
class UnionResult:
    """The members flagged by a union of attacks on one target model, and the target's utility."""

    union: Union
    target: int
    utility: Mapping[str, float]
    metrics: Mapping[str, Any]


@dataclass(frozen=True)
class AuditedRecords:
    """Per audited record of one target under one attack: its index in the dataset, label, membership and score.

    ``evaluated`` marks the records the attack was scored on (records leaked to the attacker are not).
    """

    attack: ComponentSpec
    target: int
    records: np.ndarray
    labels: np.ndarray
    member: np.ndarray
    scores: np.ndarray
    evaluated: np.ndarray


#: The registry of each labelled family, for the code versions of a cell's components.
_REGISTRIES = {"dataset": DATASETS, "architecture": ARCHITECTURES, "defense": DEFENSES}


def cell_columns(cell: Cell) -> dict[str, Any]:
    """The identity columns of a cell (:meth:`bench.spec.Cell.columns`), its display labels and the code versions
    of its components."""
    return {
        **cell.columns(),
        "cell": cell.label,
        **{f"{LABEL}{family}": getattr(cell, family).label() for family in LABELLED},
        **{f"{VERSION}{family}": _REGISTRIES[family].get(getattr(cell, family).name).version for family in LABELLED},
    }


def attack_row(cell: Cell, result: TargetResult) -> dict[str, Any]:
    """The store row of one attack on one target."""
    attack = result.attack
    row: dict[str, Any] = {
        **cell_columns(cell), "attack": attack.name, "access": result.access, "knowledge": result.knowledge,
        **{f"attack.{k}": v for k, v in attack.params},
        "attack_key": attack.label(), "target": result.target, f"{VERSION}attack": ATTACKS.get(attack.name).version,
    }
    if result.skipped:
        return {**row, "skipped": result.skipped}
    return {
        **row, **result.utility, **{f"{FACT}{k}": v for k, v in result.facts.items()}, **result.metrics,
        **{f"{ATTACK_FACT}{k}": v for k, v in result.attack_facts.items()},
    }


def union_row(cell: Cell, result: UnionResult) -> dict[str, Any]:
    """The store row of one union of attacks on one target."""
    return {
        **cell_columns(cell), "attack": UNION, "attack_key": result.union.label(), "target": result.target,
        **result.utility, **result.metrics,
    }


def cell_rows(cell: Cell, results: Iterable[TargetResult], unions: Iterable[UnionResult]) -> list[dict[str, Any]]:
    """Every store row of a cell: its attacks' rows, then its unions'."""
    return [attack_row(cell, r) for r in results] + [union_row(cell, u) for u in unions]


def samples_table(cell: Cell, audited: Iterable[AuditedRecords]) -> pd.DataFrame:
    """The ``samples`` rows of a cell (:data:`bench.store.SAMPLE_COLUMNS`): one per evaluated record."""
    frames = [
        pd.DataFrame({
            "cell_key": cell.key, "attack_key": a.attack.label(), "target": a.target, "record": a.records,
            "label": np.asarray(a.labels).astype(np.float64), "member": a.member, "score": a.scores,
        })[np.asarray(a.evaluated, dtype=bool)]
        for a in audited
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
