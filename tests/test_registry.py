import json

import pytest

from bench.cli import main
from privkernel.errors import BenchError
from privkernel.registry import ARCHITECTURES, ATTACKS, DATASETS, DEFENSES, REGISTRIES, Param, Registry, validate_params

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
    with pytest.raises(ValueError, match="registered twice"):
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
    assert "loss" in capsys.readouterr().out
    assert main(["list", "atacks"]) == 2
    assert "did you mean 'attacks'?" in capsys.readouterr().err
