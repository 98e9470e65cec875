"""Faults made on purpose: a corrupted cache entry is set aside and recomputed (or stops a --strict run); run
options below their minimum are refused."""

from __future__ import annotations

import pandas as pd

from bench.cli import main
from bench.store import read_store
from tests.conftest import TINY_GRID, write_grid


def run(grid, tmp_path, *extra: str) -> int:
    return main(["grid", "--grid", str(grid), "--cache-dir", str(tmp_path / "cache"), "--results",
                 str(tmp_path / "results"), "--quiet", *extra])


def test_a_truncated_models_entry_is_recomputed_and_reported_or_stops_a_strict_run(tmp_path, capsys):
    grid = write_grid(tmp_path, TINY_GRID)
    assert run(grid, tmp_path) == 0
    first = read_store(tmp_path / "results")
    entries = sorted((tmp_path / "cache" / "models").rglob("*.pt"))
    entries[0].write_bytes(entries[0].read_bytes()[:100])
    for path in (tmp_path / "cache" / "metrics").rglob("*.json"):  # so that the models stage is read again
        path.unlink()
    capsys.readouterr()
    assert run(grid, tmp_path, "--strict") == 2
    err = capsys.readouterr().err
    assert "cannot be read" in err and "--strict" in err and "Traceback" not in err
    assert run(grid, tmp_path) == 0
    err = capsys.readouterr().err
    assert "1 corrupted cache entry set aside in" in err and "quarantine" in err
    quarantined = list((tmp_path / "cache" / "quarantine" / "models").iterdir())
    assert sorted(p.suffix for p in quarantined) == [".pt", ".txt"]
    again = read_store(tmp_path / "results")
    pd.testing.assert_frame_equal(first, again)  # the recomputed models are the same models
    assert run(grid, tmp_path) == 0 and "corrupted" not in capsys.readouterr().err  # healed: nothing to report


def test_workers_and_retries_below_their_minimum_are_refused_even_with_dry_run(capsys):
    for flag, value in (("--workers", "0"), ("--workers", "-1"), ("--retries", "-1")):
        try:
            main(["grid", "--grid", "smoke", "--dry-run", flag, value])
        except SystemExit as stop:
            assert stop.code == 2
        else:
            raise AssertionError(f"{flag} {value} was accepted")
        assert f"argument {flag}: must be at least" in capsys.readouterr().err
