import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import cache as cache_module
from bench.cache import Cache, CacheMismatch, stage_key
from bench.grid import load_grid
from bench.pipeline import STAGE_VERSIONS, CellRun


def test_key_depends_on_every_input():
    base = stage_key("models", 1, features="abc", training={"epochs": 30, "lr": 0.001}, seed=0)
    assert base == stage_key("models", 1, seed=0, training={"lr": 0.001, "epochs": 30}, features="abc")
    assert base != stage_key("models", 1, features="abc", training={"epochs": 31, "lr": 0.001}, seed=0)
    assert base != stage_key("models", 1, features="abd", training={"epochs": 30, "lr": 0.001}, seed=0)
    assert base != stage_key("models", 1, features="abc", training={"epochs": 30, "lr": 0.001}, seed=1)
    assert base != stage_key("models", 2, features="abc", training={"epochs": 30, "lr": 0.001}, seed=0)
    assert base != stage_key("observations", 1, features="abc", training={"epochs": 30, "lr": 0.001}, seed=0)


def _cell_run(tiny_grid, tmp_path, index=1):
    return CellRun(load_grid(str(tiny_grid)).cells[index], Cache(tmp_path / "cache"))


def test_cell_keys_follow_parameters_and_versions(tiny_grid, tmp_path, monkeypatch):
    grid = load_grid(str(tiny_grid))
    logreg, mlp = (CellRun(c, Cache(tmp_path)) for c in grid.cells)
    # same dataset, seed and protocol: features and split are shared, models are not
    assert logreg.features_key == mlp.features_key and logreg.split_key == mlp.split_key
    assert logreg.models_key != mlp.models_key
    again = CellRun(load_grid(str(tiny_grid)).cells[1], Cache(tmp_path))
    assert again.metrics_key(mlp.cell.attacks[0], 0) == mlp.metrics_key(mlp.cell.attacks[0], 0)

    monkeypatch.setitem(STAGE_VERSIONS, "models", STAGE_VERSIONS["models"] + 1)
    bumped = CellRun(mlp.cell, Cache(tmp_path))
    assert bumped.split_key == mlp.split_key  # upstream of the bump: unchanged
    assert bumped.models_key != mlp.models_key  # the bumped stage and everything downstream change
    assert bumped.metrics_key(mlp.cell.attacks[0], 0) != mlp.metrics_key(mlp.cell.attacks[0], 0)


def test_component_version_enters_the_key(tiny_grid, tmp_path):
    from privkernel.registry import ATTACKS

    run = _cell_run(tiny_grid, tmp_path)
    attack = run.cell.attacks[0]
    before = run.scores_key(attack, 0)
    c = ATTACKS.get("loss")
    with ATTACKS.temporarily():
        ATTACKS.register("loss", description=c.description, params=c.params, version=2, replace=True, **c.tags)(c.obj)
        assert run.scores_key(attack, 0) != before
    assert run.scores_key(attack, 0) == before  # the old registration is back


def test_roundtrip_of_every_kind(tmp_path):
    cache = Cache(tmp_path)
    arrays = {"a": np.arange(5), "b": np.array("classification")}
    cache.save("s", "k1", "arrays", arrays)
    loaded = cache.load("s", "k1", "arrays")
    assert np.array_equal(loaded["a"], arrays["a"]) and str(loaded["b"]) == "classification"
    cache.save("s", "k2", "tensors", {"w": torch.ones(2, 3)})
    assert torch.equal(cache.load("s", "k2", "tensors")["w"], torch.ones(2, 3))
    cache.save("s", "k3", "json", {"auc": 0.5, "threshold": float("inf")})
    assert cache.load("s", "k3", "json") == {"auc": 0.5, "threshold": float("inf")}
    assert cache.load("s", "missing", "json") is None


def test_interrupted_write_leaves_no_entry(tmp_path, monkeypatch):
    cache = Cache(tmp_path)

    def crash(path, manifest, data):
        path.write_bytes(b"half an artifact")
        raise KeyboardInterrupt  # the user pressed Ctrl-C in the middle of the write

    monkeypatch.setitem(cache_module.CODECS, "json", ("json", crash, cache_module._load_json))
    with pytest.raises(KeyboardInterrupt):
        cache.save("metrics", "abc123", "json", {"auc": 0.9})
    assert cache.load("metrics", "abc123", "json") is None
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_get_or_compute_computes_once_and_force_recomputes(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"x": len(calls)}

    assert Cache(tmp_path).get_or_compute("s", "k", "json", compute) == {"x": 1}
    assert Cache(tmp_path).get_or_compute("s", "k", "json", compute) == {"x": 1}
    forced = Cache(tmp_path, force=True)
    assert forced.get_or_compute("s", "k", "json", compute) == {"x": 2}
    assert forced.get_or_compute("s", "k", "json", compute) == {"x": 2}  # not twice in one forced run
    assert len(calls) == 2


