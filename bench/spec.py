"""The specification of one grid cell: its components, training and protocol settings, and its key; and the
protocol's options (:data:`PROTOCOL_PARAMS`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from privkernel.errors import BenchError
from privkernel.hashing import stable_hash
from privkernel.registry import ENGINES, Param, Registry

#: The options of a grid's ``protocol:``, the audit's design (``python -m bench list protocol``).
PROTOCOL_PARAMS = (
    Param("n_models", int, 16, "models trained per cell (M) on one pool, each record a member of half of them "
          "(Carlini et al. 2022); a target's reference models are the other M - 1", low=2, high=4096),
    Param("n_targets", int, 4, "how many of the M models are audited as the target (models 0 to n_targets - 1), "
          "one store row each per attack", low=1, high=4096),
    Param("test_fraction", float, 0.3, "share of the dataset held out of the pool as a test set: it measures "
          "utility only and is never audited", low=0.0, high=1.0, low_inclusive=False, high_inclusive=False),
    Param("calibration_models", int, 2, "reference models whose scores choose each attack's balanced-accuracy "
          "threshold (at most n_models - 1)", low=1, high=4096),
)


@dataclass(frozen=True)
class ComponentSpec:
    """A component name with its fully resolved parameters (defaults filled in).

    ``defaults`` (the registered defaults) only shortens :meth:`label`; it takes no part in keys or equality.
    """

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    defaults: tuple[tuple[str, Any], ...] = field(default=(), compare=False)

    @classmethod
    def make(
        cls, name: str, params: Mapping[str, Any] | None = None, defaults: Mapping[str, Any] | None = None
    ) -> ComponentSpec:
        return cls(name, tuple(sorted((params or {}).items())), tuple(sorted((defaults or {}).items())))

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params)}

    def label(self) -> str:
        """``name``, or ``name(a=1,b=2)`` with the parameters that differ from their defaults."""
        defaults = dict(self.defaults)
        shown = [f"{k}={v}" for k, v in self.params if v is not None and (k not in defaults or defaults[k] != v)]
        return f"{self.name}({','.join(shown)})" if shown else self.name


def parse_label(label: str, registry: Registry) -> ComponentSpec:
    """The component of a label as :meth:`ComponentSpec.label` prints it, ``name`` or ``name(a=1,b=x)``; each value
    is read as YAML (``0.5``, ``true``, ``global``) and checked against the component's parameters.

    Raises
    ------
    BenchError
        For a malformed label, an unknown component or parameter, or a bad value.
    """
    import yaml

    label = label.strip()
    name, _, rest = label.partition("(")
    name = name.strip()
    params: dict[str, Any] = {}
    if rest:
        if not rest.endswith(")"):
            raise BenchError(f"{label!r}: a label with parameters is name(key=value,...), closed by ')'")
        for item in filter(None, (part.strip() for part in rest[:-1].split(","))):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise BenchError(f"{label!r}: {item!r} is not key=value")
            try:
                params[key.strip()] = yaml.safe_load(value.strip())
            except yaml.YAMLError:
                raise BenchError(f"{label!r}: the value of {key.strip()!r} is not a number, word or true/false; "
                                 "write it as in a grid file, e.g. a=0.5 or mode=offline") from None
    component = registry.get(name)
    return ComponentSpec.make(name, component.validate(params), component.validate({}))


@dataclass(frozen=True)
class Union:
    """The union of the members flagged by several attacks of a cell, each thresholded at ``max_fpr``."""

    attacks: tuple[str, ...]
    max_fpr: float

    def label(self) -> str:
        return f"union({'+'.join(self.attacks)})@fpr={self.max_fpr:g}"


@dataclass(frozen=True)
class Cell:
    """One point of a grid: the data, the model family, the defense, the training and the audit protocol.

    The ``n_models`` models of a cell share everything but their training subsets (the membership matrix)
    and their random initialisation; each in turn serves as the target with the others as references.
    """

    dataset: ComponentSpec
    architecture: ComponentSpec
    defense: ComponentSpec
    attacks: tuple[ComponentSpec, ...]
    training: tuple[tuple[str, Any], ...]
    protocol: tuple[tuple[str, Any], ...]
    seed: int
    unions: tuple[Union, ...] = ()

    @property
    def training_params(self) -> dict[str, Any]:
        return dict(self.training)

    @property
    def protocol_params(self) -> dict[str, Any]:
        return dict(self.protocol)

    def models_spec(self) -> dict[str, Any]:
        """Everything that decides the trained models (not the attacks)."""
        return {
            "dataset": self.dataset.as_dict(),
            "architecture": self.architecture.as_dict(),
            "defense": self.defense.as_dict(),
            "training": dict(self.training),
            "protocol": dict(self.protocol),
            "seed": self.seed,
        }

    @property
    def key(self) -> str:
        """Identity of the cell in the results store (the attacks are rows within it)."""
        return stable_hash(self.models_spec())[:16]

    @property
    def label(self) -> str:
        """``dataset / architecture / defense / seed=N``, with the training engine before the seed when it is not
        the default, e.g. ``... / none / federated(sites=4,rounds=10) / seed=0``."""
        engine = self.engine_label()
        return (f"{self.dataset.label()} / {self.architecture.label()} / {self.defense.label()} / "
                + (f"{engine} / " if engine else "") + f"seed={self.seed}")

    def engine_label(self) -> str:
        """The training engine and the settings only it reads that differ from their defaults, as a label; ``""``
        for the default engine."""
        engine = self.training_params.get("engine", "ensemble")
        if engine == "ensemble":
            return ""
        shown = [f"{p.name}={self.training_params[p.name]}" for p in ENGINES.get(engine).params
                 if p.name in self.training_params and self.training_params[p.name] != p.default]
        return f"{engine}({','.join(shown)})" if shown else engine

    def columns(self) -> dict[str, Any]:
        """The cell's parameters as flat store columns (``dataset``, ``dataset.<param>``, ...)."""
        cols: dict[str, Any] = {"cell_key": self.key}
        for family, spec in (("dataset", self.dataset), ("architecture", self.architecture), ("defense", self.defense)):
            cols[family] = spec.name
            cols.update({f"{family}.{k}": v for k, v in spec.params})
        cols.update({f"training.{k}": v for k, v in self.training})
        cols.update(dict(self.protocol))
        cols["seed"] = self.seed
        return cols
