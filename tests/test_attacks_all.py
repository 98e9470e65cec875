"""Checks that every black-box attack passes: registration, finite scores, no signal → chance, signal → found.

The attacks are taken from the registry: every attack that needs nothing but the release (and population
records), so that the synthetic audit of :func:`tests.attack_data.synthetic` serves it. The attacks with other
requirements (queries, white-box features, rounds, a leak) are checked in their own files and in
``tests/test_components.py``."""

import numpy as np
import pytest

from attacks.base import AttackData, AttackOutput
from attacks.requirements import Population, Release, find, requirements_of
from bench.metrics import auc
from privkernel.errors import BenchError
from privkernel.registry import ATTACKS
from tests.attack_data import synthetic

NEW_ATTACKS = [name for name in ATTACKS.names()
               if all(isinstance(r, (Release, Population)) for r in requirements_of(ATTACKS.get(name)))]
FAST = {"nn": {"hidden": 16, "max_iter": 60, "max_train": 3000}}


def _run(name: str, data: AttackData, **params) -> AttackOutput:
    component = ATTACKS.get(name)
    out = component.obj(data, **component.validate({**FAST.get(name, {}), **params}))
    out = out if isinstance(out, AttackOutput) else AttackOutput(out)
    assert out.scores.shape == data.labels.shape and np.isfinite(out.scores).all(), name
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in out.info.values()), out.info
    return out


@pytest.mark.parametrize("name", NEW_ATTACKS)
def test_registered_with_tags_and_documented_params(name):
    component = ATTACKS.get(name)
    # correctness reads the predicted label only, so it also runs on label-only releases
    expected = Release("labels" if name == "correctness" else "probabilities")
    assert find(requirements_of(component), Release) == expected and "classification" in component.tags["tasks"]
    assert component.description and component.obj.__doc__
    for p in component.params:
        assert p.help and (p.choices is not None or p.type is bool or p.low is not None or p.high is not None), p


@pytest.mark.parametrize("name", ["confidence", "entropy", "modified_entropy"])
def test_threshold_choice_is_validated(name):
    assert ATTACKS.get(name).validate({})["thresholds"] == "class"
    assert ATTACKS.get(name).validate({"thresholds": "global"})["thresholds"] == "global"
    with pytest.raises(BenchError, match="did you mean 'class'"):
        ATTACKS.get(name).validate({"thresholds": "clas"})
    with pytest.raises(BenchError, match="unknown parameter"):
        ATTACKS.get("correctness").validate({"thresholds": "class"})


@pytest.fixture(scope="module")
def no_signal():
    return synthetic(n=2000, n_models=9, signal=0.0, difficulty=2.0, class_shift=1.0, seed=10)


@pytest.fixture(scope="module")
def signal():
    return synthetic(n=1500, n_models=9, signal=1.5, difficulty=1.0, class_shift=1.0, seed=11)


@pytest.mark.parametrize("name", NEW_ATTACKS)
def test_no_signal_gives_chance(name, no_signal):
    assert abs(auc(_run(name, no_signal.data).scores, no_signal.membership) - 0.5) < 0.05


@pytest.mark.parametrize("name", NEW_ATTACKS)
def test_signal_is_found(name, signal):
    assert auc(_run(name, signal.data).scores, signal.membership) > 0.57


@pytest.mark.parametrize("name", NEW_ATTACKS)
def test_label_only_like_releases_with_zeros_stay_finite(name, signal):
    """Releases with zero probabilities (top-k, label only): every score is finite, except LOSS's, which is
    log p_y itself and so exactly −inf where the released true-class probability is 0 (and finite elsewhere)."""
    d = signal.data
    def one_hot(lp):
        return np.where(np.arange(lp.shape[-1]) == lp.argmax(-1)[..., None], 0.0, -np.inf)
    data = AttackData(one_hot(d.target), d.labels, one_hot(d.references), d.reference_keep,
                      one_hot(d.population_target), one_hot(d.population_references), d.population_labels)
    if name != "loss":
        _run(name, data)
        return
    scores = ATTACKS.get("loss").obj(data).scores
    zero = data.target[np.arange(len(data.labels)), data.labels] == -np.inf
    assert zero.any() and (~zero).any()
    np.testing.assert_array_equal(np.isneginf(scores), zero)
    assert np.isfinite(scores[~zero]).all()


@pytest.mark.parametrize("name", NEW_ATTACKS)
def test_same_input_same_output(name, signal):
    np.testing.assert_array_equal(_run(name, signal.data).scores, _run(name, signal.data).scores)