def test_an_entry_for_another_key_is_refused_under_strict_and_set_aside_otherwise(tmp_path):
    strict = Cache(tmp_path, strict=True)
    strict.save("metrics", "aaaa", "json", {"auc": 0.9})
    wrong = strict.path("metrics", "aabb", "json")
    strict.path("metrics", "aaaa", "json").rename(wrong)
    with pytest.raises(CacheMismatch, match="not the requested 'metrics' 'aabb'.*--force.*--strict"):
        strict.load("metrics", "aabb", "json")
    assert wrong.exists()
    healing = Cache(tmp_path)
    assert healing.get_or_compute("metrics", "aabb", "json", lambda: {"auc": 0.5}) == {"auc": 0.5}
    assert healing.healed == {"metrics": 1} and healing.misses == {"metrics": 1}
    moved = tmp_path / "quarantine" / "metrics" / wrong.name
    assert json.loads(moved.read_text())["data"] == {"auc": 0.9}  # set aside as it was, never deleted
    assert "not the requested 'metrics' 'aabb'" in Path(f"{moved}.why.txt").read_text()
    assert Cache(tmp_path).load("metrics", "aabb", "json") == {"auc": 0.5}  # the recomputed entry


def test_a_corrupted_entry_is_never_reused_and_each_one_set_aside_is_kept(tmp_path):
    cache = Cache(tmp_path, strict=True)
    cache.save("observations", "cafe", "arrays", {"pool": np.zeros((2, 3))})
    path = cache.path("observations", "cafe", "arrays")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CacheMismatch, match="cannot be read"):
        cache.load("observations", "cafe", "arrays")
    assert path.exists()  # strict: nothing moves behind the user's back
    healing = Cache(tmp_path)
    for value in (1.0, 2.0):  # corrupt it twice: both bad copies are kept, under distinct names
        assert healing.load("observations", "cafe", "arrays") is None
        healing.save("observations", "cafe", "arrays", {"pool": np.full((2, 3), value)})
        path.write_bytes(path.read_bytes()[:40])
    assert healing.healed == {"observations": 2}
    kept = sorted(p.name for p in (tmp_path / "quarantine" / "observations").iterdir())
    assert kept == [path.name, f"{path.name}.1", f"{path.name}.1.why.txt", f"{path.name}.why.txt"]


def test_unwritable_cache_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    from privkernel.errors import BenchError

    with pytest.raises(BenchError, match="--cache-dir"):
        Cache(blocker / "cache").check_writable()


def test_an_edited_user_file_gets_new_features(tmp_path):
    from bench.grid import expand_grid
    from tests.conftest import TINY_GRID

    data = tmp_path / "data.csv"
    data.write_text("a,b,label\n1,2,0\n3,4,1\n")
    raw = {**TINY_GRID, "datasets": [{"name": "csv", "params": {"path": str(data)}}], "architectures": ["logreg"]}
    before = CellRun(expand_grid(raw, tmp_path / "g.yaml").cells[0], Cache(tmp_path)).features_key
    assert CellRun(expand_grid(raw, tmp_path / "g.yaml").cells[0], Cache(tmp_path)).features_key == before
    data.write_text("a,b,label\n1,2,0\n3,5,1\n")
    assert CellRun(expand_grid(raw, tmp_path / "g.yaml").cells[0], Cache(tmp_path)).features_key != before


def test_temporaries_of_unfinished_writes_older_than_a_day_are_removed(tmp_path):
    import os
    import time

    cache = Cache(tmp_path)
    cache.save("models", "abcd", "json", {"w": 1})
    folder = cache.path("models", "abcd", "json").parent
    old, fresh = folder / ".abcd-old.tmp", folder / ".abcd-new.tmp"
    old.write_text("x")
    fresh.write_text("y")
    day_ago = time.time() - 86400 - 60
    os.utime(old, (day_ago, day_ago))
    assert cache.clean_temporaries() == 1
    assert not old.exists() and fresh.exists()  # a write in progress elsewhere is left alone
    assert cache.load("models", "abcd", "json") == {"w": 1}


def test_a_lock_left_by_a_dead_or_torn_writer_is_taken_over(tmp_path):
    import os
    import socket
    import subprocess
    import sys
    import threading
    import time

    cache = Cache(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for key, content, age in (("a" * 64, f"{socket.gethostname()} {dead.stdout.strip()}\n", 0.0), ("b" * 64, "", 60.0)):
        lock = cache.path("split", key, "json").with_name(f".{key}.lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.write_text(content)
        os.utime(lock, (time.time() - age, time.time() - age))
        got: list = []
        worker = threading.Thread(target=lambda got=got, key=key: got.append(
            cache.get_or_compute("split", key, "json", lambda: {"x": 1})), daemon=True)
        worker.start()
        worker.join(timeout=10)  # a lock never taken over would make the writer wait for ever
        assert got == [{"x": 1}] and not lock.exists()
