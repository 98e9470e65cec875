"""Property-based fuzzing of the grid loader: whatever a grid file holds, loading it returns a grid or raises a
:class:`BenchError` whose message is one non-empty line (the CLI prints it as ``error: ...`` and exits 2); any other
exception is a traceback for the user, hence a bug.

Documents are written as YAML text, so that they can hold what ``yaml.safe_dump`` never writes: explicit tags
(``!!python/object``, ``!!int abc``), aliases, complex keys. Two kinds are drawn: random nested structures, and
mutations of the shipped smoke grid (keys dropped, added or renamed, values swapped for wrong types, extreme
numbers, empty lists, unknown components and parameters), which get past the first checks to the deeper ones.
The runs are derandomized: the default test run tries the same examples every time.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bench.api import load
from bench.cli import main
from bench.grid import AXES, TOP_LEVEL_KEYS, UNION_FPR, Grid, resolve_grid_path
from bench.spec import PROTOCOL_PARAMS
from privkernel.errors import BenchError
from privkernel.registry import ATTACKS, REGISTRIES, Param, Registry
from targets.training import training_options

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SMOKE = yaml.safe_load(resolve_grid_path("smoke").read_text())


@dataclass(frozen=True)
class Raw:
    """YAML text written into the document as is (a tag, an alias, a flow collection as a key)."""

    text: str


COMPONENT_NAMES = sorted({name for registry in REGISTRIES.values() for name in registry.names()})
PARAM_NAMES = sorted(
    {p.name for registry in REGISTRIES.values() for name in registry.names() for p in registry.get(name).params}
    | {p.name for p in training_options()} | {p.name for p in PROTOCOL_PARAMS}
)
RAW_VALUES = [
    "!!python/object:os.system ls", "!!python/name:os.system", "!!python/object/apply:os.getcwd []",
    "!!int abc", "!!int 0x", "!!float abc", "!!bool maybe", "!!timestamp nope", "!!binary '@@@'", "!!binary 'é'",
    "!!set {a: null}", "!!set [1]", "!!omap [{a: 1}]", "!!pairs [{a: 1}]", "!!str 3", "!!null x", "!!map [1]",
    "!!seq {a: 1}", "!custom 1", "*undefined", "&anchor 1", ".nan", "-.inf", ".inf", "0x1F", "0o17", "1_000",
    "1e400", "1.0e+400", "-0.0", "~", "yes", "off", "2024-01-01", "'1e-3'", "\"\\x01\"", "\"a\\nb\"",
    "\"\\u2028\"", "\"\\t\"", "\"\"", "'  '",
]
RAW_KEYS = ["[a, b]", "{a: 1}", "!!python/object:os.system ls", "<<", "!!int abc", "*undefined"]
OPTIONS = {"training": training_options(), "protocol": PROTOCOL_PARAMS}
HUGE = [10**400, -(10**400), 2**63, -(2**63), 2**31, 10**6, -1, 0, 1e308, -1e308, 5e-324]


def emit(value: Any) -> str:
    """``value`` as flow-style YAML (one line); :class:`Raw` is written as is."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ", ".join(_pair(k, v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(emit(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return yaml.safe_dump(value).split("\n", 1)[0]
    return json.dumps(str(value))  # a double-quoted YAML scalar; JSON's escapes are YAML's


def _pair(key: Any, value: Any) -> str:
    """``key: value``; a :class:`Raw` key as an explicit one (``? [a, b] : value``)."""
    return f"? {emit(key)} : {emit(value)}" if isinstance(key, Raw) else f"{emit(key)}: {emit(value)}"


def document(raw: Any) -> str:
    """A grid file: a top-level mapping as block lines of flow values, as grids are written; anything else in
    flow style."""
    if isinstance(raw, dict):
        return "".join(_pair(k, v) + "\n" for k, v in raw.items())
    return emit(raw) + "\n"


leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 20), st.integers(), st.sampled_from(HUGE),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
    st.sampled_from(COMPONENT_NAMES + PARAM_NAMES + ["breast_cancr", "mnist", "", "none", "params", "name"]),
    st.sampled_from(RAW_VALUES).map(Raw), st.builds(list), st.builds(dict),
)
keys = st.one_of(
    st.sampled_from(TOP_LEVEL_KEYS + ("name", "params", "attacks", "fpr", "seed", "dataset")),
    st.sampled_from(PARAM_NAMES), st.text(max_size=8), st.integers(-2, 2), st.none(), st.booleans(),
    st.sampled_from(RAW_KEYS).map(Raw),
)
values = st.recursive(
    leaves, lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=16,
)
random_documents = st.one_of(
    st.dictionaries(st.sampled_from(TOP_LEVEL_KEYS), values, max_size=len(TOP_LEVEL_KEYS)),
    st.dictionaries(keys, values, max_size=6),
    values,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and indices) to a value inside ``value``, the root first."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _at(value: Any, path: tuple) -> Any:
    for step in path:
        value = value[step]
    return value


def param_values(param: Param) -> st.SearchStrategy:
    """Values of ``param`` at and near its edges (its default, choices, bounds and just past them), now and then
    anything."""
    near: list[Any] = [param.default, *(param.choices or ())]
    if param.type is bool:
        near += [True, False, "true", 1]
    if param.type is str and param.choices is None:
        near += ["data.csv", "a\nb", "", " "]
    if param.type in (int, float):
        for bound in (param.low, param.high):
            if bound is not None and math.isfinite(bound):
                near += [bound, bound - 1, bound + 1, bound * 2, -bound]
    edge = st.sampled_from(near)
    return st.one_of(edge, edge, edge, leaves, st.lists(edge, min_size=1, max_size=3))


@st.composite
def component_entries(draw: st.DrawFn, registry: Registry) -> Any:
    """An entry of a component axis: a name, or ``{name, params}`` with some of its parameters."""
    component = registry.get(draw(st.sampled_from(registry.names())))
    if not component.params or draw(st.booleans()):
        return component.name
    chosen = draw(st.lists(st.sampled_from(component.params), min_size=1, max_size=3, unique_by=lambda p: p.name))
    return {"name": component.name, "params": {p.name: draw(param_values(p)) for p in chosen}}


EXCLUDE_KEYS = ["dataset", "architecture", "defense", "seed", "n_models", "architecture.width", "defense.budget",
                "training.lr", "training.engine", "datset"]


@st.composite
def near_valid_documents(draw_shared: st.DrawFn) -> dict:
    """The smoke grid with one to three mutations: a component entry replaced or added (a name of its family with
    parameters at or past their edges), a training or protocol option set, unions or exclude rules added, or
    anywhere in the document a key dropped, added or renamed and a value replaced, wrapped in a list (a sweep) or
    emptied."""
    doc = copy.deepcopy(SMOKE)

    def draw(strategy: st.SearchStrategy) -> Any:  # a copy: the mutations below must not change a drawn value
        return copy.deepcopy(draw_shared(strategy))

    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["component", "component", "option", "option", "union", "exclude", "anywhere",
                                     "anywhere", "anywhere"]))
        if kind == "component":
            axis = draw(st.sampled_from(sorted(AXES)))
            entries = doc.get(axis) if isinstance(doc.get(axis), list) else []
            entry = draw(component_entries(AXES[axis]))
            if entries and draw(st.booleans()):
                entries[draw(st.integers(0, len(entries) - 1))] = entry
            else:
                entries.append(entry)
            doc[axis] = entries
        elif kind == "option":
            family = draw(st.sampled_from(["training", "protocol"]))
            options = doc.get(family) if isinstance(doc.get(family), dict) else {}
            param = draw(st.sampled_from(OPTIONS[family]))
            options[param.name] = draw(param_values(param))
            doc[family] = options
        elif kind == "union":
            names = [*ATTACKS.names(), "lira(mode=offline)", "nope"]
            union = {"attacks": draw(st.lists(st.sampled_from(names), max_size=3)),
                     "fpr": draw(param_values(UNION_FPR))}
            doc["unions"] = [*(doc.get("unions") or []), draw(st.one_of(st.just(union), values))]
        elif kind == "exclude":
            rule = draw(st.dictionaries(st.sampled_from(EXCLUDE_KEYS), leaves | st.sampled_from(COMPONENT_NAMES),
                                        max_size=2))
            doc["exclude"] = [*(doc.get("exclude") or []), rule]
        else:
            _mutate_anywhere(doc, draw)
    return doc


