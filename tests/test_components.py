"""Checks that every registered component passes, family by family (as scikit-learn's estimator checks do).

The lists come from the registries, so a new dataset, architecture, defense or attack is checked as soon as it is
registered: it needs no entry here unless it cannot run at its defaults (a file to read, or a model too large for
a unit test), and then the test that iterates its family fails until it has one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.audit import Audit, score_target
from bench.metrics import auc
from bench.spec import ComponentSpec
from defenses.base import Defense
from privkernel.registry import ARCHITECTURES, ATTACKS, DATASETS, DEFENSES, REGISTRIES, TAGS
from tests.attack_data import release_from_phi, synthetic
from tests.test_architectures import inputs as model_inputs

# --- every family ----------------------------------------------------------------------------------------------

EVERY_COMPONENT = [(family, name) for family, registry in REGISTRIES.items() for name in registry.names()]


@pytest.mark.parametrize("family, name", EVERY_COMPONENT)
def test_every_component_is_documented_and_validates_its_defaults(family, name):
    component = REGISTRIES[family].get(name)
    assert component.description.strip(), f"{family} {name!r} needs a description"
    assert component.validate({}) == component.defaults()  # the defaults pass their own validation
    for p in component.params:
        assert p.help.strip(), f"{family} {name!r}: parameter {p.name!r} needs a help text"
    described = component.describe()
    assert (described["family"], described["name"], described["version"]) == (family, name, component.version)
    assert [p["name"] for p in described["params"]] == [p.name for p in component.params]
    assert {t["name"] for t in described["tags"]} == set(REGISTRIES[family].tags)


@pytest.mark.parametrize("family, name", EVERY_COMPONENT)
def test_every_tag_resolves_at_the_defaults_to_its_declared_type(family, name):
    component = REGISTRIES[family].get(name)
    for key, tag in REGISTRIES[family].tags.items():
        assert TAGS[key] is tag
        value = component.tag(key)  # a function of the parameters is type-checked here
        assert tag.problem(value) is None, (family, name, key, value)


# --- datasets --------------------------------------------------------------------------------------------------

#: Small parameters for the datasets that read a file or are large at their defaults; the file paths are filled in
#: by :func:`dataset_params`.
DATASET_PARAMS = {
    "csv": {"path": "table.csv", "label_col": "y"},
    "npz": {"path": "arrays.npz", "inputs": "image"},
    "synthetic_purchase": {"n_records": 120, "n_features": 12, "n_classes": 4},
    "synthetic_volumes": {"n_samples": 12, "size": 4},
}
#: How many dimensions ``X`` has, per input kind (a graph is a dict of arrays).
INPUT_DIMS = {"vector": {2}, "image": {4}, "volume": {4, 5}}


def dataset_params(name: str, folder: Path) -> dict:
    """The parameters a dataset is checked at, with its input files written to ``folder``."""
    rng = np.random.default_rng(0)
    params = dict(DATASET_PARAMS.get(name, {}))
    if name == "csv":
        rows = ["a,b,y"] + [f"{rng.normal():.4f},{rng.normal():.4f},{i % 2}" for i in range(30)]
        (folder / "table.csv").write_text("\n".join(rows) + "\n")
    if name == "npz":
        np.savez(folder / "arrays.npz", X=rng.random((20, 1, 4, 4)).astype(np.float32), y=np.arange(20) % 3)
    for key in DATASETS.get(name).tag("files"):
        params[key] = str(folder / params[key])
    return params


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_loads_as_its_tags_declare(name, tmp_path):
    component = DATASETS.get(name)
    missing = [p.name for p in component.params if p.default is None and p.name not in DATASET_PARAMS.get(name, {})]
    assert not (set(missing) & set(component.tag("files"))), f"add file parameters of {name!r} to DATASET_PARAMS"
    params = component.validate(dataset_params(name, tmp_path))
    problem = component.check(params)
    if problem and "install it with" in problem:  # a dataset whose package is not installed (.ci/run installs all)
        pytest.skip(problem)
    assert problem is None
    data = component.obj(**params)
    task, kind, n_classes, size = (component.tag(t, params) for t in ("task", "inputs", "n_classes", "size"))
    assert data.task == task
    if n_classes is not None:
        assert data.n_classes == n_classes
    if size is not None:
        assert len(data) == size
    if kind == "graph":
        assert isinstance(data.X, dict) and all(len(v) == len(data) for v in data.X.values())
    else:
        assert data.X.ndim in INPUT_DIMS[kind] and data.X.dtype == np.float32 and np.isfinite(data.X).all()
    if task == "classification":
        assert data.y.dtype == np.int64 and set(np.unique(data.y)) <= set(range(data.n_classes))
        assert len(np.unique(data.y)) >= 2
    else:
        assert data.y.dtype == np.float32 and data.n_classes == 1 and np.isfinite(data.y).all()


# --- architectures ---------------------------------------------------------------------------------------------

#: Small widths, so that each build takes milliseconds.
SMALL_ARCHITECTURES = {"mlp": {"width": 8}, "cnn": {"channels": 4}, "cnn3d": {"channels": 2},
                       "mpnn": {"hidden": 8, "steps": 1}}
ARCHITECTURE_CASES = [(name, kind) for name in ARCHITECTURES.names() for kind in ARCHITECTURES.get(name).tag("accepts")]


@pytest.mark.parametrize("name, kind", ARCHITECTURE_CASES)
def test_every_architecture_builds_for_what_it_accepts(name, kind):
    component = ARCHITECTURES.get(name)
    X, shape = model_inputs(kind, n=6)
    torch.manual_seed(0)
    model = component.obj(shape, 3, **component.validate(SMALL_ARCHITECTURES.get(name, {})))
    model.eval()
    with torch.no_grad():
        out = model(X)
        again = model(X)
    assert out.shape == (6, 3) and torch.isfinite(out).all()
    torch.testing.assert_close(out, again, rtol=0, atol=0)  # evaluation mode: no randomness
    assert sum(p.numel() for p in model.parameters()) > 0


# --- defenses --------------------------------------------------------------------------------------------------

#: Releases whose documentation promises that the released argmax is the model's predicted label.
LABEL_KEEPING = {"memguard", "topk", "rounding", "label_only"}


@pytest.mark.parametrize("name", DEFENSES.names())
def test_every_defense_builds_from_its_defaults_and_keeps_the_predicted_label(name):
    component = DEFENSES.get(name)
    params = component.validate({})
    defense = component.obj(**params)
    assert isinstance(defense, Defense)
    for task in component.tag("tasks"):
        assert component.check(params, task=task, n_classes=10 if task == "classification" else 1) is None
    rng = np.random.default_rng(0)
    log_probs = torch.log_softmax(torch.from_numpy(rng.normal(0, 2, (3, 40, 5))), -1).numpy().astype(np.float32)
    released = defense.release(log_probs, np.random.default_rng(1))
    assert released.shape == log_probs.shape and released.dtype == log_probs.dtype and not np.isnan(released).any()
    if name in LABEL_KEEPING:
        np.testing.assert_array_equal(released.argmax(-1), log_probs.argmax(-1))
    if not defense.release_only and defense.releases == "probabilities":
        np.testing.assert_array_equal(released, log_probs)  # a training defense releases what the model outputs


# --- attacks ---------------------------------------------------------------------------------------------------

#: Small attack models, so that each check takes well under a second.
FAST_ATTACKS = {
    "nn": {"hidden": 8, "max_iter": 40, "max_train": 2000},
    "white_box": {"hidden": 8, "max_iter": 40, "max_train": 2000},
    "leaked": {"hidden": 8, "max_iter": 100},
}


def full_audit(signal: float, seed: int, n: int = 600, n_models: int = 8, n_rounds: int = 3) -> Audit:
    """An audit with every observation an attack may read, each carrying a membership effect of size ``signal``:
    released outputs and population (:func:`tests.attack_data.synthetic`), label-only robustness, white-box
    features, the outputs after every federated round, and the records' features (noise: QMIA conditions on
    them)."""
    base = synthetic(n=n, n_models=n_models, n_classes=3, signal=signal, difficulty=1.0, noise=0.5,
                     n_population=200, seed=seed)
    rng = np.random.default_rng(seed + 1)
    data = base.data
    outputs = np.concatenate([data.target[None], data.references])
    keep = np.concatenate([base.membership[None], data.reference_keep])
    population = np.concatenate([data.population_target[None], data.population_references])
    difficulty = rng.normal(size=n)
    robustness = np.clip(0.5 + 0.2 * difficulty + 0.2 * signal * keep + 0.1 * rng.normal(size=keep.shape), 0, 1)
    white_box = difficulty[None, :, None] - signal * keep[..., None] + 0.5 * rng.normal(size=(*keep.shape, 2))
    weights = np.full((n, 3), 0.5)
    phi = rng.normal(size=n) + signal * keep[None] * np.arange(1, n_rounds + 1)[:, None, None] / n_rounds
    rounds = release_from_phi(phi + 0.5 * rng.normal(size=phi.shape), data.labels, weights)
    pop_phi = rng.normal(size=(n_rounds, n_models, 200))
    population_rounds = release_from_phi(pop_phi, data.population_labels, np.full((200, 3), 0.5))
    return Audit(outputs, keep, data.labels, population, data.population_labels,
                 robustness=robustness.astype(np.float32), white_box=white_box.astype(np.float32),
                 white_box_names=("gradient_norm", "loss"), rounds=rounds, population_rounds=population_rounds,
                 features=rng.normal(size=(n, 4)), population_features=rng.normal(size=(200, 4)))


@pytest.fixture(scope="module")
def leaky_audit() -> Audit:
    return full_audit(signal=1.5, seed=3)


@pytest.fixture(scope="module")
def blank_audit() -> Audit:
    return full_audit(signal=0.0, seed=4)


def attack_scores(name: str, audit: Audit) -> tuple[np.ndarray, np.ndarray]:
    """Model 0's scores by attack ``name`` (small settings), and the records they are evaluated on."""
    component = ATTACKS.get(name)
    params = component.validate(FAST_ATTACKS.get(name, {}))
    spec = ComponentSpec.make(name, params, component.defaults())
    out = score_target(spec, audit, 0, [1])
    evaluated = out.get("evaluated", np.ones(audit.keep.shape[1], dtype=bool))
    return out["target"], evaluated


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_gives_one_finite_deterministic_score_per_record(name, leaky_audit):
    scores, evaluated = attack_scores(name, leaky_audit)
    assert scores.shape == (leaky_audit.keep.shape[1],) and np.isfinite(scores).all()
    np.testing.assert_array_equal(scores, attack_scores(name, leaky_audit)[0])
    assert evaluated.sum() > 100


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_finds_a_planted_membership_signal(name, leaky_audit):
    scores, evaluated = attack_scores(name, leaky_audit)
    assert auc(scores[evaluated], leaky_audit.keep[0, evaluated]) > 0.6


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_is_at_chance_without_a_signal(name, blank_audit):
    scores, evaluated = attack_scores(name, blank_audit)
    # ~600 records (300 with a leaked attacker): the AUC of a chance scorer has a standard error of about 0.024
    assert abs(auc(scores[evaluated], blank_audit.keep[0, evaluated]) - 0.5) < 0.1
