"""Faults made on purpose: a corrupted cache entry is set aside and recomputed (or stops a --strict run); a full
disk leaves no partial entry; run options below their minimum are refused."""

from __future__ import annotations

import errno
import struct
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from bench.cache import CODECS
from bench.cli import main
from bench.store import read_store, without_provenance
from tests.conftest import TINY_GRID, write_grid


def run(grid, tmp_path, *extra: str) -> int:
    return main(["grid", "--grid", str(grid), "--cache-dir", str(tmp_path / "cache"), "--results",
                 str(tmp_path / "results"), "--quiet", "--no-report", *extra])


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
    # the recomputed models are the same models
    pd.testing.assert_frame_equal(without_provenance(first), without_provenance(again))
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


STAGES = {"features": "npz", "split": "npz", "models": "pt", "observations": "npz", "scores": "npz", "metrics": "json"}


def _manifest_spec(path: Path) -> dict:
    kind = {".npz": "arrays", ".pt": "tensors", ".json": "json"}[path.suffix]
    manifest, _ = CODECS[kind][2](path)
    return manifest["spec"]


def _content_offset(path: Path) -> int:
    """The offset of a byte of an entry's content: the middle of its largest zip member (npz, pt), or of its data
    (JSON). Bytes elsewhere (a zip's alignment padding) change nothing that is read."""
    if path.suffix == ".json":
        text = path.read_bytes()
        start = text.index(b'"data"')
        return (start + len(text)) // 2
    with zipfile.ZipFile(path) as archive:
        member = max(archive.infolist(), key=lambda info: info.compress_size)
    with open(path, "rb") as fh:  # the local header: 30 bytes, then the name and the extra field
        fh.seek(member.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", fh.read(4))
    return member.header_offset + 30 + name_length + extra_length + member.compress_size // 2


def _one_chain(cache: Path) -> list[Path]:
    """One entry of each stage, each an input of the next: metrics → scores → observations → models, and the
    features and split, so that recomputing the metrics entry reads every one of them."""
    metrics = sorted((cache / "metrics").rglob("*.json"))[0]
    scores_key = _manifest_spec(metrics)["scores"]
    scores = next((cache / "scores").rglob(f"{scores_key}.npz"))
    observations = next((cache / "observations").rglob(f"{_manifest_spec(scores)['observations']}.npz"))
    models = next((cache / "models").rglob(f"{_manifest_spec(observations)['models']}.pt"))
    (features,), (split,) = (cache / "features").rglob("*.npz"), (cache / "split").rglob("*.npz")
    return [features, split, models, observations, scores, metrics]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_entry_of_every_stage_is_recomputed_with_one_line_and_the_same_store(tmp_path, capsys, damage):
    grid = write_grid(tmp_path, {**TINY_GRID, "architectures": ["logreg"]})
    assert run(grid, tmp_path) == 0
    clean = without_provenance(read_store(tmp_path / "results"))
    chain = _one_chain(tmp_path / "cache")
    assert [p.parent.parent.name for p in chain] == list(STAGES)
    for path in chain:
        data = bytearray(path.read_bytes())
        if damage == "truncate":
            del data[len(data) // 2:]
        else:  # one bit of the content: the file may still decode, to other values
            data[_content_offset(path)] ^= 0x01
        path.write_bytes(bytes(data))
    capsys.readouterr()
    assert run(grid, tmp_path) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "recomputed" in line] == [
        line for line in err.splitlines() if "6 corrupted cache entries set aside in" in line
    ] and "6 corrupted" in err
    pd.testing.assert_frame_equal(without_provenance(read_store(tmp_path / "results")), clean)
    quarantined = {p.parent.name for p in (tmp_path / "cache" / "quarantine").rglob("*") if p.is_file()}
    assert quarantined == set(STAGES)


def test_a_full_disk_while_writing_an_entry_leaves_nothing_partial_and_names_the_folder(tmp_path, monkeypatch,
                                                                                         capsys):
    grid = write_grid(tmp_path, {**TINY_GRID, "architectures": ["logreg"]})
    save_tensors = CODECS["tensors"]

    def full(path, manifest, data):
        path.write_bytes(b"half an entry")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(CODECS, "tensors", (save_tensors[0], full, save_tensors[2]))
    assert run(grid, tmp_path) == 2
    err = capsys.readouterr().err
    models = tmp_path / "cache" / "models"
    assert "cannot write the models cache entry in" in err and str(models) in err and "No space left" in err
    assert "Traceback" not in err
    assert [p for p in models.rglob("*") if p.is_file()] == []  # no entry, no temporary, no lock


def test_report_with_a_malformed_or_non_mapping_grid_exits_2_with_one_line(tmp_path, capsys):
    for text, expected in (("a: [1\n", "malformed YAML at line 2"), ("- 1\n", "a study's grid is a mapping")):
        grid = write_grid(tmp_path, text)
        assert main(["report", "molecules", "--grid", str(grid), "--results", str(tmp_path / "r"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err and "Traceback" not in err
