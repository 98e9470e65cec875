"""One registry per component family, with typed parameters validated before anything runs.

A component registers itself under a name::

    from privkernel.registry import ATTACKS, Param

    @ATTACKS.register(
        "loss",
        description="Negative loss of the target on each point (Yeom et al. 2018).",
        params=[Param("temperature", float, 1.0, "softmax temperature", low=0.0, low_inclusive=False)],
    )
    def loss_attack(view, temperature):
        ...

and is then found by name in grid files, ``python -m bench list`` and the cache keys.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from privkernel.errors import BenchError, did_you_mean

#: The entry-point group of the packages whose import registers components: privbench's own rooms declare
#: themselves in its ``pyproject.toml``, and a third-party package adds its components the same way.
PLUGIN_GROUP = "privbench.plugins"

_TYPE_NAMES = {int: "int", float: "float", str: "str", bool: "bool"}


@dataclass(frozen=True)
class Param:
    """A typed parameter of a component, with its default and allowed values.

    Parameters
    ----------
    name
        Parameter name as written in grid files.
    type
        One of ``int``, ``float``, ``str``, ``bool``.
    default
        Value used when the grid does not set it; ``None`` means the parameter is optional and unset.
    help
        One-line description.
    low, high
        Inclusive bounds (unless ``low_inclusive``/``high_inclusive`` is false) for numbers.
    choices
        Allowed values, for strings.
    """

    name: str
    type: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def __post_init__(self) -> None:
        if self.type not in _TYPE_NAMES:
            raise TypeError(f"parameter {self.name!r}: unsupported type {self.type!r}")
        if self.default is not None:
            self.validate(self.default, where="default")

    def range_text(self) -> str:
        """Human-readable description of the allowed values, e.g. ``[0, 1)`` or ``{'adam', 'sgd'}``."""
        if self.choices is not None:
            return "{" + ", ".join(repr(c) for c in self.choices) + "}"
        if self.low is None and self.high is None:
            return "any"
        left = ("[" if self.low_inclusive else "(") + ("-inf" if self.low is None else f"{self.low:g}")
        right = ("inf" if self.high is None else f"{self.high:g}") + ("]" if self.high_inclusive else ")")
        return f"{left}, {right}"

    def validate(self, value: Any, where: str) -> Any:
        """Return ``value`` converted to the parameter's type, or raise :class:`BenchError`."""
        if value is None:
            if self.default is None:
                return None
            raise BenchError(
                f"{where}: parameter {self.name!r} may not be null; give a value of type {self._type_name()}"
            )
        value = self._coerce(value, where)
        if self.choices is not None and value not in self.choices:
            raise BenchError(
                f"{where}: {self.name}={value!r} is not one of {self.range_text()}"
                + did_you_mean(str(value), [str(c) for c in self.choices])
            )
        if self.type in (int, float):
            if isinstance(value, float) and not math.isfinite(value):
                raise BenchError(f"{where}: {self.name}={value!r} must be a finite number")
            too_low = self.low is not None and (value < self.low if self.low_inclusive else value <= self.low)
            too_high = self.high is not None and (value > self.high if self.high_inclusive else value >= self.high)
            if too_low or too_high:
                raise BenchError(f"{where}: {self.name}={value!r} is out of range; allowed: {self.range_text()}")
        return value

    def _type_name(self) -> str:
        return _TYPE_NAMES[self.type]

    def _coerce(self, value: Any, where: str) -> Any:
        bad = BenchError(f"{where}: parameter {self.name!r} must be of type {self._type_name()}, got {value!r}")
        if self.type is bool:
            if isinstance(value, bool):
                return value
            raise bad
        if isinstance(value, bool):  # bool is an int subclass: never accept it as a number
            raise bad
        if self.type is int:
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise bad
        if self.type is float:
            if isinstance(value, (int, float)):
                return float(value)
            if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
                try:
                    return float(value)
                except ValueError:
                    raise bad from None
            raise bad
        if isinstance(value, str):
            return value
        raise bad

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self._type_name(),
            "default": self.default,
            "allowed": self.range_text(),
            "help": self.help,
        }


