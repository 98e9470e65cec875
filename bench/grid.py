"""Grid files: YAML that names the axes of a benchmark and expands to cells.

A grid file looks like::

    name: default
    datasets: [breast_cancer]
    architectures:
      - logreg
      - {name: mlp, params: {width: [32, 128]}}   # a list is a sweep: two architectures
    defenses: [none]
    attacks: [loss]
    seeds: [0, 1]
    protocol: {n_models: 16, n_targets: 4}
    training: {epochs: 30, lr: 0.001}
    exclude:
      - {architecture: logreg, seed: 1}

Cells are the Cartesian product of datasets × architectures × defenses × training × protocol × seeds, less the
cells that match an ``exclude`` rule (every key of the rule equal to the cell's value; a list means any of).
Attacks are not an axis of cells: every attack of the grid runs on the same trained models of each cell.
Every component and parameter is validated here, before anything runs. The options of ``training`` are
:func:`targets.training.training_options` (``python -m bench list training``), those of ``protocol``
:data:`bench.spec.PROTOCOL_PARAMS` (``python -m bench list protocol``); a training option of
:data:`targets.training.KEYED_WHEN_SET` (``schedule``, ``warmup``) left at its default is not part of the cell's
training settings, so that it changes no cell key.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from attacks.requirements import RoundSnapshots, find, requirements_of
from bench.spec import PROTOCOL_PARAMS, Cell, ComponentSpec, Union
from privkernel.errors import BenchError, did_you_mean, short_repr
from privkernel.hashing import stable_hash
from privkernel.registry import ARCHITECTURES, ATTACKS, DATASETS, DEFENSES, ENGINES, Param, Registry, validate_params
from targets.training import KEYED_WHEN_SET, omit_defaults, training_options

UNION_FPR = Param("fpr", float, 0.0, "false-positive rate of each attack of a union", low=0.0, high=1.0,
                  high_inclusive=False)

TOP_LEVEL_KEYS = (
    "name", "description", "datasets", "architectures", "defenses", "attacks", "unions", "seeds", "training",
    "protocol", "exclude",
)
REQUIRED_KEYS = ("datasets", "architectures", "defenses", "attacks")
AXES = {"datasets": DATASETS, "architectures": ARCHITECTURES, "defenses": DEFENSES, "attacks": ATTACKS}

#: The package folder of the shipped grids (package data, found through importlib.resources after any install).
SHIPPED_GRIDS = "grids"


@dataclass(frozen=True)
class Grid:
    """An expanded grid: its cells in a stable order."""

    name: str
    path: Path
    cells: tuple[Cell, ...]
    n_excluded: int


def shipped_grids() -> dict[str, Traversable]:
    """The grids that ship with privbench, by name (the file's stem)."""
    folder = files("bench") / SHIPPED_GRIDS
    entries = [entry for entry in folder.iterdir() if entry.name.endswith((".yaml", ".yml"))]
    return {entry.name.rsplit(".", 1)[0]: entry for entry in sorted(entries, key=lambda e: e.name.rsplit(".", 1)[0])}


def available_grids() -> list[str]:
    return sorted(shipped_grids())


def resolve_grid_path(name_or_path: str | os.PathLike[str]) -> Path:
    """The grid file of a path (a user's grid) or of the name of a shipped grid (``default``, ``smoke``, ...)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_grids()
    if len(path.parts) == 1 and path.suffix in ("", ".yaml", ".yml") and path.stem in shipped:
        return Path(str(shipped[path.stem]))  # pip installs packages as files, never zipped
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        raise BenchError(f"no grid file {path}: check the path, or give the name of a shipped grid "
                         f"({', '.join(shipped)})")
    raise BenchError(
        f"no grid {str(name_or_path)!r}{did_you_mean(path.stem, shipped)}: give a YAML file's path or the name of a "
        f"shipped grid: {', '.join(shipped)}"
    )


def load_grid(name_or_path: str) -> Grid:
    """Read, validate and expand a grid file."""
    path = resolve_grid_path(name_or_path)
    return expand_grid(read_grid(path), path)


class _GridLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a value its explicit tag cannot read (``!!int abc``, ``!!bool maybe``,
    ``!!timestamp x``: PyYAML's constructors raise ValueError, KeyError, AttributeError or TypeError) is a YAML error
    at the value's line."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, KeyError, AttributeError):
            tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
            value = f" {node.value!r}" if isinstance(node, yaml.ScalarNode) else ""
            raise yaml.constructor.ConstructorError(
                None, None, f"the tag {tag} cannot read the value{value[:80]}", node.start_mark) from None


def read_grid(path: Path) -> Any:
    """The parsed YAML of a grid file; a file that cannot be read or parsed raises a :class:`BenchError` naming
    where and why."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"grid {path}: cannot read the file ({exc})") from None
    try:
        return yaml.load(text, Loader=_GridLoader)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow; it has a position, not a mark
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        raise BenchError(
            f"grid {path}: malformed YAML at line {line}, column {column}: unacceptable character "
            f"#x{exc.character:04x} ({exc.reason}); remove it, or write it as an escape (\\x..) in a double-quoted "
            "string"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise BenchError(f"grid {path}: malformed YAML{where}: {problem}; fix the file's syntax") from None
    except RecursionError:
        raise BenchError(f"grid {path}: the YAML nests lists or mappings too deeply to read; a grid needs a few "
                         "levels (axis: list of {name, params: {parameter: value or list}})") from None


def expand_grid(raw: Any, path: Path) -> Grid:
    """Validate the parsed content of a grid file and expand it to cells."""
    if raw is None:
        raise BenchError(f"grid {path} is empty; it needs at least: {', '.join(REQUIRED_KEYS)}")
    if not isinstance(raw, Mapping):
        raise BenchError(f"grid {path}: the top level must be a mapping of keys ({', '.join(TOP_LEVEL_KEYS)})")
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise BenchError(
                f"grid {path}: unknown key {key!r}{did_you_mean(str(key), TOP_LEVEL_KEYS)}; "
                f"allowed keys: {', '.join(TOP_LEVEL_KEYS)}"
            )
    for key in REQUIRED_KEYS:
        if not raw.get(key):
            raise BenchError(
                f"grid {path}: {key!r} is missing or empty; list at least one of `python -m bench list {key}`"
            )
    name = raw.get("name") or path.stem
    if isinstance(name, Mapping | list | set | tuple):  # a scalar (2024-06-01, 7) reads as its text
        raise BenchError(f"grid {path}: name must be a string, got {short_repr(name)}; quote it, e.g. name: 'my-grid'")

    where = f"grid {path}"
    axes = {key: _component_axis(raw[key], registry, f"{where}: {key}") for key, registry in AXES.items()}
    training = _engine_settings(_sweep(training_options(), raw.get("training"), f"{where}: training"),
                                f"{where}: training")
    protocol = _sweep(PROTOCOL_PARAMS, raw.get("protocol"), f"{where}: protocol")
    for proto in protocol:
        _check_protocol(proto, where)
    seeds = _seeds(raw.get("seeds", [0]), where)
    unions = _unions(raw.get("unions") or [], axes["attacks"], where)

    cells: list[Cell] = []
    for dataset, arch, defense, train, proto, seed in itertools.product(
        axes["datasets"], axes["architectures"], axes["defenses"], training, protocol, seeds
    ):
        cells.append(
            Cell(dataset, arch, defense, tuple(axes["attacks"]), tuple(sorted(train.items())),
                 tuple(sorted(proto.items())), seed, unions)
        )
    cells = list(dict.fromkeys(cells))
    kept = _apply_excludes(cells, raw.get("exclude") or [], where)
    if not kept:
        raise BenchError(f"{where}: every cell is excluded; loosen the `exclude` rules")
    for cell in kept:
        check_compatible(cell, where)
    check_attack_tasks(kept, where)
    check_federated_attacks(kept, where)
    return Grid(str(name), path, tuple(kept), len(cells) - len(kept))


def dataset_facts(spec: ComponentSpec) -> tuple[str, str, int | None]:
    """The task, input kind and number of classes (None if undeclared) of a dataset with these parameters,
    from its registration tags (a tag may be a function of the parameters)."""
    dataset = DATASETS.get(spec.name)
    return dataset.tag("task", spec.kwargs), dataset.tag("inputs", spec.kwargs), dataset.tag("n_classes", spec.kwargs)


def check_compatible(cell: Cell, where: str) -> None:
    """Refuse, before anything runs, a cell whose architecture or attacks cannot handle its dataset."""
    task, inputs, n_classes = dataset_facts(cell.dataset)
    facts = {"task": task, "n_classes": n_classes}
    problem = DATASETS.get(cell.dataset.name).check(cell.dataset.kwargs, **facts)
    if problem:
        raise BenchError(f"{where}: dataset {cell.dataset.label()}: {problem}")
    defense = DEFENSES.get(cell.defense.name)
    tasks = defense.tag("tasks", cell.defense.kwargs)
    if task not in tasks:
        raise BenchError(
            f"{where}: defense {cell.defense.name!r} applies to {' and '.join(tasks)} only, but dataset "
            f"{cell.dataset.label()} is {task}; remove the defense or the dataset from the grid"
        )
    problem = defense.check(cell.defense.kwargs, **facts)
    if problem:
        raise BenchError(f"{where}: defense {cell.defense.label()} on dataset {cell.dataset.label()}: {problem}")
    architecture = ARCHITECTURES.get(cell.architecture.name)
    overrides = set(defense.obj(**cell.defense.kwargs).architecture_overrides())
    missing = overrides - {p.name for p in architecture.params}
    if missing:
        raise BenchError(
            f"{where}: defense {cell.defense.label()} sets {', '.join(sorted(missing))} of the architecture, which "
            f"{cell.architecture.name!r} does not have; exclude the pair (e.g. {{defense: {cell.defense.name}, "
            f"architecture: {cell.architecture.name}}})"
        )
    problem = architecture.check(cell.architecture.kwargs, **facts)
    if problem:
        raise BenchError(f"{where}: architecture {cell.architecture.label()} on dataset {cell.dataset.label()}: "
                         f"{problem}")
    accepts = architecture.tag("accepts", cell.architecture.kwargs)
    if inputs not in accepts:
        raise BenchError(
            f"{where}: architecture {cell.architecture.name!r} takes {_one_of(accepts)} inputs but dataset "
            f"{cell.dataset.label()} gives {inputs} inputs; exclude the pair or pick another architecture"
        )
    engine = cell.training_params["engine"]
    refusal = ENGINES.get(engine).obj(**engine_params(cell.training_params)).refuses(
        type(defense.obj(**cell.defense.kwargs).hooks()))
    if refusal:
        raise BenchError(
            f"{where}: defense {cell.defense.name!r} cannot train with the {engine} engine: {refusal}; use it with "
            "engine 'ensemble' or 'loop', or pick a defense that shapes the loss, architecture, optimizer or release "
            "(none, l2, dropout, label_smoothing, memguard, ...)"
        )
    for attack in cell.attacks:
        problem = ATTACKS.get(attack.name).check(attack.kwargs, **facts)
        if problem:
            raise BenchError(f"{where}: attack {attack.label()} on dataset {cell.dataset.label()}: {problem}")
        allowed_inputs = ATTACKS.get(attack.name).tag("perturbs", attack.kwargs)
        if allowed_inputs is not None and inputs not in allowed_inputs:
            raise BenchError(
                f"{where}: attack {attack.name!r} queries {_one_of(allowed_inputs)} inputs but dataset "
                f"{cell.dataset.label()} gives {inputs} inputs; remove the attack or the dataset from the grid"
            )



def _one_of(kinds: Sequence[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return kinds[0] if len(kinds) == 1 else f"{', '.join(kinds[:-1])} or {kinds[-1]}"


def check_attack_tasks(cells: Sequence[Cell], where: str) -> None:
    """Refuse an attack that fits the task of no dataset of the grid. In a grid mixing classification and
    regression, an attack runs on the cells whose task it supports and is skipped, with the reason recorded, on
    the others."""
    for attack in cells[0].attacks:
        tasks = ATTACKS.get(attack.name).tag("tasks", attack.kwargs)
        grid_tasks = {dataset_facts(cell.dataset)[0] for cell in cells}
        if not grid_tasks & set(tasks):
            datasets = ", ".join(sorted({cell.dataset.label() for cell in cells}))
            raise BenchError(
                f"{where}: attack {attack.name!r} supports {' and '.join(tasks)} only, but the grid's datasets "
                f"({datasets}) are {' and '.join(sorted(grid_tasks))}; remove the attack or add a fitting dataset"
            )


def check_federated_attacks(cells: Sequence[Cell], where: str) -> None:
    """Refuse an insider attack on federated rounds in a grid without a federated cell (it would be skipped
    everywhere)."""
    federated = [cell for cell in cells if cell.training_params.get("engine") == "federated"]
    for cell in federated:
        for attack in cell.attacks:
            watched, sites = _rounds_required(attack), cell.training_params["sites"]
            if watched is not None and watched.site is not None and watched.site >= sites:
                raise BenchError(
                    f"{where}: attack {attack.label()} watches site {watched.site}, but the federation has {sites} "
                    f"sites (0 to {sites - 1}); lower the attack's site or raise training.sites"
                )
    if federated:
        return
    for attack in cells[0].attacks:
        if _rounds_required(attack) is not None:
            raise BenchError(
                f"{where}: attack {attack.name!r} watches the rounds of federated training, but no cell of the grid "
                "is federated; add `engine: federated` (with sites and rounds) to training, or remove the attack"
            )


def _rounds_required(attack: ComponentSpec) -> RoundSnapshots | None:
    """The federated rounds that ``attack`` requires to watch, or None."""
    return find(requirements_of(ATTACKS.get(attack.name), attack.kwargs), RoundSnapshots)


def _component_axis(entries: Any, registry: Registry, where: str) -> list[ComponentSpec]:
    """Expand one axis (``datasets: [a, {name: b, params: {p: [1, 2]}}]``) to validated specs."""
    if isinstance(entries, (str, Mapping)):
        entries = [entries]
    if not isinstance(entries, list):
        raise BenchError(f"{where}: expected a list of names or {{name: ..., params: ...}} mappings")
    specs: list[ComponentSpec] = []
    for entry in entries:
        if isinstance(entry, str):
            name, params = entry, {}
        elif isinstance(entry, Mapping) and "name" in entry and set(entry) <= {"name", "params"}:
            name, params = entry["name"], entry.get("params") or {}
            if not isinstance(name, str):
                raise BenchError(f"{where}: the name of entry {short_repr(entry)} must be a string: one of "
                                 f"`python -m bench list {registry.family}`")
            if not isinstance(params, Mapping):
                raise BenchError(f"{where}: params of {name!r} must be a mapping of parameter: value")
        else:
            raise BenchError(
                f"{where}: entry {short_repr(entry)} must be a name or a mapping with keys `name` and optional "
                "`params`"
            )
        component = registry.get(name)
        label = f"{where}: {registry.family[:-1]} {name!r}"
        defaults = {p.name: p.default for p in component.params}
        sweep = _sweep(component.params, params, label)
        specs += [ComponentSpec.make(component.name, values, defaults) for values in sweep]
    return list(dict.fromkeys(specs))


def _sweep(params: Iterable[Param], given: Any, where: str) -> list[dict[str, Any]]:
    """Validated parameter dicts for every combination of the list-valued (swept) entries of ``given``."""
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise BenchError(f"{where}: expected a mapping of parameter: value (a list sweeps the values)")
    params = tuple(params)
    names = list(given)
    choices = []
    for name in names:
        value = given[name]
        if isinstance(value, list):
            if not value:
                raise BenchError(f"{where}: the sweep of {name!r} is an empty list; give at least one value")
            choices.append(value)
        else:
            choices.append([value])
    combos = itertools.product(*choices)
    return [validate_params(params, dict(zip(names, combo, strict=True)), where) for combo in combos]


def _unions(entries: Any, attacks: list[ComponentSpec], where: str) -> tuple[Union, ...]:
    """``unions: [{attacks: [lira, rmia], fpr: [0, 0.001]}]`` → validated :class:`Union` specs.

    An attack is named by its label as `bench grid --dry-run` prints it, or by its name when the grid has only
    one setting of that attack.
    """
    example = "unions: [{attacks: [lira, rmia], fpr: 0.0}]"
    if not isinstance(entries, list):
        raise BenchError(f"{where}: unions must be a list such as {example}")
    labels = {a.label(): a.label() for a in attacks}
    by_name: dict[str, list[str]] = {}
    for a in attacks:
        by_name.setdefault(a.name, []).append(a.label())
    labels.update({name: found[0] for name, found in by_name.items() if len(found) == 1})
    out = []
    for entry in entries:
        well_formed = isinstance(entry, Mapping) and set(entry) == {"attacks", "fpr"}
        if not well_formed or not isinstance(entry["attacks"], list):
            raise BenchError(f"{where}: a union needs exactly the keys `attacks` (a list) and `fpr`, as in {example}")
        names = []
        for name in entry["attacks"]:
            if not isinstance(name, str) or name not in labels:
                close = did_you_mean(name, labels) if isinstance(name, str) else ""
                raise BenchError(
                    f"{where}: union attack {short_repr(name)} is not one of the grid's attacks{close}"
                    f" ({', '.join(sorted(labels))}); name a setting by its full label when an attack has several"
                )
            names.append(labels[name])
            spec = next(a for a in attacks if a.label() == labels[name])
            if ATTACKS.get(spec.name).tag("knowledge", spec.kwargs) != "references":
                raise BenchError(
                    f"{where}: union attack {name!r} is a leaked-samples attacker, scored on fewer records than the "
                    "others; unions combine reference-model attacks only"
                )
        if len(set(names)) < 2:
            raise BenchError(
                f"{where}: a union needs at least two different attacks, got {short_repr(entry['attacks'])}"
            )
        fprs = entry["fpr"] if isinstance(entry["fpr"], list) else [entry["fpr"]]
        if not fprs:  # the union would silently not be there
            raise BenchError(f"{where}: the fpr of the union of {', '.join(names)} is an empty list; give at least one "
                             f"value, as in {example}")
        for fpr in fprs:
            value = UNION_FPR.validate(fpr, f"{where}: union")
            out.append(Union(tuple(names), value))
    return tuple(dict.fromkeys(out))


def engine_params(training: dict[str, Any]) -> dict[str, Any]:
    """The settings of a cell's training that its engine alone reads (its registered parameters)."""
    return {p.name: training[p.name] for p in ENGINES.get(training["engine"]).params if p.name in training}


def engine_settings(training: dict[str, Any]) -> dict[str, Any]:
    """A training's settings without those of the engines it does not use (they stay out of the cell's key)."""
    own = {p.name for p in ENGINES.get(training["engine"]).params}
    other = {p.name for name in ENGINES.names() for p in ENGINES.get(name).params} - own
    return {k: v for k, v in training.items() if k not in other}


def _engine_settings(trainings: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Each training's settings for its engine: an engine's settings go to the trainings of a sweep that use it
    (``engine: [ensemble, federated]``) and are refused when no training uses it. The :data:`KEYED_WHEN_SET`
    options at their defaults are left out (:func:`targets.training.omit_defaults`); set away from them, they are
    refused for an engine that does not train by one run of the loop (federated)."""
    used = {train["engine"] for train in trainings}
    for name in ENGINES.names():
        if name in used:
            continue
        stray = sorted({p.name for train in trainings for p in ENGINES.get(name).params if train[p.name] != p.default})
        if stray:
            raise BenchError(
                f"{where}: {', '.join(stray)} apply to the {name} engine only, but no training of the grid uses it; "
                f"add `engine: {name}` or remove them"
            )
    kept = [omit_defaults(engine_settings(train)) for train in trainings]
    for train in kept:
        scheduled = [f"{k}={train[k]!r}" for k in KEYED_WHEN_SET if k in train]
        if scheduled and not ENGINES.get(train["engine"]).obj.runs_one_loop():
            raise BenchError(
                f"{where}: {', '.join(scheduled)} set a learning-rate schedule over one run of the training loop, but "
                f"the {train['engine']} engine runs the loop once per round with a fresh optimizer, so no schedule "
                "spans its training; remove schedule and warmup from this training, or use engine 'ensemble' or 'loop'"
            )
    return list({stable_hash(settings): settings for settings in kept}.values())



def _check_protocol(proto: Mapping[str, Any], where: str) -> None:
    m = proto["n_models"]
    if proto["n_targets"] > m:
        raise BenchError(f"{where}: protocol n_targets={proto['n_targets']} exceeds n_models={m}; lower n_targets")
    if proto["calibration_models"] > m - 1:
        raise BenchError(
            f"{where}: protocol calibration_models={proto['calibration_models']} needs at least "
            f"{proto['calibration_models'] + 1} models, n_models={m}; lower it or raise n_models"
        )


def _seeds(seeds: Any, where: str) -> list[int]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                           for s in seeds):
        raise BenchError(f"{where}: seeds must be a non-empty list of non-negative integers, got {short_repr(seeds)}")
    return list(dict.fromkeys(seeds))


def _apply_excludes(cells: list[Cell], rules: Any, where: str) -> list[Cell]:
    if not isinstance(rules, list) or not all(isinstance(r, Mapping) and r for r in rules):
        raise BenchError(f"{where}: exclude must be a list of non-empty mappings such as {{dataset: x, seed: 1}}")
    columns = [cell.columns() for cell in cells]
    known = set().union(*columns) - {"cell_key"}
    for rule in rules:
        for key in rule:
            if key not in known:
                raise BenchError(
                    f"{where}: exclude rule {short_repr(dict(rule))} names {key!r}{did_you_mean(str(key), known)}, "
                    f"which no cell has; keys are: {', '.join(sorted(known))}"
                )

    def matches(rule: Mapping[str, Any], cols: Mapping[str, Any]) -> bool:
        for key, wanted in rule.items():
            options = wanted if isinstance(wanted, list) else [wanted]
            if cols.get(key) not in options:
                return False
        return True

    return [cell for cell, cols in zip(cells, columns, strict=True) if not any(matches(rule, cols) for rule in rules)]
