"""The molecule study's tables and findings on a hand-made store whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.study import markdown_table, molecule_study, random_tpr, write_report

REPS = {"ecfp4": (0.2, 0.70), "graph": (0.0, 0.55)}  # TPR at FPR = 0, AUC per representation
TARGETS = range(6)


def fake_store():
    rows, samples = [], []
    rng = np.random.default_rng(0)
    for rep, (tpr, auc) in REPS.items():
        cell_key = f"cell-{rep}"
        base = {"cell_key": cell_key, "cell": f"{rep} cell (display only)", "label.defense": "none",
                "dataset.features": rep,
                "defense": "none", "n_members": 100, "n_nonmembers": 100, "test_accuracy": 0.8, "test_roc_auc": 0.7}
        for t in TARGETS:
            for attack in ("lira", "rmia"):
                rows.append({**base, "attack": attack, "attack_key": attack, "target": t, "tpr_at_fpr_0": tpr,
                             "tpr_at_fpr_0.1pct": tpr, "auc": auc + 0.01 * t})
                # 14 majority (label 0), 6 minority (label 1); minority members outrank every non-member
                labels = np.r_[np.zeros(14), np.ones(6)]
                member = np.r_[np.arange(14) % 2 == 0, np.arange(6) % 2 == 0]
                score = np.where(member & (labels == 1), 10.0, rng.uniform(0, 1, 20))
                samples.append(pd.DataFrame({"cell_key": cell_key, "attack_key": attack, "target": t,
                                             "record": np.arange(20), "label": labels, "member": member,
                                             "score": score}))
            rows.append({**base, "attack": "union", "attack_key": "union(lira+rmia)@fpr=0", "target": t,
                         "auc": np.nan, "oracle_tpr.lira": tpr, "oracle_tpr.rmia": tpr / 2,
                         "oracle_overlap_tpr": tpr / 4, "oracle_union_tpr": tpr * 1.25, "oracle_union_fpr": 0.0,
                         "union_tpr": tpr, "union_fpr": 0.01})
    return pd.DataFrame(rows), pd.concat(samples, ignore_index=True)


def test_random_baseline_closed_form():
    assert random_tpr(9, 0.0) == pytest.approx(0.1)
    assert random_tpr(10, 0.1) == pytest.approx(2 / 11)  # one non-member may outrank it
    assert random_tpr(999, 0.001) == pytest.approx(1 / 1000)  # 0.1 % of 999 non-members is less than one
    assert random_tpr(1000, 0.001) == pytest.approx(2 / 1001)


def test_findings_on_a_store_with_known_answers(tmp_path):
    rows, samples = fake_store()
    study = molecule_study(rows, samples)
    assert set(study.leakage["defense"]) == {"none"}  # the store's label.defense, never the display-only cell label
    leak = study.leakage.set_index(["representation", "attack"])
    assert leak.loc[("ecfp4", "lira"), "p_value"] < 1e-10  # 120 of 600 members vs 1/101 expected
    assert leak.loc[("graph", "lira"), "p_value"] == 1.0
    assert leak.loc[("ecfp4", "lira"), "random_tpr_at_fpr_0"] == pytest.approx(1 / 101)
    leaks, union, minority, graph = study.findings
    assert not leaks.holds and "graph / lira" in leaks.evidence  # the graph model does not leak here
    assert union.holds and "strictly more in 6 of 12 targets" in union.evidence  # graph flags none
    assert minority.holds
    assert (study.per_class["minority_tpr_at_fpr_0"] == 1.0).all()
    assert graph.holds and graph.evidence.startswith("AUC of the strongest of LiRA/RMIA, mean over targets: graph")
    report = write_report(study, tmp_path, "Test study")
    text = report.read_text()
    assert text.count("**Holds**") == 3 and text.count("**Does not hold**") == 1
    assert (tmp_path / "tpr_at_fpr0_by_representation.png").stat().st_size > 1000


def test_every_representation_leaking_is_reported():
    rows, samples = fake_store()
    rows.loc[rows["dataset.features"] == "graph", "tpr_at_fpr_0"] = 0.2
    leaks = molecule_study(rows, samples).findings[0]
    assert leaks.holds and leaks.evidence == "4 of 4 (representation, attack) pairs beat the random baseline"


def test_graph_finding_fails_when_graph_leaks_most():
    rows, samples = fake_store()
    rows.loc[rows["dataset.features"] == "graph", "auc"] = 0.9
    assert not molecule_study(rows, samples).findings[3].holds


def test_markdown_table():
    text = markdown_table(pd.DataFrame({"a": ["x"], "b": [0.5]}))
    assert text.splitlines() == ["| a | b |", "|---|---|", "| x | 0.5000 |"]
