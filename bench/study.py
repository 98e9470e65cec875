"""The drug-discovery study (Krüger et al. 2024), read from the results store.

Four findings of the paper are tested on whatever data the grid ran on, and each is reported as holding or not,
with its numbers and the test that decides it:

1. every representation leaks under LiRA and RMIA: TPR at FPR = 0 above the random-guess baseline;
2. the union of LiRA and RMIA identifies more members than either;
3. members of the minority class are more exposed than those of the majority class;
4. message passing on graphs leaks least.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.rows import LABEL
from privkernel.errors import BenchError

ATTACKS = ("lira", "rmia")
UNION = "union(lira+rmia)@fpr=0"
ALPHA = 0.05


@dataclass(frozen=True)
class Finding:
    """One claim of the paper, whether it holds on this data, and why."""

    claim: str
    holds: bool
    evidence: str
    test: str


@dataclass(frozen=True)
class Study:
    leakage: pd.DataFrame
    per_class: pd.DataFrame
    unions: pd.DataFrame
    utility: pd.DataFrame
    findings: list[Finding]


def random_tpr(n_nonmembers: float, max_fpr: float) -> float:
    """Expected TPR of a random score at FPR ≤ ``max_fpr`` with ``n`` non-members: a member is flagged when it
    outranks all but ⌊α·n⌋ non-members, which happens with probability (⌊α·n⌋ + 1) / (n + 1)."""
    return (np.floor(max_fpr * n_nonmembers + 1e-9) + 1) / (n_nonmembers + 1)


def _settings(rows: pd.DataFrame) -> pd.DataFrame:
    """Add ``representation`` (the featurization) and ``defense_setting`` (the defense's display label, e.g.
    ``dpsgd(epsilon=8.0)``)."""
    rows = rows.copy()
    rows["representation"] = rows["dataset.features"]
    rows["defense_setting"] = rows[f"{LABEL}defense"]
    return rows


def leakage_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per representation × defense × attack: TPR at FPR = 0 and 0.1 %, AUC, the random baseline, and the
    one-sided binomial test of "more members above every non-member than chance", pooled over targets."""
    from scipy.stats import binomtest  # imported here, as in the functions below: scipy.stats costs a second

    out = []
    attack_rows = rows[rows["attack"].isin(ATTACKS + ("loss",)) & rows["auc"].notna()]
    for (rep, defense, attack), g in attack_rows.groupby(["representation", "defense_setting", "attack_key"]):
        baseline = float(np.mean([random_tpr(n, 0.0) for n in g["n_nonmembers"]]))
        flagged = int(np.round(g["tpr_at_fpr_0"] * g["n_members"]).sum())
        test = binomtest(flagged, int(g["n_members"].sum()), baseline, alternative="greater")
        out.append({
            "representation": rep, "defense": defense, "attack": attack, "targets": len(g),
            "tpr_at_fpr_0": g["tpr_at_fpr_0"].mean(), "tpr_at_fpr_0.1pct": g["tpr_at_fpr_0.1pct"].mean(),
            "random_tpr_at_fpr_0": baseline, "auc": g["auc"].mean(), "members_flagged": flagged,
            "p_value": test.pvalue,
        })
    return pd.DataFrame(out)


