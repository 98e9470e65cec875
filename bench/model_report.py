"""A one-model privacy report: what the attacks found about one model, in numbers and in records.

``python -m bench report model`` writes ``REPORT.md`` and a self-contained ``report.html`` for one model, from a
grid cell of a results store (``--cell``: its target models) or from the arrays ``bench audit`` reads
(``--outputs``). It gives:

- the attacks' TPR at 0, 0.1 % and 1 % FPR, strongest first, with 95 % Clopper–Pearson intervals on the members
  flagged (pooled over the target models of a cell), and what that means in records: at 0.1 % FPR an attacker
  identifies about K = round(TPR × N) of the N training records audited;
- per-class exposure of the strongest attack, minority classes flagged (:func:`bench.metrics.per_class_metrics`);
- the riskiest records' indices, never their content;
- the empirical ε lower bound, beside the accountant's ε of a DP-trained cell;
- from a store, the DP-SGD settings of the same recipe (dataset, architecture, training and protocol options) as
  reference points;
- a summary paragraph in plain language that says what the numbers can and cannot show: an attack's success is a
  lower bound on what leaks, and an attack's failure no proof of safety.

The strongest attack is chosen as :func:`bench.leaderboard.choose_strongest` chooses it: on calibration audits
(reference models audited in the target's place) where they exist, so that the reported TPR is not the maximum of
noisy target audits; otherwise on the target itself, and the report says that this choice is biased upward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.leaderboard import (
    NAIVE,
    OUTSIDER,
    PRIVACY,
    UNDEFENDED,
    UTILITY_NAMES,
    attack_rows,
    attack_summary,
    build_leaderboard,
    choose_strongest,
    model_rows,
    threat_mask,
    utility_column,
)
from bench.metrics import FPR_LEVELS, MINORITY_SHARE, clopper_pearson
from bench.plots import per_class_figure, per_class_series, riskiest_records, roc_figure, slug
from bench.settings import format_value
from bench.site import inline_svg, markdown_html, page, svg_text
from bench.study import random_tpr
from privkernel.errors import BenchError

#: How many riskiest records the report lists.
RISKIEST = 10
#: Names of the report's files.
MARKDOWN, HTML = "REPORT.md", "report.html"
#: The TPR levels of the report, in order: (store column, FPR in words).
LEVELS = (("tpr_at_fpr_0", "0 % FPR"), (PRIVACY, "0.1 % FPR"), ("tpr_at_fpr_1pct", "1 % FPR"))
DP_DEFENSE = "dpsgd"


@dataclass(frozen=True)
class ModelAudit:
    """What a one-model report reads.

    Attributes
    ----------
    title
        The model's name in the report (a cell label, or the outputs file's name).
    source
        Where the numbers come from, in words.
    rows
        One row per attack and target model: the store's columns ``attack_key``, ``tpr_at_fpr_*``, ``auc``,
        ``n_members``, ``n_nonmembers``, ``epsilon_lower_bound`` and the calibration metrics (an audit table's rows
        with ``attack_key`` = ``attack`` serve as well).
    samples
        Per-record scores of the attacks the figures and tables need (the store's ``samples`` columns).
    utility
        ``(metric, mean over the targets)`` of the model, or None where it is unknown.
    epsilon
        The DP accountant's ε of the training (NaN for a model not trained with DP).
    references
        Leaderboard rows of the setting itself and of the DP-SGD settings of the same recipe, or None.
    notes
        Sentences about the audit that the report repeats (how the targets were trained, what was not run).
    """

    title: str
    source: str
    rows: pd.DataFrame
    samples: pd.DataFrame
    utility: tuple[str, float] | None
    epsilon: float
    references: pd.DataFrame | None
    notes: tuple[str, ...] = ()


# --- the numbers -------------------------------------------------------------------------------------------------


def exposure(rows: pd.DataFrame) -> pd.DataFrame:
    """Per attack: :func:`bench.leaderboard.attack_summary` (means over the target models) and, at each FPR of
    :data:`LEVELS`, the members flagged over all targets with their 95 % Clopper–Pearson interval.

    Columns beyond ``attack_summary``'s: ``members`` (training records audited per target, the mean over the
    targets), ``nonmembers`` (likewise), ``targets``, and per level ``<level>_flagged`` (members flagged, summed
    over the targets: ``round(TPR × n_members)`` of each), ``<level>_audited`` (members audited, summed),
    ``<level>_cp_low`` / ``<level>_cp_high`` (the interval of the TPR). Sorted strongest first by mean TPR at
    0.1 % FPR, then AUC, then name.
    """
    scored = attack_rows(rows)
    summary = attack_summary(scored)
    by_attack = scored.groupby("attack_key", sort=True)
    members = by_attack["n_members"].mean()
    summary["members"] = summary["attack"].map(members).to_numpy(dtype=float)
    summary["nonmembers"] = summary["attack"].map(by_attack["n_nonmembers"].mean()).to_numpy(dtype=float)
    summary["targets"] = summary["attack"].map(by_attack["target"].nunique()).to_numpy(dtype=int)
    audited = by_attack["n_members"].sum().astype(float)
    for metric, _ in LEVELS:
        flagged = np.round(scored[metric] * scored["n_members"]).groupby(scored["attack_key"]).sum()
        summary[f"{metric}_flagged"] = summary["attack"].map(flagged).to_numpy(dtype=float)
        summary[f"{metric}_audited"] = summary["attack"].map(audited).to_numpy(dtype=float)
        low, high = clopper_pearson(summary[f"{metric}_flagged"], summary[f"{metric}_audited"])
        summary[f"{metric}_cp_low"], summary[f"{metric}_cp_high"] = low, high
    return summary.sort_values([PRIVACY, "auc", "attack"], ascending=[False, False, True], ignore_index=True)


def records(tpr: float, members: float) -> int:
    """About how many of ``members`` training records an attack with this TPR identifies: round(TPR × members)."""
    return int(round(tpr * members)) if np.isfinite(tpr) and np.isfinite(members) else 0


def unresolved(level: float, nonmembers: float) -> bool:
    """Whether an audit on ``nonmembers`` non-members cannot resolve an FPR of ``level`` (the leaderboard's †)."""
    return bool(level > 0 and np.isfinite(nonmembers) and nonmembers > 0 and 1 / nonmembers > level)


# --- from a store or from arrays ------------------------------------------------------------------------------


def from_store(results: Path | str, cell: str, grid: str | None = None) -> ModelAudit:
    """The report's input from one cell of a store: ``cell`` is a ``--cells`` filter
    (:func:`bench.settings.filter_cells`) that must select exactly one cell."""
    from bench.leaderboard import read_rows
    from bench.settings import filter_cells
    from bench.store import read_samples

    everything = read_rows(results, grid=grid)
    chosen = filter_cells(everything, cell)
    keys = chosen.drop_duplicates("cell_key")
    if len(keys) > 1:
        shown = "; ".join(f"{r['cell']}" + (f" [{r['options']}]" if r["options"] else "")
                          for _, r in keys.head(6).iterrows())
        raise BenchError(f"--cell {cell!r} matches {len(keys)} cells ({shown}{'; ...' if len(keys) > 6 else ''}); "
                         "a report is about one model: give more of the cell's label, e.g. its defense and seed")
    key = keys["cell_key"].iloc[0]
    rows = everything[everything["cell_key"] == key]
    outsider = rows[threat_mask(rows, *OUTSIDER)]
    try:
        samples = read_samples(results, key)
    except BenchError:  # a store without per-record samples
        samples = pd.DataFrame(columns=["cell_key", "attack_key", "target", "record", "label", "member", "score"])
    samples = samples[samples["attack_key"].isin(set(outsider["attack_key"]))]
    column = utility_column(rows)
    models = model_rows(rows)
    utility = (column, float(models[column].mean())) if column else None
    epsilon = float(rows["fact.epsilon"].mean()) if "fact.epsilon" in rows and rows["fact.epsilon"].notna().any() \
        else float("nan")
    first = rows.iloc[0]
    notes = [f"{rows['target'].nunique()} target models of the cell were audited (each trained like the model you "
             f"would release, on its own random half of the audited pool), each against "
             f"{int(first['n_models']) - 1} reference models trained the same way."]
    return ModelAudit(title=str(first["cell"]), source=f"cell `{first['cell']}` (key {key}) of the store {results}",
                      rows=outsider, samples=samples, utility=utility, epsilon=epsilon,
                      references=dp_references(everything, first), notes=tuple(notes))


def dp_references(rows: pd.DataFrame, cell: pd.Series) -> pd.DataFrame | None:
    """Leaderboard rows of ``cell``'s own setting and of the DP-SGD settings of the same recipe: the same dataset,
    architecture and training and protocol options; None when the store has no such DP-SGD setting."""
    same = rows[(rows["dataset"] == cell["dataset"]) & (rows["architecture"] == cell["architecture"])
                & (rows["options"] == cell["options"])]
    if not (same["defense_name"] == DP_DEFENSE).any():
        return None
    board = build_leaderboard(same)
    keep = (board["defense_name"] == DP_DEFENSE) | (board["setting"] == cell["setting"]) | \
        (board["defense_name"] == UNDEFENDED)
    return board[keep].reset_index(drop=True)


def from_outputs(path: Path | str, *, logits: bool = False, attacks: Sequence[str] | None = None,
                 calibration: int | None = None) -> ModelAudit:
    """The report's input from an outputs file of ``bench audit`` (:func:`bench.audit.load_outputs`): the audit
    table of every attack (:func:`bench.audit.audit_table`), and the per-record scores of the strongest attack,
    computed again for the ROC curve and the per-class and record tables."""
    from bench.audit import (
        audit_table,
        calibration_models,
        default_calibration,
        load_outputs,
        score_target,
    )
    from bench.spec import parse_label
    from privkernel.registry import ATTACKS

    audit = load_outputs(str(path), logits=logits)
    table = audit_table(audit, attacks, calibration)
    table = table[table["knowledge"] == OUTSIDER[1]] if "knowledge" in table else table
    rows = table.assign(attack_key=table["attack"], target=0)
    summary = attack_summary(attack_rows(rows))
    best, _ = choose_strongest(summary)
    if best is None:
        raise BenchError(f"no attack could run on {path}; see `python -m bench audit --outputs {path}` for why")
    label = str(best["attack"])
    k = default_calibration(audit.n_models - 1) if calibration is None else calibration
    scores = score_target(parse_label(label, ATTACKS), audit, 0, calibration_models(audit.n_models, 0, k))
    n = audit.keep.shape[1]
    samples = pd.DataFrame({
        "cell_key": str(path), "attack_key": label, "target": 0, "record": np.arange(n),
        "label": np.asarray(audit.labels, dtype=np.float64), "member": audit.keep[0], "score": scores["target"],
    })[scores.get("evaluated", np.ones(n, dtype=bool))]
    skipped = table[table["skipped"].notna()] if "skipped" in table else table.iloc[0:0]
    notes = [f"One target model, audited against {audit.n_models - 1} reference models"
             + (" and shadow models" if "shadow_outputs" in audit.shared else "") + " given in the file."]
    if len(skipped):
        notes.append("Not run on these outputs: " + "; ".join(f"`{r['attack']}` ({r['skipped']})"
                                                           for _, r in skipped.iterrows()) + ".")
    return ModelAudit(title=f"the model of {Path(path).name}", source=f"the outputs file {path}", rows=rows,
                      samples=samples.reset_index(drop=True), utility=None, epsilon=float("nan"),
                      references=None, notes=tuple(notes))


# --- the report --------------------------------------------------------------------------------------------------


def _pct(value: float, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f} %" if np.isfinite(value) else "–"


def _num(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if np.isfinite(value) else "–"


def _table(header: list[str], entries: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(str(c).replace("|", "\\|") for c in entry) + " |" for entry in entries]]


@dataclass(frozen=True)
class Report:
    """A written report: its Markdown, its HTML, and the numbers the summary states (for tests and callers)."""

    markdown: str
    html: str
    strongest: str
    selection: str
    members: int
    identified: dict[str, int]


def _strongest(table: pd.DataFrame, audit: ModelAudit) -> tuple[pd.Series, str]:
    """The row of :func:`exposure`'s ``table`` of the strongest attack (:func:`choose_strongest`) and the rule."""
    best, rule = choose_strongest(table)
    if best is None:
        raise BenchError(f"no attack of {audit.source} has metrics; nothing to report")
    return best, rule


def summary_paragraph(best: pd.Series, rule: str, audit: ModelAudit, epsilon_bound: float,
                      per_class: pd.DataFrame | None) -> str:
    """The plain-language summary, two paragraphs of Markdown: what the strongest attack achieves in records,
    against random guessing, by class and in ε; then what these numbers do not show."""
    n, n_out = best["members"], best["nonmembers"]
    k = records(best[PRIVACY], n)
    low, high = records(best[f"{PRIVACY}_cp_low"], n), records(best[f"{PRIVACY}_cp_high"], n)
    chance = random_tpr(n_out, FPR_LEVELS[PRIVACY])
    guess = chance * n
    wrong = int(np.floor(FPR_LEVELS[PRIVACY] * n_out + 1e-9))
    text = (f"Of the {int(round(n))} training records audited, the strongest attack tried ({best['attack']}) "
            f"identifies about **{k}** at a false-positive rate of 0.1 % (95 % interval {low} to {high}), "
            + (f"while wrongly flagging at most {wrong}" if wrong else "without wrongly flagging any")
            + f" of the {int(round(n_out))} audited records the model did not train on; random guessing at that "
            f"rate would flag about {guess:.1f} members. ")
    k0 = records(best["tpr_at_fpr_0"], n)
    if wrong:
        text += (f"With no false positive at all it identifies about {k0}. " if k0 else
                 "With no false positive at all it identifies none. ")
    if best[f"{PRIVACY}_cp_low"] > chance:
        text += ("That is more than guessing explains (the interval lies above the random rate): the model's outputs "
                 "give away the membership of some of its training records. ")
    else:
        text += ("At this rate the audit cannot tell the attack from guessing (its interval reaches the random "
                 "rate). ")
    if unresolved(FPR_LEVELS[PRIVACY], n_out):
        text += (f"With {int(round(n_out))} non-members the audit cannot resolve an FPR of 0.1 %: the TPR there is "
                 "the TPR at FPR = 0. ")
    if per_class is not None and per_class["minority"].any() and not per_class["minority"].all():
        worst = per_class[per_class["minority"]].sort_values("auc", ascending=False).iloc[0]
        others = per_class.loc[~per_class["minority"], "auc"].mean()
        text += (f"Minority class {format_value(worst['label'])} ({_pct(worst['share'])} of the records) is "
                 f"attacked with AUC {_num(worst['auc'])}, against {_num(others)} on average for the other "
                 "classes. ")
    if np.isfinite(epsilon_bound) and epsilon_bound > 0:
        text += (f"The attacks prove an empirical ε of at least {epsilon_bound:.2f} (δ = 1e-5, 95 % confidence): "
                 "no differential-privacy guarantee with a smaller ε can hold for this training. ")
    if np.isfinite(audit.epsilon):
        text += f"The DP accountant guarantees ε = {audit.epsilon:.2f}, an upper bound on what any attack can prove. "
    if rule == NAIVE:
        text += ("The strongest attack was chosen on this model's own audit (no calibration audits were available), "
                 "which overstates its TPR somewhat. ")
    caveat = ("These numbers are lower bounds on what the model leaks, not proofs of safety: they measure what these "
              "attacks achieve with this attacker's knowledge, and a stronger attack, more reference models or an "
              "attacker who knows more may identify more records. A low number means these attacks found little, "
              "not that the model is private.")
    return f"{text.rstrip()}\n\n{caveat}"


def build_report(audit: ModelAudit, figures: dict[str, str] | None = None) -> Report:
    """The report of ``audit``; ``figures`` maps the file names the Markdown refers to (``roc.svg``,
    ``per_class.svg``) to their inline SVG for the HTML (figures not given are left out of both)."""
    figures = figures or {}
    table = exposure(audit.rows)
    best, rule = _strongest(table, audit)
    n = best["members"]
    attack = str(best["attack"])
    strongest_samples = audit.samples[audit.samples["attack_key"] == attack]
    per_class = per_class_series(strongest_samples) if _classes(strongest_samples) else None
    bounds = table["epsilon_lower_bound"]
    epsilon_bound = float(bounds.max()) if bounds.notna().any() else float("nan")
    epsilon_attack = str(table.loc[bounds.idxmax(), "attack"]) if bounds.notna().any() else ""

    lines = [f"# Privacy report: {audit.title}", "",
             f"Written by `python -m bench report model` from {audit.source}; regenerate it rather than edit it.", "",
             "## Summary", "", summary_paragraph(best, rule, audit, epsilon_bound, per_class), ""]
    if audit.utility is not None:
        metric, value = audit.utility
        lines += [f"Utility: {UTILITY_NAMES.get(metric, metric)} {_num(value)} (mean over the target models).", ""]
    targets = "the target model" if best["targets"] == 1 else f"the {int(best['targets'])} target models"
    lines += ["## How many training records an attacker identifies", "",
              f"The strongest attack is **{attack}**, chosen "
              + (f"on calibration audits (reference models audited in the target's place), then scored on {targets}"
                 if rule != NAIVE else "on this model's own audit (no calibration audits: biased upward)")
              + f". N = {int(round(n))} training records audited per model, "
              f"{int(round(best['nonmembers']))} non-members. K = round(TPR × N); intervals: 95 % Clopper–Pearson "
              f"on the members flagged" + (", pooled over the target models" if best["targets"] > 1 else "")
              + ".", ""]
    entries = []
    for metric, words in LEVELS:
        level = FPR_LEVELS[metric]
        tpr = best[metric]
        dagger = " †" if unresolved(level, best["nonmembers"]) else ""
        guess = random_tpr(best["nonmembers"], level) * n
        entries.append([words, f"{_num(tpr)} [{_num(best[f'{metric}_cp_low'])}, {_num(best[f'{metric}_cp_high'])}]"
                        + dagger, f"about {records(tpr, n)} of {int(round(n))} "
                        f"({records(best[f'{metric}_cp_low'], n)} to {records(best[f'{metric}_cp_high'], n)})",
                        f"{guess:.1f}"])
    lines += _table(["at", "TPR [95 % CI]", "training records identified (K)", "random guessing"], entries)
    if any(unresolved(FPR_LEVELS[m], best["nonmembers"]) for m, _ in LEVELS):
        lines += ["", f"† With {int(round(best['nonmembers']))} non-members an FPR below "
                  f"{_pct(1 / best['nonmembers'], 2)} cannot be resolved: the TPR there is the TPR at FPR = 0."]
    lines += ["", "Every attack" + (" (means over the target models)" if best["targets"] > 1 else "")
              + ", strongest first by TPR at 0.1 % FPR:", ""]
    lines += _table(["attack", "TPR @ 0 % FPR", "TPR @ 0.1 % FPR", "TPR @ 1 % FPR", "AUC", "ε lower bound",
                     "targets"],
                    [[r["attack"], *[f"{_num(r[m])} [{_num(r[f'{m}_cp_low'])}, {_num(r[f'{m}_cp_high'])}]"
                                     for m, _ in LEVELS],
                      _num(r["auc"]), _num(r["epsilon_lower_bound"], 2), str(int(r["targets"]))]
                     for _, r in table.iterrows()])
    if "roc.svg" in figures:
        lines += ["", "![ROC curves on log–log axes](roc.svg)"]

    lines += ["", "## Which classes are most exposed", ""]
    if per_class is None:
        lines += ["No per-class view: a regression target, or no per-record scores of the strongest attack."]
    else:
        lines += [f"The strongest attack on the records of each class; a class whose share of the audited records is "
                  f"below {MINORITY_SHARE:g}/C (C classes) is flagged as a minority class. AUC 0.5 is guessing.", ""]
        lines += _table(["class", "records", "share", "minority", "AUC", "TPR @ 0 % FPR"],
                        [[format_value(r["label"]), str(r["n"]), _pct(r["share"]),
                          "**minority**" if r["minority"] else "",
                          _num(r["auc"]), _num(r["tpr_at_fpr_0"])] for _, r in per_class.iterrows()])
        if "per_class.svg" in figures:
            lines += ["", "![Per-class exposure](per_class.svg)"]

    lines += ["", "## The riskiest records", ""]
    lines += riskiest_lines(strongest_samples, attack)

    lines += ["", "## Empirical ε", ""]
    if np.isfinite(epsilon_bound):
        lines += [f"Largest empirical lower bound on ε proven by any attack: **{epsilon_bound:.2f}** "
                  f"({epsilon_attack}; 95 % Clopper–Pearson, δ = 1e-5, at the threshold that proves the most on "
                  "the calibration audits). "
                  "With 95 % confidence, no training that is (ε, δ)-differentially private with a smaller ε would "
                  "give these counts; a bound of 0 proves nothing."
                  + (f" The DP accountant's ε is {audit.epsilon:.2f}." if np.isfinite(audit.epsilon) else "")]
    else:
        lines += ["No ε lower bound: it needs calibration audits (reference models), which this audit lacks."]

    lines += ["", "## DP-SGD of the same recipe", ""]
    if audit.references is None:
        lines += ["No DP-SGD model of the same recipe (dataset, architecture, training) is in the "
                  + ("store" if audit.utility is not None else "audit") + ", so there is no reference point for "
                  "what differential privacy would cost and buy here. Add `dpsgd` with a few ε to the grid to get "
                  "one."]
    else:
        ref = audit.references
        utility = ref["utility_metric"].iloc[0] or "test_accuracy"
        lines += ["Settings of the same dataset, architecture and training in the store, as reference points "
                  "(leaderboard rows: means over their target models, 95 % bootstrap intervals):", ""]
        lines += _table(["setting", UTILITY_NAMES.get(utility, utility), "strongest attack", "TPR @ 0.1 % FPR",
                         "AUC", "ε (accountant)", "ε lower bound"],
                        [[r["defense"], f"{_num(r['utility'])} [{_num(r[f'{utility}_ci_low'])}, "
                          f"{_num(r[f'{utility}_ci_high'])}]", r["strongest_attack"] or "–",
                          f"{_num(r[PRIVACY])} [{_num(r[f'{PRIVACY}_ci_low'])}, {_num(r[f'{PRIVACY}_ci_high'])}]",
                          _num(r["auc"]), _num(r["epsilon"], 2), _num(r["epsilon_lower_bound"], 2)]
                         for _, r in ref.iterrows()])

    lines += ["", "## About this audit", "", *[f"- {note}" for note in audit.notes],
              "- TPR at an FPR is the highest true-positive rate of any threshold whose false-positive rate on the "
              "non-members audited is at most that FPR; tied scores move together.",
              "- Intervals are over the members audited: how many more or fewer records the same attack would "
              "identify on another draw of training records of this size."
              + (" Pooling treats the target models' audits as independent; they share records, so the pooled "
                 "interval is somewhat narrower than it should be." if best["targets"] > 1 else "")]
    markdown = "\n".join(lines) + "\n"
    body = markdown_html(markdown, images=figures)
    identified = {metric: records(best[metric], n) for metric, _ in LEVELS}
    html = page(f"Privacy report: {audit.title}", body, inline_css=True,
                footer="Written by privbench {version}; regenerate it with python -m bench report model.")
    return Report(markdown, html, attack, rule, int(round(n)), identified)


def riskiest_lines(samples: pd.DataFrame, attack: str, k: int = RISKIEST) -> list[str]:
    """Markdown of the ``k`` training records the strongest attack scores highest (the members it flags first),
    by their mean score over the target models that trained on them (:func:`bench.plots.riskiest_records`):
    indices only, and how many more records tie with the last one listed."""
    if samples.empty:
        return ["No per-record scores to rank the records by."]
    everyone = riskiest_records(samples, len(samples))
    top = everyone.head(k)
    last = top["mean_risk_as_member"].iloc[-1]
    ties = int((everyone["mean_risk_as_member"].iloc[len(top):].round(12) == round(last, 12)).sum())
    lines = [f"The training records that {attack}, the strongest attack, scores highest (the members it flags "
             "first), by their mean score over the target models that trained on them: **indices only** "
             "(positions in the audited data), never their content. Look these records up yourself to see what "
             "makes them stand out (rare values, outliers, near-duplicates with another label).", ""]
    if samples["target"].nunique() > 1:
        lines += _table(["record (index)", f"mean {attack} score as a member", "target models that trained on it"],
                        [[str(int(r.record)), f"{r.mean_risk_as_member:.4g}", str(int(r.n_as_member))]
                         for r in top.itertuples(index=False)])
    else:
        lines += _table(["record (index)", f"{attack} score"],
                        [[str(int(r.record)), f"{r.mean_risk_as_member:.4g}"] for r in top.itertuples(index=False)])
    if ties:
        lines += ["", f"{ties} more record{'s' * (ties > 1)} tie with the last one listed; the list breaks ties by "
                  "index."]
    return lines


def _classes(samples: pd.DataFrame) -> bool:
    from bench.plots import is_classification

    return not samples.empty and is_classification(samples["label"].to_numpy())


def write_report(audit: ModelAudit, out: Path | str) -> tuple[Report, list[Path]]:
    """Write ``REPORT.md``, ``report.html`` and the figures ``roc.svg`` and ``per_class.svg`` into ``out``."""
    folder = Path(out)
    table = exposure(audit.rows)
    best, _ = _strongest(table, audit)
    attack = str(best["attack"])
    drawn = {"roc.svg": roc_figure(audit.samples, audit.title) if not audit.samples.empty else None,
             "per_class.svg": per_class_figure(audit.samples[audit.samples["attack_key"] == attack], attack,
                                               audit.title)}
    svgs = {name: svg_text(fig) for name, fig in drawn.items() if fig is not None}
    report = build_report(audit, {name: inline_svg(text, name.removesuffix(".svg")) for name, text in svgs.items()})
    try:
        folder.mkdir(parents=True, exist_ok=True)
        written = [folder / MARKDOWN, folder / HTML]
        written[0].write_text(report.markdown, encoding="utf-8")
        written[1].write_text(report.html, encoding="utf-8")
        for name, text in svgs.items():
            (folder / name).write_text(text, encoding="utf-8")
            written.append(folder / name)
    except OSError as exc:
        raise BenchError(f"cannot write the report into {folder} ({exc}); pass a writable folder with --out") from None
    return report, written


def default_folder(results: Path | str, name: str) -> Path:
    """Where a report goes without ``--out``: ``<results>/reports/<name's slug>``."""
    return Path(results) / "reports" / slug(name)
