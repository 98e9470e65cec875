"""`bench audit` in the classic shadow-model setting (Song & Mittal 2021): shadow models scored on their own records,
with or without reference models on the target's records; and its bad inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.api import audit as api_audit
from bench.cli import main
from tests.attack_data import synthetic
from tests.test_fidelity import authors_attack_accuracy


def _probabilities(log_probs: np.ndarray) -> np.ndarray:
    p = np.exp(np.asarray(log_probs, dtype=np.float64))
    return p / p.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def classic(tmp_path_factory):
    """A target on 1,000 members and 1,000 non-members, and one shadow model on its own 500 in / 500 out."""
    target = synthetic(n=2000, n_models=2, n_classes=4, signal=1.5, difficulty=1.0, seed=0)
    shadow = synthetic(n=1000, n_models=2, n_classes=4, signal=1.5, difficulty=1.0, seed=1)
    arrays = dict(
        target_outputs=_probabilities(target.data.target), target_membership=target.membership.astype(int),
        labels=target.data.labels,
        shadow_outputs=_probabilities(shadow.data.target)[None], shadow_labels=shadow.data.labels,
        shadow_membership=shadow.membership[None].astype(int),
    )
    path = tmp_path_factory.mktemp("classic") / "classic.npz"
    np.savez(path, **arrays)
    return path, arrays


def test_one_shadow_model_runs_song_and_mittal_and_matches_the_authors_accuracy(classic, tmp_path, capsys):
    path, arrays = classic
    csv = tmp_path / "classic.csv"
    assert main(["audit", "--outputs", str(path), "--attacks",
                 "correctness,confidence,entropy,modified_entropy,loss,lira", "--verbose", "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "1 shadow model on 1000 shadow records" in out and "0 reference models" in out
    assert "modified_entropy thresholds by class" in out
    table = pd.read_csv(csv).set_index("attack")
    for attack in ("correctness", "confidence", "entropy", "modified_entropy", "loss"):
        assert pd.isna(table.loc[attack, "skipped"]), attack
        assert 0.55 < table.loc[attack, "balanced_accuracy"] < 1, attack
    assert (table.loc[["confidence", "entropy", "modified_entropy", "loss"], "learned_on"] == "shadow").all()
    assert len(table.loc["confidence", "class_thresholds"].split()) == 4
    assert "Shadow models scored on their own records cannot serve it" in table.loc["lira", "skipped"]
    # the printed attack accuracy is the authors' _mem_inf_thre on the same arrays
    conf = lambda p, y: p[np.arange(len(y)), y]  # noqa: E731
    member = arrays["target_membership"].astype(bool)
    shadow_member = arrays["shadow_membership"][0].astype(bool)
    t, y, s, ys = arrays["target_outputs"], arrays["labels"], arrays["shadow_outputs"][0], arrays["shadow_labels"]
    expected, _ = authors_attack_accuracy(
        conf(s[shadow_member], ys[shadow_member]), conf(s[~shadow_member], ys[~shadow_member]),
        ys[shadow_member], ys[~shadow_member], conf(t[member], y[member]), conf(t[~member], y[~member]),
        y[member], y[~member], 4)
    assert table.loc["confidence", "balanced_accuracy"] == pytest.approx(expected, abs=1e-9)


def test_without_any_references_the_threshold_free_metrics_still_run(classic):
    _, arrays = classic
    table = api_audit(arrays["target_outputs"], arrays["target_membership"], arrays["labels"],
                      attacks=["loss", "entropy", "rmia"]).set_index("attack")
    assert table.loc["loss", "auc"] > 0.6 and np.isnan(table.loc["loss", "balanced_accuracy"])
    assert table.loc["entropy", "auc"] > 0.55 and np.isnan(table.loc["entropy", "balanced_accuracy"])
    assert "population" in table.loc["rmia", "skipped"]


def test_leaked_runs_only_when_named_and_is_labelled(classic):
    _, arrays = classic
    shadow = {k: arrays[k] for k in ("shadow_outputs", "shadow_labels", "shadow_membership")}
    default = api_audit(arrays["target_outputs"], arrays["target_membership"], arrays["labels"], **shadow)
    assert "leaked" not in set(default["attack"])
    named = api_audit(arrays["target_outputs"], arrays["target_membership"], arrays["labels"], **shadow,
                      attacks=["leaked(fraction=0.3)", "confidence(thresholds=global)"]).set_index("attack")
    assert named.loc["leaked(fraction=0.3)", "knowledge"] == "leaked"
    assert named.loc["confidence(thresholds=global)", "knowledge"] == "references"
    assert pd.isna(named.loc["confidence(thresholds=global)"].get("skipped"))


def test_one_reference_model_runs_the_per_example_attacks_without_calibration(tmp_path):
    s = synthetic(n=600, n_models=2, n_classes=3, signal=1.5, seed=4)
    table = api_audit(_probabilities(s.data.target), s.membership.astype(int), s.data.labels,
                      reference_outputs=_probabilities(s.data.references), reference_membership=s.data.reference_keep,
                      attacks=["lira(mode=offline)", "confidence"]).set_index("attack")
    assert "skipped" not in table and table.loc["lira(mode=offline)", "auc"] > 0.6
    assert table.loc["confidence", "learned_on"] == "references"
    with pytest.raises(Exception, match="between 0 and 0"):
        api_audit(_probabilities(s.data.target), s.membership.astype(int), s.data.labels,
                  reference_outputs=_probabilities(s.data.references), reference_membership=s.data.reference_keep,
                  attacks=["loss"], calibration_models=1)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.update(shadow_outputs=a["shadow_outputs"][..., :3]), "array 'shadow_outputs' has shape"),
        (lambda a: a.update(shadow_labels=a["shadow_labels"][:-1]), "array 'shadow_labels' must be [1000]"),
        (lambda a: a.update(shadow_labels=a["shadow_labels"] + 4), "'shadow_labels' must hold integers in [0, 4)"),
        (lambda a: a.update(shadow_membership=a["shadow_membership"] * 2), "'shadow_membership' must hold 0/1"),
        (lambda a: a.update(shadow_membership=np.ones_like(a["shadow_membership"])),
         "shadow_membership[0] must mark both members and non-members"),
        (lambda a: a.update(shadow_membership=a["shadow_membership"][:, :10]), "'shadow_membership' has shape"),
        (lambda a: a.pop("shadow_labels"), "give all of shadow_outputs, shadow_labels, shadow_membership"),
        (lambda a: a.update(reference_membership=a["shadow_membership"]), "give all of reference_outputs"),
    ],
)
def test_bad_shadow_arrays_name_the_array(classic, tmp_path, capsys, change, message):
    _, arrays = classic
    arrays = dict(arrays)
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    assert main(["audit", "--outputs", str(tmp_path / "bad.npz"), "--attacks", "confidence"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("labels, message", [
    ("rmia(a=0.5", "closed by ')'"),
    ("rmia(a=[)", "the value of 'a' is not a number"),
    ("rmia(0.5)", "'0.5' is not key=value"),
    ("rmia(colour=red)", "unknown parameter 'colour'"),
    ("lirra", "unknown attack 'lirra'"),
])
def test_malformed_attack_labels_are_refused_naming_the_label(classic, capsys, labels, message):
    path, _ = classic
    assert main(["audit", "--outputs", str(path), "--attacks", labels]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
