import json
from pathlib import Path

import pytest

from bench.cli import main
from privkernel.errors import BenchError
from privkernel.registry import (
    ARCHITECTURES,
    ATTACKS,
    DATASETS,
    DEFENSES,
    FAMILY_TAGS,
    REGISTRIES,
    TAGS,
    Param,
    RegistrationError,
    Registry,
    Tag,
    validate_params,
)

PARAMS = (
    Param("depth", int, 2, "layers", low=1, high=8),
    Param("rate", float, 0.0, "a rate", low=0.0, high=1.0, high_inclusive=False),
    Param("act", str, "relu", "activation", choices=("relu", "tanh")),
    Param("flag", bool, False, "a switch"),
)


def test_defaults_are_filled_and_types_coerced():
    assert validate_params(PARAMS, {"rate": 0, "depth": 3.0}, "x") == {
        "depth": 3, "rate": 0.0, "act": "relu", "flag": False
    }
    assert validate_params(PARAMS, {"rate": "1e-3"}, "x")["rate"] == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "given, message",
    [
        ({"depht": 3}, "unknown parameter 'depht' (did you mean 'depth'?)"),
        ({"depth": 0}, "depth=0 is out of range; allowed: [1, 8]"),
        ({"depth": 2.5}, "must be of type int"),
        ({"depth": True}, "must be of type int"),
        ({"rate": 1.0}, "rate=1.0 is out of range; allowed: [0, 1)"),
        ({"rate": float("nan")}, "must be a finite number"),
        ({"act": "relux"}, "is not one of {'relu', 'tanh'} (did you mean 'relu'?)"),
        ({"flag": 1}, "must be of type bool"),
        ({"act": 3}, "must be of type str"),
    ],
)
def test_bad_parameters_name_the_problem(given, message):
    with pytest.raises(BenchError, match=None) as err:
        validate_params(PARAMS, given, "grid g.yaml: mlp")
    assert message in str(err.value)
    assert str(err.value).startswith("grid g.yaml: mlp")


def test_unknown_component_suggests_closest():
    with pytest.raises(BenchError, match=r"unknown dataset 'breast_cancr' \(did you mean 'breast_cancer'\?\)"):
        DATASETS.get("breast_cancr")


def test_registering_twice_is_refused_and_params_are_unique():
    reg = Registry("widgets")
    reg.register("a", description="first")(lambda: 1)
    with pytest.raises(ValueError, match="already registered by"):
        reg.register("a", description="again")(lambda: 2)
    with pytest.raises(ValueError, match="duplicate parameter"):
        reg.register("b", description="dup", params=[PARAMS[0], PARAMS[0]])


def test_a_bad_default_is_caught_at_registration():
    with pytest.raises(BenchError, match="out of range"):
        Param("depth", int, 0, "layers", low=1)


def test_builtin_components_are_registered():
    assert "breast_cancer" in DATASETS.names()
    assert {"logreg", "mlp"} <= set(ARCHITECTURES.names())
    assert "none" in DEFENSES.names()
    assert "loss" in ATTACKS.names()


def test_list_json_lists_every_component(capsys):
    assert main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert set(listed) == set(REGISTRIES)
    for family, registry in REGISTRIES.items():
        assert [c["name"] for c in listed[family]] == registry.names()
    mlp = next(c for c in listed["architectures"] if c["name"] == "mlp")
    assert {p["name"] for p in mlp["params"]} == {"depth", "width", "activation", "dropout"}


def test_list_one_family_and_unknown_family(capsys):
    assert main(["list", "attacks"]) == 0
    out = capsys.readouterr().out
    assert "loss" in out and "<lambda>" not in out
    assert "requires (at the defaults): Release(shows='labels'), PerturbedLabelQueries(noise=0.5, queries=16)" in out
    assert main(["list", "engines"]) == 0
    assert "rounds (int, default 1, [1, 100000])" in capsys.readouterr().out
    assert main(["list", "atacks"]) == 2
    assert "did you mean 'attacks'?" in capsys.readouterr().err