def per_class_table(rows: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """Per undefended cell, target and attack: the TPR at FPR = 0 (threshold above every non-member) among the
    members of the minority class and of the majority class."""
    undefended = rows[(rows["defense"] == "none") & rows["attack"].isin(ATTACKS)]
    keys = undefended[["cell_key", "attack_key", "target", "representation"]].drop_duplicates()
    merged = samples.merge(keys, on=["cell_key", "attack_key", "target"])
    out = []
    for (cell, attack, target, rep), g in merged.groupby(["cell_key", "attack_key", "target", "representation"]):
        counts = g["label"].value_counts()
        minority, majority = counts.idxmin(), counts.idxmax()
        flagged = g["score"] > g.loc[~g["member"], "score"].max()
        row = {"cell_key": cell, "attack": attack, "target": target, "representation": rep}
        for name, cls in (("minority", minority), ("majority", majority)):
            members = g["member"] & (g["label"] == cls)
            row[f"{name}_class"] = cls
            row[f"{name}_tpr_at_fpr_0"] = flagged[members].mean() if members.any() else np.nan
        out.append(row)
    return pd.DataFrame(out)


def union_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per undefended target: members flagged at FPR = 0 by LiRA, by RMIA, by both and by their union."""
    u = rows[(rows["attack_key"] == UNION) & (rows["defense"] == "none")]
    return u[["representation", "target", "oracle_tpr.lira", "oracle_tpr.rmia", "oracle_overlap_tpr",
              "oracle_union_tpr", "oracle_union_fpr", "union_tpr", "union_fpr"]].reset_index(drop=True)


def utility_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy and ROC-AUC per representation and defense (mean over targets)."""
    per_target = rows.drop_duplicates(["cell_key", "target"])
    return (per_target.groupby(["representation", "defense_setting"])[["test_accuracy", "test_roc_auc"]]
            .mean().reset_index())


def _finding_leakage(leakage: pd.DataFrame) -> Finding:
    undefended = leakage[(leakage["defense"] == "none") & leakage["attack"].isin(ATTACKS)]
    significant = undefended["p_value"] < ALPHA
    failing = [f"{rep} / {attack}" for rep, attack in undefended.loc[~significant, ["representation", "attack"]]
               .itertuples(index=False)]
    return Finding(
        "Every representation leaks significantly under LiRA and RMIA (TPR at FPR = 0 above random guessing).",
        bool(len(undefended) and significant.all()),
        f"{int(significant.sum())} of {len(undefended)} (representation, attack) pairs beat the random baseline"
        + (f"; not significant: {', '.join(failing)}" if failing else ""),
        f"one-sided binomial test per pair, members above every non-member pooled over targets vs (⌊α·n⌋+1)/(n+1),"
        f" α = {ALPHA}",
    )


def _finding_union(unions: pd.DataFrame) -> Finding:
    best_single = unions[["oracle_tpr.lira", "oracle_tpr.rmia"]].max(axis=1)
    strictly_more = (unions["oracle_union_tpr"] > best_single + 1e-12)
    holds = bool(len(unions) and unions["oracle_union_tpr"].mean() > best_single.mean()
                 and strictly_more.mean() >= 0.5)
    return Finding(
        "The union of LiRA and RMIA identifies more members than either attack alone.",
        holds,
        f"mean TPR at FPR = 0: union {unions['oracle_union_tpr'].mean():.4f} vs the better single attack "
        f"{best_single.mean():.4f} (LiRA {unions['oracle_tpr.lira'].mean():.4f}, RMIA "
        f"{unions['oracle_tpr.rmia'].mean():.4f}, both {unions['oracle_overlap_tpr'].mean():.4f}); the union "
        f"flags strictly more in {int(strictly_more.sum())} of {len(unions)} targets",
        "holds when the union's mean exceeds the better attack's and it adds members in at least half the targets",
    )


def _finding_minority(per_class: pd.DataFrame) -> Finding:
    from scipy.stats import wilcoxon

    pairs = per_class.dropna(subset=["minority_tpr_at_fpr_0", "majority_tpr_at_fpr_0"])
    diff = pairs["minority_tpr_at_fpr_0"] - pairs["majority_tpr_at_fpr_0"]
    p = wilcoxon(diff, alternative="greater").pvalue if (diff != 0).any() else 1.0
    return Finding(
        "Molecules of the minority class are more exposed than those of the majority class.",
        bool(diff.mean() > 0 and p < ALPHA),
        f"TPR at FPR = 0, minority {pairs['minority_tpr_at_fpr_0'].mean():.4f} vs majority "
        f"{pairs['majority_tpr_at_fpr_0'].mean():.4f} over {len(pairs)} (representation, attack, target) audits; "
        f"p = {p:.3g}",
        f"one-sided Wilcoxon signed-rank test of minority − majority, paired per audit, α = {ALPHA}",
    )


def _finding_graph(rows: pd.DataFrame) -> Finding:
    from scipy.stats import mannwhitneyu

    undefended = rows[(rows["defense"] == "none") & rows["attack"].isin(ATTACKS)]
    strongest = undefended.groupby(["representation", "target"])["auc"].max().reset_index()
    means = strongest.groupby("representation")["auc"].mean().sort_values()
    if "graph" not in means.index or len(means) < 2:
        return Finding("Message passing on graphs leaks least.", False,
                       "the store has no undefended graph cell beside fingerprint cells", "not testable")
    graph = strongest.loc[strongest["representation"] == "graph", "auc"]
    pvalues = {
        rep: mannwhitneyu(graph, strongest.loc[strongest["representation"] == rep, "auc"], alternative="less").pvalue
        for rep in means.index if rep != "graph"
    }
    holds = means.index[0] == "graph" and max(pvalues.values()) < ALPHA
    ranking = ", ".join(f"{rep} {auc:.3f}" for rep, auc in means.items())
    return Finding(
        "Message passing on graphs leaks least.",
        bool(holds),
        f"AUC of the strongest of LiRA/RMIA, mean over targets: {ranking}; graph < each other representation: "
        + ", ".join(f"{rep} p = {p:.3g}" for rep, p in pvalues.items()),
        f"one-sided Mann–Whitney U test of per-target AUCs, graph vs each fingerprint, α = {ALPHA}",
    )


def molecule_study(rows: pd.DataFrame, samples: pd.DataFrame) -> Study:
    """The study's tables and findings from store rows and samples of a molecules grid."""
    if rows.empty:
        raise BenchError("the store has no rows of this grid; run it first (`python -m bench report molecules`)")
    if "dataset.features" not in rows:
        raise BenchError("the molecule study needs a molecular dataset with a `features` parameter")
    if f"{LABEL}defense" not in rows:
        raise BenchError(f"the store lacks the column {LABEL}defense; rerun the grid "
                         "(`python -m bench report molecules`)")
    rows = _settings(rows)
    leakage = leakage_table(rows)
    per_class = per_class_table(rows, samples)
    unions = union_table(rows)
    findings = [_finding_leakage(leakage), _finding_union(unions), _finding_minority(per_class), _finding_graph(rows)]
    return Study(leakage, per_class, unions, utility_table(rows), findings)


def markdown_table(df: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub Markdown table of ``df`` (numbers rounded)."""
    def cell(v: object) -> str:
        if isinstance(v, float):
            return "" if np.isnan(v) else (f"{v:.2e}" if 0 < abs(v) < 10**-digits else f"{v:.{digits}f}")
        return str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def write_report(study: Study, out: Path, title: str) -> Path:
    """Write ``REPORT.md`` and its plots (PNG and SVG) into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    undefended = study.leakage[study.leakage["defense"] == "none"]
    pivot = undefended.pivot_table(index="representation", columns="attack", values="tpr_at_fpr_0")
    union = study.unions.groupby("representation")["oracle_union_tpr"].mean()
    pivot["union(lira+rmia)"] = union
    baseline = undefended.groupby("representation")["random_tpr_at_fpr_0"].mean()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    pivot.plot.bar(ax=ax, rot=0)
    for i, rep in enumerate(pivot.index):
        ax.hlines(baseline[rep], i - 0.4, i + 0.4, colors="black", linestyles="--",
                  label="random guess" if i == 0 else None)
    ax.set_ylabel("TPR at FPR = 0 (mean over targets)")
    ax.set_xlabel("molecular representation (undefended)")
    ax.set_title("Members identified with no false positive")
    ax.legend()
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out / f"tpr_at_fpr0_by_representation.{ext}", dpi=120)
    plt.close(fig)

    classes = study.per_class.groupby("representation")[["minority_tpr_at_fpr_0", "majority_tpr_at_fpr_0"]].mean()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    classes.rename(columns={"minority_tpr_at_fpr_0": "minority class", "majority_tpr_at_fpr_0": "majority class"}
                   ).plot.bar(ax=ax, rot=0, color=["tab:red", "tab:gray"])
    ax.set_ylabel("TPR at FPR = 0 (LiRA and RMIA, mean)")
    ax.set_xlabel("molecular representation (undefended)")
    ax.set_title("Exposure of minority- and majority-class molecules")
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out / f"per_class_exposure.{ext}", dpi=120)
    plt.close(fig)

    lines = [f"# {title}", "", "Generated by `python -m bench report molecules` from the results store.", "",
             "## Findings", ""]
    for f in study.findings:
        lines += [f"- **{'Holds' if f.holds else 'Does not hold'}** — {f.claim} {f.evidence}. *Test:* {f.test}."]
    per_class = study.per_class.groupby(["representation", "attack"])[
        ["minority_tpr_at_fpr_0", "majority_tpr_at_fpr_0"]].mean().reset_index()
    unions = study.unions.groupby("representation").mean(numeric_only=True).drop(columns="target").reset_index()
    lines += [
        "", "## Leakage per representation and defense", "",
        "TPR at FPR = 0 reads the members scored strictly above every non-member of the target; with n non-members "
        "a random score reaches (⌊α·n⌋+1)/(n+1) (`random_tpr_at_fpr_0`). TPR at 0.1 % equals TPR at 0 when "
        "n < 1,000.", "", markdown_table(study.leakage), "",
        "![TPR at FPR = 0](tpr_at_fpr0_by_representation.png)", "",
        "## Minority vs majority class (undefended)", "", markdown_table(per_class), "",
        "![per-class exposure](per_class_exposure.png)", "",
        "## Union of LiRA and RMIA at FPR = 0 (undefended, mean over targets)", "",
        "`oracle_*`: thresholds set on the target's own non-members (the paper's reading); `union_tpr`/`union_fpr`: "
        "thresholds chosen on reference models, the union's FPR measured on the target.", "",
        markdown_table(unions), "",
        "## Utility", "", markdown_table(study.utility), "",
    ]
    report = out / "REPORT.md"
    report.write_text("\n".join(lines))
    return report