def _mutate_anywhere(doc: dict, draw: Any) -> None:
    """One mutation at a random place of ``doc``: a key dropped, added or renamed, a value replaced, wrapped in a
    list or emptied."""
    path = draw(st.sampled_from(_paths(doc)))
    target = _at(doc, path)
    parent, step = (_at(doc, path[:-1]), path[-1]) if path else (None, None)
    kinds = ["add", "drop", "rename"] + (["replace", "replace", "wrap", "empty"] if path else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "replace":
        parent[step] = draw(values)
    elif kind == "wrap":
        parent[step] = [target] + draw(st.lists(leaves, max_size=2))
    elif kind == "empty":
        parent[step] = draw(st.sampled_from([[], {}, None, ""]))
    elif isinstance(target, dict):
        if kind == "add" or not target:
            target[draw(keys)] = draw(values)
        else:
            key = draw(st.sampled_from(list(target)))
            moved = target.pop(key)
            if kind == "rename":
                target[draw(st.one_of(keys, st.just(str(key)[:-1]), st.just(f"{key}s")))] = moved
    elif isinstance(target, list):
        if kind == "add" or not target:
            target.append(draw(values))
        else:
            target.pop(draw(st.integers(0, len(target) - 1)))
    elif parent is not None:
        parent[step] = draw(leaves)


def _write(folder: str, raw: Any) -> str:
    path = Path(folder) / "grid.yaml"
    path.write_text(raw if isinstance(raw, str) else document(raw))
    return str(path)


def assert_loads_or_refuses(path: str) -> None:
    """Load ``path`` as the CLI does: a grid, or a BenchError of one non-empty line."""
    try:
        grid = load(path)
    except BenchError as exc:
        message = str(exc)
        assert message.strip(), "a BenchError without a message"
        assert len(message.splitlines()) == 1, f"a message of several lines: {message!r}"
    else:
        assert isinstance(grid, Grid) and grid.cells


@FUZZ
@given(raw=random_documents)
def test_a_random_document_loads_or_is_refused_in_one_line(raw):
    with tempfile.TemporaryDirectory() as folder:
        assert_loads_or_refuses(_write(folder, raw))


@FUZZ
@given(raw=near_valid_documents())
def test_a_mutated_smoke_grid_loads_or_is_refused_in_one_line(raw):
    with tempfile.TemporaryDirectory() as folder:
        assert_loads_or_refuses(_write(folder, raw))


@settings(FUZZ, max_examples=25, suppress_health_check=[*FUZZ.suppress_health_check,
                                                          HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(near_valid_documents(), random_documents))
@example(raw=SMOKE)
def test_the_cli_exits_0_or_2_with_at_most_one_error_line(raw, capsys):
    capsys.readouterr()  # what an earlier example printed
    with tempfile.TemporaryDirectory() as folder:
        code = main(["grid", "--grid", _write(folder, raw), "--dry-run"])
    err = capsys.readouterr().err
    assert code in (0, 2)
    assert "Traceback" not in err
    assert sum(line.startswith("error:") for line in err.splitlines()) == (1 if code == 2 else 0)


# Regression tests: the tracebacks and bad messages found by the fuzzer or while writing it, each as a plain example.


@pytest.mark.parametrize(
    "text, message",
    [
        # PyYAML's constructors raise ValueError, KeyError or AttributeError for a value their tag cannot read
        ("name: !!int abc\n", "line 1, column 7: the tag !!int cannot read the value 'abc'"),
        ("name: !!int 0x\n", "the tag !!int cannot read the value '0x'"),
        ("name: !!float abc\n", "the tag !!float cannot read the value 'abc'"),
        ("name: !!bool maybe\n", "the tag !!bool cannot read the value 'maybe'"),
        ("seeds: [!!timestamp nope]\n", "line 1, column 9: the tag !!timestamp cannot read the value 'nope'"),
        # a character YAML refuses: a ReaderError, with a position instead of a mark
        ("name: smoke\ndatasets: [\x01]\n", "line 2, column 12: unacceptable character #x0001"),
        # PyYAML's composer recurses once per level: RecursionError
        ("datasets: " + "[" * 1000 + "]" * 1000 + "\n", "nests lists or mappings too deeply"),
    ],
)
def test_yaml_that_cannot_be_read_is_refused_in_one_line(tmp_path, text, message):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    with pytest.raises(BenchError) as err:
        load(str(path))
    assert message in str(err.value) and len(str(err.value).splitlines()) == 1


def test_an_integer_beyond_the_largest_float_is_out_of_range_for_a_float_parameter(tmp_path):
    # float(10**400) raises OverflowError
    path = tmp_path / "grid.yaml"
    path.write_text(document({**SMOKE, "training": {"lr": 10**400}}))
    with pytest.raises(BenchError, match=r"training: lr=10{400} is out of range; allowed: \(0, 10\]"):
        load(str(path))


def test_a_string_parameter_with_a_line_break_is_refused(tmp_path):
    # it went into the dataset's label, so the message of a later refusal naming the dataset had two lines
    path = tmp_path / "grid.yaml"
    csv = {"name": "csv", "params": {"path": "a\nb.csv", "task": "regression"}}
    path.write_text(document({**SMOKE, "datasets": [csv]}))  # memguard refuses regression, naming the dataset
    with pytest.raises(BenchError, match=r"parameter 'path' must be one line of printable text, got 'a\\nb.csv'"):
        load(str(path))


def alias_bomb(levels: int = 7) -> str:
    """A ``description:`` line that anchors ``*b{levels - 1}``: a list of 9 lists of 9 ... (9**levels items in all,
    4.8 million at 7 levels; its repr is 25 MB) in a few hundred bytes of YAML."""
    anchors = ["&b0 [x, x, x, x, x, x, x, x, x]"]
    anchors += [f"&b{i} [{', '.join([f'*b{i - 1}'] * 9)}]" for i in range(1, levels)]
    return f"description: [{', '.join(anchors)}]\n"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"name": Raw("*b6")}, "name must be a string, got [[[[...], "),
        ({"datasets": [Raw("*b6")]}, "datasets: entry [[[[...], "),
        ({"datasets": [{"name": Raw("*b6")}]}, "datasets: the name of entry {'name': [[[...], "),
        ({"training": {"lr": Raw("*b6")}}, "parameter 'lr' must be of type float, got [[[[...], "),
        ({"seeds": Raw("*b6")}, "seeds must be a non-empty list of non-negative integers, got [[[[...], "),
        ({"exclude": [{"sed": Raw("*b6")}]}, "exclude rule {'sed': [[[...], "),
        ({"unions": [{"attacks": ["lira", Raw("*b6")], "fpr": 0.0}]}, "union attack [[[[...], "),
    ],
)
def test_a_value_of_billions_of_items_is_shown_short(tmp_path, changes, message):
    # repr() or str() of the value put all its items in the message: 25 MB here, gigabytes at 10 levels
    path = tmp_path / "grid.yaml"
    path.write_text(alias_bomb() + document({**SMOKE, **changes}))
    with pytest.raises(BenchError) as err:
        load(str(path))
    assert message in str(err.value) and len(str(err.value)) < 1000


def test_a_union_with_an_empty_list_of_fprs_is_refused(tmp_path):
    # the union was silently left out of the grid
    path = tmp_path / "grid.yaml"
    path.write_text(document({**SMOKE, "unions": [{"attacks": ["lira", "rmia"], "fpr": []}]}))
    with pytest.raises(BenchError, match="the fpr of the union of lira, rmia is an empty list; give at least one"):
        load(str(path))


@pytest.mark.parametrize("name, expected", [("2024-06-01", "2024-06-01"), ("7", "7"), ("smoke", "smoke")])
def test_a_grid_name_that_yaml_reads_as_a_date_or_a_number_keeps_its_text(tmp_path, name, expected):
    path = tmp_path / "grid.yaml"
    path.write_text(document({**SMOKE, "name": Raw(name)}))
    assert load(str(path)).name == expected