# --- typed tags ----------------------------------------------------------------------------------------------------


def test_an_unknown_tag_is_refused_at_registration_with_the_allowed_tags():
    with pytest.raises(RegistrationError) as err:
        DATASETS.register("wine", description="test", input="tabular")(lambda: None)
    message = str(err.value)
    assert message.startswith("dataset 'wine': unknown tag 'input' (did you mean 'inputs'?)")
    assert "task (str of {'classification', 'regression'})" in message and "n_classes (int | None)" in message
    assert "wine" not in DATASETS


@pytest.mark.parametrize(
    "registry, tags, message",
    [
        (DATASETS, {"task": "clasification"}, "tag 'task': 'clasification' is not one of {'classification', "
                                              "'regression'} (did you mean 'classification'?)"),
        (DATASETS, {"n_classes": 2.0}, "tag 'n_classes': 2.0 is not of type int | None"),
        (DATASETS, {"n_classes": True}, "tag 'n_classes': True is not of type int | None"),
        (DATASETS, {"files": "path"}, "tag 'files': 'path' is not of type tuple[str, ...]"),
        (ARCHITECTURES, {"accepts": "vector"}, "tag 'accepts': 'vector' is not of type tuple[str, ...]"),
        (DEFENSES, {"tasks": ("classification", "ranking")}, "tag 'tasks': 'ranking' is not one of"),
        (ATTACKS, {"access": "grey-box"}, "tag 'access': 'grey-box' is not one of"),
        (ATTACKS, {"check": "k <= n_classes"}, "tag 'check': 'k <= n_classes' is not of type callable | None"),
    ],
)
def test_a_tag_of_the_wrong_type_is_refused_at_registration(registry, tags, message):
    with pytest.raises(RegistrationError, match=None) as err:
        registry.register("bad", description="test", **tags)(lambda: None)
    assert message in str(err.value) and str(err.value).startswith(f"{registry.family[:-1]} 'bad': ")


def test_a_tuple_tag_given_as_a_list_is_stored_as_a_tuple(registries):
    ARCHITECTURES.register("lister", description="test", accepts=["vector", "image"])(lambda: None)
    assert ARCHITECTURES.get("lister").tag("accepts") == ("vector", "image")


def test_a_tag_that_depends_on_the_params_is_type_checked_when_resolved(registries):
    params = [Param("kind", str, "vector", "input kind"), Param("classes", int, 2, "classes")]
    DATASETS.register("dyn", description="test", params=params, inputs=lambda p: p["kind"],
                      n_classes=lambda p: p["classes"] / 2)(lambda: None)
    component = DATASETS.get("dyn")
    assert component.tag("inputs") == "vector" and component.tag("inputs", {"kind": "image"}) == "image"
    with pytest.raises(TypeError, match=r"dataset 'dyn': tag 'n_classes' at \{\}: 1.0 is not of type int \| None"):
        component.tag("n_classes")


def test_an_unset_tag_reads_its_one_default():
    none = DEFENSES.get("none")
    assert "tasks" not in none.tags and none.tag("tasks") == ("classification", "regression")
    assert ATTACKS.get("loss").tag("knowledge") == "references" and ATTACKS.get("loss").tag("access") == "black-box"
    assert ARCHITECTURES.get("mlp").tag("check") is None
    with pytest.raises(ValueError, match="tag 'tasks' has one default"):
        none.tag("tasks", default=("classification",))
    with pytest.raises(KeyError, match="defenses declare no tag 'task' \\(did you mean 'tasks'\\?\\)"):
        none.tag("task")


