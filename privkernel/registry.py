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

import math
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from privkernel.errors import BenchError, did_you_mean, short_repr

#: The entry-point group of the packages whose import registers components: privbench's own rooms declare
#: themselves in its ``pyproject.toml``, and a third-party package adds its components the same way.
PLUGIN_GROUP = "privbench.components"

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
            self.validate(self.default, where=f"the default of parameter {self.name!r}")

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
        bad = BenchError(
            f"{where}: parameter {self.name!r} must be of type {self._type_name()}, got {short_repr(value)}"
        )
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
                try:
                    return float(value)
                except OverflowError:  # an int beyond the largest float
                    raise BenchError(
                        f"{where}: {self.name}={value} is out of range; allowed: {self.range_text()}"
                    ) from None
            if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
                try:
                    return float(value)
                except ValueError:
                    raise bad from None
            raise bad
        if isinstance(value, str):
            if not value.isprintable():  # a line break would split a label, and every message naming it, in two
                raise BenchError(f"{where}: parameter {self.name!r} must be one line of printable text, got "
                                 f"{short_repr(value)}; remove its line breaks, tabs and control characters")
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


def _type_text(kind: Any) -> str:
    """``int``, ``int | None``, ``tuple[str, ...]``, ``callable``: a tag type as ``bench list`` shows it."""
    if isinstance(kind, types.UnionType):
        return " | ".join(_type_text(k) for k in typing.get_args(kind))
    if kind is type(None):
        return "None"
    if kind is Callable:
        return "callable"
    if typing.get_origin(kind) is tuple:
        return f"tuple[{_type_text(typing.get_args(kind)[0])}, ...]"
    return kind.__name__