def validate_params(params: Sequence[Param], given: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """Check ``given`` against ``params`` and return every parameter's value, defaults filled in."""
    given = dict(given or {})
    known = {p.name: p for p in params}
    for name in given:
        if name not in known:
            allowed = ", ".join(known) or "none"
            raise BenchError(
                f"{where}: unknown parameter {name!r}{did_you_mean(name, known)}; its parameters are: {allowed}"
            )
    return {p.name: p.validate(given[p.name], where) if p.name in given else p.default for p in params}


@dataclass(frozen=True)
class Component:
    """A registered dataset, architecture, defense or attack."""

    family: str
    name: str
    obj: Any
    description: str
    params: tuple[Param, ...]
    version: int = 1
    tags: Mapping[str, Any] = field(default_factory=dict)

    def validate(self, given: Mapping[str, Any] | None, where: str | None = None) -> dict[str, Any]:
        return validate_params(self.params, given, where or f"{self.family[:-1]} {self.name!r}")

    def tag(self, key: str, params: Mapping[str, Any] | None = None, default: Any = None) -> Any:
        """The tag ``key``, resolved at ``params`` (the defaults if None) when it depends on the parameters."""
        value = self.tags.get(key, default)
        if callable(value) and key != "check":
            value = value({**{p.name: p.default for p in self.params}, **(params or {})})
        return value

    def describe(self) -> dict[str, Any]:
        """Name, description, parameters and tags; a tag that depends on the parameters is shown at the defaults."""
        defaults = {p.name: p.default for p in self.params}
        tags = {}
        for key, value in self.tags.items():
            if key == "check":
                continue
            if callable(value):
                key, value = f"{key} (at defaults)", value(defaults)
            if isinstance(value, (str, int, float, bool, list, tuple)):
                tags[key] = value
        return {
            "family": self.family,
            "name": self.name,
            "description": self.description,
            "params": [p.describe() for p in self.params],
            "version": self.version,
            **tags,
        }


class Registry:
    """Components of one family, looked up by name."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._components: dict[str, Component] = {}

    def register(
        self, name: str, *, description: str, params: Iterable[Param] = (), version: int = 1, **tags: Any
    ) -> Callable[[Any], Any]:
        """Decorator registering a function or class under ``name``.

        ``version`` enters the cache keys of everything the component produces: bump it when a change to
        the component's code changes its output. ``tags`` are free-form facts that the harness may read
        (for example ``task="classification"``).
        """
        params = tuple(params)
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.family} {name!r}: duplicate parameter names {names}")

        def decorator(obj: Any) -> Any:
            if name in self._components and self._components[name].obj is not obj:
                raise ValueError(f"{self.family}: {name!r} is registered twice")
            self._components[name] = Component(self.family, name, obj, description, params, version, dict(tags))
            return obj

        return decorator

    def get(self, name: str) -> Component:
        load_plugins()
        try:
            return self._components[name]
        except KeyError:
            known = sorted(self._components)
            raise BenchError(
                f"unknown {self.family[:-1]} {name!r}{did_you_mean(name, known)}; "
                f"known {self.family}: {', '.join(known)} (see `python -m bench list {self.family}`)"
            ) from None

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._components)

    def __contains__(self, name: str) -> bool:
        load_plugins()
        return name in self._components


DATASETS = Registry("datasets")
ARCHITECTURES = Registry("architectures")
DEFENSES = Registry("defenses")
ATTACKS = Registry("attacks")

REGISTRIES: dict[str, Registry] = {r.family: r for r in (DATASETS, ARCHITECTURES, DEFENSES, ATTACKS)}

_loaded = False


def load_plugins() -> None:
    """Import, once, every module named by an entry point of the :data:`PLUGIN_GROUP` group.

    Raises
    ------
    BenchError
        When no package declares the group: privbench itself is not installed (``pip install -e .``).
    """
    global _loaded
    if _loaded:
        return
    found = entry_points(group=PLUGIN_GROUP)
    if not found:
        raise BenchError(
            f"no component packages found (entry points {PLUGIN_GROUP!r}): install privbench, e.g. `pip install -e .` "
            "in its checkout"
        )
    _loaded = True
    for point in sorted(found, key=lambda p: p.name):
        importlib.import_module(point.value)
