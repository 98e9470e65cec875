"""The one-model privacy report (bench/model_report.py): from a cell of the hand-made store and from an outputs
file of `bench audit`; K = round(TPR × members audited), Clopper–Pearson intervals, minority classes flagged, the
riskiest records by index only, DP-SGD reference points, a summary that does not overclaim, and the CLI's errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from bench.audit import audit_table, outputs_audit
from bench.cli import build_parser, main
from bench.metrics import clopper_pearson
from bench.model_report import LEVELS, build_report, exposure, from_outputs, from_store, records
from tests.test_leaderboard import SETTINGS, make_store

DPSGD = ("mlp", {"width": 64}, "dpsgd", {"epsilon": 8.0}, 0.88, SETTINGS[1][5], 8.0)
#: A value no record has, placed in the features of the outputs file: it must never reach the report.
SECRET = 987654.125


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report") / "results"
    make_store(folder, settings=[SETTINGS[0], DPSGD], seeds=(0, 1))
    return folder


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """A target that leaks: members get a higher probability of their class; four reference models alike."""
    rng = np.random.default_rng(0)
    n, classes, references = 300, 3, 4
    labels = rng.choice(classes, size=n, p=[0.1, 0.45, 0.45])  # class 0: a minority
    membership = np.zeros((references + 1, n), dtype=int)
    for row in membership:
        row[rng.permutation(n)[: n // 2]] = 1
    logits = rng.normal(size=(references + 1, n, classes))
    logits[np.arange(references + 1)[:, None], np.arange(n), labels] += 1.0 + 2.0 * membership
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    arrays = dict(target_outputs=probs[0], target_membership=membership[0], labels=labels,
                  reference_outputs=probs[1:], reference_membership=membership[1:],
                  population_target_outputs=probs[0, :20], population_reference_outputs=probs[1:, :20],
                  population_labels=labels[:20], features=np.full((n, 2), SECRET),
                  population_features=np.full((20, 2), SECRET))
    path = tmp_path_factory.mktemp("outputs") / "model.npz"
    np.savez(path, **arrays)
    return path, arrays


def test_a_cell_report_counts_records_as_round_tpr_times_members(store, tmp_path, capsys):
    assert main(["report", "model", "--results", str(store), "--cell", "mlp / none / seed=0",
                 "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    audit = from_store(store, "mlp / none / seed=0")
    table = exposure(audit.rows)
    report = build_report(audit)
    best = table[table["attack"] == report.strongest].iloc[0]
    assert report.strongest == "lira" and report.selection == "calibration"
    assert report.members == 20 == best["members"]
    for metric, _ in LEVELS:
        assert report.identified[metric] == round(best[metric] * 20) == records(best[metric], 20)
    # pooled over the two targets: members flagged are round(TPR × 20) of each, out of 40
    rows = audit.rows[audit.rows["attack_key"] == "lira"]
    flagged = np.round(rows["tpr_at_fpr_0.1pct"] * rows["n_members"]).sum()
    low, high = clopper_pearson(np.array([flagged]), np.array([40.0]))
    assert (best["tpr_at_fpr_0.1pct_cp_low"], best["tpr_at_fpr_0.1pct_cp_high"]) == pytest.approx((low[0], high[0]))
    k = report.identified["tpr_at_fpr_0.1pct"]
    assert f"identifies about **{k}** at a false-positive rate of 0.1 %" in report.markdown
    assert f"identifies about {k} of 20 training records" in out
    for name in ("REPORT.md", "report.html", "roc.svg", "per_class.svg"):
        assert (tmp_path / "r" / name).is_file(), name


def test_the_report_flags_minorities_lists_indices_and_does_not_overclaim(store):
    report = build_report(from_store(store, "mlp / none / seed=0"))
    md = report.markdown
    minority = re.search(r"^\| 0 \| 12 \| 30\.0 % \| \*\*minority\*\* \|", md, re.MULTILINE)
    assert minority, "class 0 (12 of 40 records) is flagged"
    riskiest = md.split("## The riskiest records")[1].split("##")[0]
    indices = [int(line.split("|")[1]) for line in riskiest.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert len(indices) == 10 and all(0 <= i < 40 for i in indices)
    assert "lower bounds on what the model leaks, not proofs of safety" in md
    assert "not that the model is private" in md
    for overclaim in ("is private.", "is safe", "guarantees privacy", "no leakage"):
        assert overclaim not in md.split("## Summary")[1].split("##")[0].replace("not that the model is private.", "")


def test_dp_sgd_cells_of_the_same_recipe_are_reference_points(store):
    audit = from_store(store, "mlp / none / seed=0")
    assert sorted(audit.references["defense"]) == ["dpsgd(epsilon=8.0)", "none"]
    md = build_report(audit).markdown
    section = md.split("## DP-SGD of the same recipe")[1]
    assert "| dpsgd(epsilon=8.0) | 0.880 [" in section and "| 8.00 |" in section
    # a DP cell's report states the accountant's ε beside the empirical bound
    dp = build_report(from_store(store, "dpsgd(epsilon=8.0) / seed=1")).markdown
    assert "The DP accountant guarantees ε = 8.00" in dp


def test_an_outputs_file_report_uses_the_audit_table(outputs, tmp_path, capsys):
    path, arrays = outputs
    attacks = "loss,lira,privacy_risk"
    assert main(["report", "model", "--outputs", str(path), "--attacks", attacks, "--out", str(tmp_path)]) == 0
    expected = audit_table(outputs_audit(arrays), attacks.split(","))
    audit = from_outputs(path, attacks=attacks.split(","))
    report = build_report(audit)
    row = expected[expected["attack"] == report.strongest].iloc[0]
    members = int(arrays["target_membership"].sum())
    assert report.members == members
    for metric, _ in LEVELS:
        assert report.identified[metric] == round(row[metric] * members)
    md = (tmp_path / "REPORT.md").read_text(encoding="utf-8")
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert f"identifies about **{report.identified['tpr_at_fpr_0.1pct']}** at" in md
    assert "![ROC curves on log–log axes](roc.svg)" in md and "![Per-class exposure](per_class.svg)" in md
    # the riskiest records are target members, named by index only; no record content anywhere
    riskiest = md.split("## The riskiest records")[1].split("##")[0]
    indices = [int(line.split("|")[1]) for line in riskiest.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert len(indices) == 10 and all(arrays["target_membership"][i] == 1 for i in indices)
    for text in (md, html):
        assert str(SECRET) not in text and "987654" not in text
    assert "Minority class 0" in md
    assert "No DP-SGD model of the same recipe" in md
    # one self-contained page: styles and figures inline, nothing loaded from elsewhere
    assert html.count("<svg") == 2 and "<link" not in html and "src=\"http" not in html
    assert "identifies about" in capsys.readouterr().out


def test_bad_requests_are_one_line_exit_2(store, outputs, tmp_path, capsys):
    assert main(["report", "model", "--results", str(store)]) == 2
    assert "needs one of --cell" in capsys.readouterr().err
    assert main(["report", "model", "--results", str(store), "--cell", "x", "--outputs", str(outputs[0])]) == 2
    capsys.readouterr()
    assert main(["report", "model", "--results", str(store), "--cell", "mlp / none"]) == 2
    assert "matches 2 cells" in capsys.readouterr().err
    assert main(["report", "model", "--results", str(store), "--cell", "no such cell"]) == 2
    assert "matches no cell" in capsys.readouterr().err


def test_report_molecules_keeps_its_default_grid():
    args = build_parser().parse_args(["report", "molecules"])
    assert args.study == "molecules" and args.grid is None  # cmd_report reads `molecules` then
    assert build_parser().parse_args(["report", "model", "--cell", "x"]).study == "model"