def test_tag_names_keep_one_type_and_default_in_every_family():
    for family, names in FAMILY_TAGS.items():
        assert "check" in names, family  # every family refuses parameters the same way
        for name in names:
            assert REGISTRIES[family].tags[name] is TAGS[name]
    with pytest.raises(TypeError, match="tag 'tasks' is already declared"):
        Registry("widgets", tags=[Tag("tasks", tuple[str, ...], ("classification",), "other default")])
    widgets = Registry("widgets", tags=["tasks", "check"])
    assert widgets.tags["tasks"].default == DEFENSES.tags["tasks"].default == ATTACKS.tags["tasks"].default


def test_a_bad_tag_default_is_refused():
    with pytest.raises(TypeError, match="tag 'depth': its default 'deep' is not of type int"):
        Tag("depth", int, "deep", "layers")


def test_check_is_the_one_refusal_hook_of_every_family(registries):
    def check(params, *, task, n_classes):
        return f"{params['k']} > {n_classes} ({task})" if params["k"] > n_classes else None

    DEFENSES.register("k_test", description="test", params=[Param("k", int, 1, "k")], check=check)(lambda: None)
    component = DEFENSES.get("k_test")
    assert component.check({"k": 3}, task="classification", n_classes=2) == "3 > 2 (classification)"
    assert component.check({"k": 2}, task="classification", n_classes=2) is None
    # a dataset's check sees its own task and number of classes
    seen = {}
    DATASETS.register("checked", description="test", task="regression", n_classes=1,
                      check=lambda p, **facts: seen.update(facts))(lambda: None)
    assert DATASETS.get("checked").check({}) is None and seen == {"task": "regression", "n_classes": 1}


def test_readme_extending_dataset_example_registers(registries):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    extending = readme[readme.index("## Extending"):]
    snippet = extending[extending.index("```python") + len("```python"):]
    snippet = snippet[:snippet.index("```")]
    exec(compile(snippet, "README.md", "exec"), {})
    wine = DATASETS.get("wine")
    assert wine.tag("inputs") == "vector" and wine.tag("n_classes") == 3 and wine.tag("size") == 178
    data = wine.obj()
    assert data.X.shape == (178, 13) and data.n_classes == 3


# --- temporary registration ----------------------------------------------------------------------------------------


def test_temporarily_undoes_registrations_and_replacements():
    loss = ATTACKS.get("loss")
    with ATTACKS.temporarily() as attacks:
        attacks.register("scratch", description="test")(lambda data: data)
        attacks.register("loss", description=loss.description, params=loss.params, version=7, replace=True,
                         **loss.tags)(loss.obj)
        assert "scratch" in ATTACKS and ATTACKS.get("loss").version == 7
        with pytest.raises(ValueError, match="already registered by"):
            attacks.register("loss", description="again")(lambda data: data)
    assert "scratch" not in ATTACKS and ATTACKS.get("loss") is loss


def test_temporarily_restores_even_after_an_error():
    with pytest.raises(RuntimeError), DATASETS.temporarily():
        DATASETS.register("scratch", description="test")(lambda: None)
        raise RuntimeError
    assert "scratch" not in DATASETS


def test_the_registries_fixture_restores_every_family(registries):
    for registry in registries.values():
        registry.register("fixture_scratch", description="test")(lambda: None)
    assert all("fixture_scratch" in r for r in REGISTRIES.values())


def test_the_registries_fixture_left_nothing_behind():
    assert not any("fixture_scratch" in r for r in REGISTRIES.values())


def test_list_shows_tags_with_their_types(capsys):
    assert main(["list", "defenses"]) == 0
    out = capsys.readouterr().out
    assert "tag tasks (tuple[str, ...] of {'classification', 'regression'}): ('classification',)" in out
    assert "tag check (callable | None): 'topk_problem'" in out
    assert main(["list", "--json", "datasets"]) == 0
    csv = next(c for c in json.loads(capsys.readouterr().out)["datasets"] if c["name"] == "csv")
    task = next(t for t in csv["tags"] if t["name"] == "task")
    assert task == {"name": "task", "type": "str of {'classification', 'regression'}", "set": True,
                    "per_params": True, "value": "classification"}
