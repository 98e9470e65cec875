"""The store replaces exactly the (cell, attack, target) rows a run recomputed and keeps every other row."""

from __future__ import annotations

import pandas as pd

import privbench
from bench.store import ResultsStore, read_samples, read_store, without_provenance
from tests.conftest import TINY_GRID


def rows_and_samples(attacks: list[str], score: float, targets=(0, 1)) -> tuple[list[dict], pd.DataFrame]:
    rows = [{"cell_key": "c", "attack_key": a, "target": t, "attack": a, "auc": score}
            for a in attacks for t in targets]
    samples = pd.DataFrame([{"cell_key": "c", "attack_key": a, "target": t, "record": r, "label": 0.0,
                             "member": r % 2, "score": score} for a in attacks for t in targets for r in range(3)])
    return rows, samples


def test_rewriting_a_cell_with_fewer_attacks_keeps_the_others_rows_and_samples(tmp_path):
    store = ResultsStore(tmp_path)
    store.write_cell(*rows_and_samples(["loss", "lira", "rmia"], 0.6))
    store.write_cell(*rows_and_samples(["lira"], 0.9))
    rows = read_store(tmp_path).set_index(["attack_key", "target"])["auc"]
    assert len(rows) == 6
    assert rows.loc["lira"].tolist() == [0.9, 0.9] and rows.loc["loss"].tolist() == [0.6, 0.6]
    samples = read_samples(tmp_path)
    assert len(samples) == 18
    assert set(samples.loc[samples["attack_key"] == "lira", "score"]) == {0.9}
    assert set(samples.loc[samples["attack_key"] != "lira", "score"]) == {0.6}
    # one target rewritten: the other target of the same attack stays
    store.write_cell(*rows_and_samples(["loss"], 0.7, targets=(1,)))
    rows = read_store(tmp_path).set_index(["attack_key", "target"])["auc"]
    assert rows.loc[("loss", 0)] == 0.6 and rows.loc[("loss", 1)] == 0.7 and len(rows) == 6
    assert len(read_samples(tmp_path)) == 18


def test_a_grid_rerun_with_one_attack_keeps_the_results_of_the_others(tmp_path):
    """Reproduces the data loss of issue 18: a store of 2 attacks rerun with one attack kept one."""
    both = {**TINY_GRID, "attacks": ["loss", "lira"]}
    cache, results = tmp_path / "cache", tmp_path / "results"
    first = privbench.run_grid(both, cache_dir=cache, results=results)
    samples_before = read_samples(results)
    again = privbench.run_grid({**TINY_GRID, "attacks": ["lira"]}, cache_dir=cache, results=results)
    assert set(again["attack_key"]) == {"lira"}  # what the run produced
    stored = read_store(results)
    assert len(stored) == len(first) and set(stored["attack_key"]) == {"loss", "lira"}
    pd.testing.assert_frame_equal(
        without_provenance(stored).sort_values(["cell_key", "attack_key", "target"], ignore_index=True),
        without_provenance(first).sort_values(["cell_key", "attack_key", "target"], ignore_index=True),
        check_like=True,
    )
    key = ["cell_key", "attack_key", "target", "record"]
    pd.testing.assert_frame_equal(read_samples(results).sort_values(key, ignore_index=True),
                                  samples_before.sort_values(key, ignore_index=True))