def _matches(value: Any, kind: Any) -> bool:
    """Whether ``value`` is of the tag type ``kind`` (a class, ``X | None``, ``tuple[X, ...]`` or ``Callable``)."""
    if isinstance(kind, types.UnionType):
        return any(_matches(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is Callable:
        return callable(value)
    if typing.get_origin(kind) is tuple:
        return isinstance(value, tuple) and all(_matches(v, typing.get_args(kind)[0]) for v in value)
    if kind in (int, float) and isinstance(value, bool):  # bool is an int subclass: never accept it as a number
        return False
    return isinstance(value, kind)


@dataclass(frozen=True)
class Tag:
    """A typed fact that a component declares at registration and the harness reads (e.g. an attack's ``tasks``).

    Parameters
    ----------
    name
        Keyword of :meth:`Registry.register`.
    type
        ``str``, ``int``, ``bool``, ``X | None``, ``tuple[str, ...]`` or ``Callable`` (a hook the harness calls).
    default
        Value of a component that does not set the tag. A tag name has one default in every family.
    help
        One-line description, shown by ``python -m bench list``.
    choices
        Allowed values of a string tag, or of every item of a tuple tag; None: any.

    Notes
    -----
    A tag that is not a hook may also be given as a function of the component's parameters (the task of a CSV
    dataset is its ``task`` parameter): the function's result is type-checked when the tag is resolved
    (:meth:`Component.tag`), a constant value at registration.
    """

    name: str
    type: Any
    default: Any
    help: str
    choices: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        problem = self.problem(self.default)
        if problem:
            raise TypeError(f"tag {self.name!r}: its default {problem}")

    @property
    def is_hook(self) -> bool:
        """Whether the tag's value is a function the harness calls (never resolved at the parameters)."""
        return self.type is Callable or (
            isinstance(self.type, types.UnionType) and Callable in typing.get_args(self.type)
        )

    def type_text(self) -> str:
        """The type as ``bench list`` shows it, with the choices: ``tuple[str, ...] of {'a', 'b'}``."""
        text = _type_text(self.type)
        if self.choices is not None:
            text += " of {" + ", ".join(repr(c) for c in self.choices) + "}"
        return text

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not a valid value of this tag, or None."""
        if not _matches(value, self.type):
            return f"{value!r} is not of type {_type_text(self.type)}"
        if self.choices is not None and value is not None and not callable(value):
            for item in value if isinstance(value, tuple) else (value,):
                if item not in self.choices:
                    return f"{item!r} is not one of {self.type_text().split(' of ', 1)[1]}" + did_you_mean(
                        str(item), self.choices
                    )
        return None

    def coerce(self, value: Any) -> Any:
        """``value`` with a list turned into the tuple that a tuple tag holds."""
        if isinstance(value, list) and "tuple" in _type_text(self.type):
            return tuple(value)
        return value

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type_text(), "default": self.default, "help": self.help}


TASK_KINDS = ("classification", "regression")

#: Every tag a family may declare, by name: one type and one default per name, whatever the family.
TAGS: dict[str, Tag] = {t.name: t for t in (
    Tag("task", str, "classification", "the dataset's task", choices=TASK_KINDS),
    Tag("inputs", str, "vector", "the kind of inputs the dataset gives: vector, image, volume or graph"),
    Tag("n_classes", int | None, None, "number of classes (1 for regression); None: not known before loading"),
    Tag("size", int | None, None, "number of records, where it is fixed"),
    Tag("files", tuple[str, ...], (), "parameters that name input files, whose contents enter the cache keys"),
    Tag("layout", int, 1, "version of the arrays the dataset gives (e.g. its featurizer's); from 2 on it enters the "
        "features' cache key, so that a change of layout is computed anew"),
    Tag("accepts", tuple[str, ...], ("vector",), "input kinds the architecture builds a model for"),
    Tag("tasks", tuple[str, ...], TASK_KINDS, "tasks the component applies to", choices=TASK_KINDS),
    Tag("perturbs", tuple[str, ...] | None, None,
        "input kinds whose records the attack perturbs to query the target; None: it perturbs none"),
    Tag("requires", Callable | None, None,
        "requires(params) -> the typed requirements (attacks.requirements) that the harness serves the attack; "
        "None: the released probabilities"),
    Tag("access", str, "black-box", "what the attacker sees of the models",
        choices=("black-box", "white-box", "insider")),
    Tag("knowledge", str, "references", "what the attacker knows: reference models, or leaked members",
        choices=("references", "leaked")),
    Tag("check", Callable | None, None,
        "check(params, *, task, n_classes) -> why these parameters cannot work on a dataset of that task and "
        "number of classes, or None; called when a grid is loaded, before anything runs"),
)}

#: The tags of each family; ``check`` belongs to all of them (the one way to refuse parameters at grid load).
FAMILY_TAGS: dict[str, tuple[str, ...]] = {
    "datasets": ("task", "inputs", "n_classes", "size", "files", "layout", "check"),
    "architectures": ("accepts", "check"),
    "defenses": ("tasks", "check"),
    "attacks": ("tasks", "perturbs", "requires", "access", "knowledge", "check"),
}


class RegistrationError(BenchError, TypeError):
    """A component registered with a tag its family does not declare, or a tag value of the wrong type."""


_UNSET: Any = object()


@dataclass(frozen=True)
class Component:
    """A registered dataset, architecture, defense or attack.

    ``tags`` holds the tags given at registration; :meth:`tag` reads any declared tag, its default filled in.
    """

    family: str
    name: str
    obj: Any
    description: str
    params: tuple[Param, ...]
    version: int = 1
    tags: Mapping[str, Any] = field(default_factory=dict)
    declared: Mapping[str, Tag] = field(default_factory=dict, compare=False, repr=False)

    def validate(self, given: Mapping[str, Any] | None, where: str | None = None) -> dict[str, Any]:
        return validate_params(self.params, given, where or f"{self.family[:-1]} {self.name!r}")

    def defaults(self) -> dict[str, Any]:
        """Every parameter at its default."""
        return {p.name: p.default for p in self.params}

    def tag(self, key: str, params: Mapping[str, Any] | None = None, default: Any = _UNSET) -> Any:
        """The tag ``key``, resolved at ``params`` (the defaults where a parameter is missing) when it is a
        function of the parameters; its declared default when the component does not set it.

        Parameters
        ----------
        key
            A tag of the component's family.
        params
            Parameter values the tag is resolved at.
        default
            Accepted for older callers only: it must equal the declared default (a tag has one default).

        Raises
        ------
        KeyError
            When the family declares no tag ``key``.
        ValueError
            When ``default`` differs from the declared default.
        TypeError
            When a function of the parameters returns a value of the wrong type.
        """
        declared = self._declared(key)
        if default is not _UNSET and default != declared.default:
            raise ValueError(
                f"tag {key!r} has one default, {declared.default!r} (declared in privkernel.registry.TAGS); "
                f"do not pass another ({default!r})"
            )
        value = self.tags.get(key, declared.default)
        if callable(value) and not declared.is_hook:
            value = declared.coerce(value({**self.defaults(), **(params or {})}))
            problem = declared.problem(value)
            if problem:
                raise TypeError(f"{self.family[:-1]} {self.name!r}: tag {key!r} at {dict(params or {})}: {problem}")
        return value

    def check(self, params: Mapping[str, Any], *, task: str | None = None, n_classes: int | None = None) -> str | None:
        """Why ``params`` cannot work on a dataset of this task and number of classes, or None: the ``check``
        tag, the one place a component refuses parameters when a grid is loaded.

        For a dataset, ``task`` and ``n_classes`` default to its own tags at ``params``.
        """
        hook = self.tag("check")
        if hook is None:
            return None
        if self.family == "datasets":
            task = self.tag("task", params) if task is None else task
            n_classes = self.tag("n_classes", params) if n_classes is None else n_classes
        problem = hook(dict(params), task=task, n_classes=n_classes)
        if problem is not None and not isinstance(problem, str):
            raise TypeError(f"{self.family[:-1]} {self.name!r}: its check returned {problem!r}, not a str or None")
        return problem

    def _declared(self, key: str) -> Tag:
        try:
            return self.declared[key]
        except KeyError:
            raise KeyError(
                f"{self.family} declare no tag {key!r}{did_you_mean(key, self.declared)}; their tags are: "
                f"{', '.join(self.declared) or 'none'}"
            ) from None

    def describe(self) -> dict[str, Any]:
        """Name, description, parameters and every declared tag with its type; a tag that depends on the
        parameters is shown at the defaults, a hook by its function's name."""
        tags = []
        for key, declared in self.declared.items():
            value = self.tags.get(key, declared.default)
            entry = {"name": key, "type": declared.type_text(), "set": key in self.tags,
                     "per_params": callable(value) and not declared.is_hook}
            if declared.is_hook:
                entry["value"] = None if value is None else getattr(value, "__qualname__", repr(value))
            else:
                entry["value"] = self.tag(key)
            tags.append(entry)
        return {
            "family": self.family,
            "name": self.name,
            "description": self.description,
            "params": [p.describe() for p in self.params],
            "version": self.version,
            "tags": tags,
        }


def _origin(obj: Any) -> str:
    """Where a registered object was defined, for messages: ``module.qualname``."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


class Registry:
    """Components of one family, looked up by name.

    Parameters
    ----------
    family
        Plural name (``"attacks"``).
    tags
        The tags its components may set: names of :data:`TAGS`, or new :class:`Tag` objects (added to
        :data:`TAGS`, so that a name keeps one type and default across families). None: the family's entry of
        :data:`FAMILY_TAGS`, or only ``check`` for a new family.
    """

    def __init__(self, family: str, tags: Iterable[str | Tag] | None = None) -> None:
        self.family = family
        self._components: dict[str, Component] = {}
        self.tags: dict[str, Tag] = {}
        for entry in FAMILY_TAGS.get(family, ("check",)) if tags is None else tags:
            if isinstance(entry, Tag):
                if entry.name in TAGS and TAGS[entry.name] != entry:
                    raise TypeError(
                        f"{family}: tag {entry.name!r} is already declared as {TAGS[entry.name]}; a tag name has "
                        "one type and one default in every family: reuse it by name or pick another name"
                    )
                TAGS[entry.name] = entry
            elif entry not in TAGS:
                raise KeyError(f"{family}: no tag {entry!r} is declared{did_you_mean(entry, TAGS)}")
            name = entry.name if isinstance(entry, Tag) else entry
            self.tags[name] = TAGS[name]

    def register(
        self, name: str, *, description: str, params: Iterable[Param] = (), version: int = 1, replace: bool = False,
        **tags: Any,
    ) -> Callable[[Any], Any]:
        """Decorator registering a function or class under ``name``.

        ``version`` enters the cache keys of everything the component produces: bump it when a change to
        the component's code changes its output. ``tags`` are the facts that the harness reads (for example
        ``tasks=("classification",)``): each must be declared by the family (:attr:`tags`) and of its type; a
        tag that is not a hook may be a function of the parameters instead. ``replace`` lets the name be
        registered again (inside :meth:`temporarily`, e.g. to bump a version in a test).

        Raises
        ------
        RegistrationError
            For an unknown tag or a value of the wrong type.
        ValueError
            For a name registered twice or duplicate parameter names.
        """
        params = tuple(params)
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.family} {name!r}: duplicate parameter names {names}")
        where = f"{self.family[:-1]} {name!r}"
        checked = {}
        for key, value in tags.items():
            if key not in self.tags:
                raise RegistrationError(
                    f"{where}: unknown tag {key!r}{did_you_mean(key, self.tags)}; the tags of {self.family} are: "
                    f"{', '.join(f'{t.name} ({t.type_text()})' for t in self.tags.values())}"
                )
            declared = self.tags[key]
            value = declared.coerce(value)
            if declared.is_hook or not callable(value):
                problem = declared.problem(value)
                if problem:
                    raise RegistrationError(f"{where}: tag {key!r}: {problem}")
            checked[key] = value

        def decorator(obj: Any) -> Any:
            taken = self._components.get(name)
            if taken is not None and taken.obj is not obj and not replace:
                raise ValueError(f"{self.family}: {name!r} is already registered by {_origin(taken.obj)}; "
                                 "register it under another name")
            self._components[name] = Component(
                self.family, name, obj, description, params, version, checked, dict(self.tags)
            )
            return obj

        return decorator

    @contextmanager
    def temporarily(self) -> Iterator[Registry]:
        """Undo, on exit, every registration made inside the block (for tests)::

            with DATASETS.temporarily():
                DATASETS.register("coin_flips", description="test")(load)
                ...

        The installed components are loaded first, so that none is lost.
        """
        load_plugins()
        saved = dict(self._components)
        try:
            yield self
        finally:
            self._components.clear()
            self._components.update(saved)

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
ENGINES = Registry("engines")

REGISTRIES: dict[str, Registry] = {r.family: r for r in (DATASETS, ARCHITECTURES, DEFENSES, ATTACKS, ENGINES)}

@dataclass(frozen=True)
class PluginProblem:
    """A component package whose entry point could not be loaded; its registrations were undone."""

    distribution: str
    entry_point: str
    problem: str

    def line(self) -> str:
        return (f"plugin {self.distribution!r} (entry point {self.entry_point}): {self.problem}; fix the package or "
                f"uninstall it (pip uninstall {self.distribution})")


_loaded = False
_problems: list[PluginProblem] = []


def _entry_point_text(point: EntryPoint) -> str:
    return f"{point.group}: {point.name} = {point.value}"


def _own_first(point: EntryPoint) -> tuple[bool, str, str]:
    """privbench's own rooms load first, so that a plugin reusing one of their names is the one refused."""
    dist = point.dist.name if point.dist is not None else ""
    return (dist != "privbench", dist, point.name)


def load_plugins() -> None:
    """Import, once, every module named by an entry point of the :data:`PLUGIN_GROUP` group.

    A plugin that fails to import, registers a name already taken or declares an invalid parameter is set aside:
    its registrations are undone, the other packages load, and the problem is kept for
    :func:`plugin_problems` (the command line prints it and exits 2).

    Raises
    ------
    BenchError
        When no package declares the group: privbench itself is not installed (``pip install -e .``).
    """
    global _loaded
    if _loaded:
        return
    # the same entry point may be seen twice (an editable install next to a wheel of the same project)
    found = {(p.name, p.value): p for p in entry_points(group=PLUGIN_GROUP)}
    if not found:
        raise BenchError(
            f"no component packages found (entry points {PLUGIN_GROUP!r}): install privbench, e.g. `pip install -e .` "
            "in its checkout"
        )
    _loaded = True
    for point in sorted(found.values(), key=_own_first):
        saved = {family: dict(registry._components) for family, registry in REGISTRIES.items()}
        try:
            point.load()
        except Exception as exc:  # any failure of a third-party package is reported, not raised
            for family, registry in REGISTRIES.items():
                registry._components.clear()
                registry._components.update(saved[family])
            problem = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            dist = point.dist.name if point.dist is not None else point.value.split(".")[0]
            _problems.append(PluginProblem(dist, _entry_point_text(point), problem))


def plugin_problems() -> list[PluginProblem]:
    """The plugins that :func:`load_plugins` set aside, with what was wrong with each."""
    load_plugins()
    return list(_problems)
