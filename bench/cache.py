"""Content-addressed, atomically written artifacts for the stages of a cell.

An entry is one file, ``<root>/<stage>/<key[:2]>/<key>.<ext>``, whose key hashes the stage name, the stage
version, the keys of the stage's inputs and every parameter that can change its output. The file carries a
manifest (stage, version, key, spec) that is checked on every load, so an entry is never accepted because
it merely exists or has the right shape. Files are written to a temporary name in the same folder and then
renamed, so an interrupted run leaves no entry behind and a rerun resumes where it stopped.

An entry that cannot be read, or whose manifest names another key, is a miss: it is moved to
``<root>/quarantine/<stage>/`` beside a note saying why, recomputed, and counted (:attr:`Cache.healed`), so a run
reports it instead of stopping. With ``strict`` it stops the run instead, as :class:`CacheMismatch`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from privkernel.errors import BenchError
from privkernel.hashing import canonical_json, stable_hash

MANIFEST = "__manifest__"
QUARANTINE = "quarantine"
#: Temporary files of unfinished writes older than this are removed when a run starts (a day).
STALE_TEMPORARY_SECONDS = 86400.0

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$PRIVBENCH_CACHE``, else ``$XDG_CACHE_HOME/privbench``, else ``~/.cache/privbench``."""
    if os.environ.get("PRIVBENCH_CACHE"):
        return Path(os.environ["PRIVBENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "privbench"


def stage_key(stage: str, version: int, **spec: Any) -> str:
    """The key of a stage output: a hash of its name, version, input keys and parameters."""
    return stable_hash({"stage": stage, "version": version, "spec": spec})


class CacheMismatch(BenchError):
    """A cache file exists under a key but does not hold what that key promises."""


# --- codecs: how one kind of artifact is written and read, manifest included --------------------------------


def _save_arrays(path: Path, manifest: dict, arrays: Mapping[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **{MANIFEST: np.array(canonical_json(manifest))}, **arrays)


def _load_arrays(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return json.loads(str(arrays.pop(MANIFEST))), arrays


def _save_tensors(path: Path, manifest: dict, tensors: Mapping[str, Any]) -> None:
    torch.save({MANIFEST: canonical_json(manifest), "data": dict(tensors)}, path)


def _load_tensors(path: Path) -> tuple[dict, dict[str, Any]]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return json.loads(obj[MANIFEST]), obj["data"]


def _save_json(path: Path, manifest: dict, data: Any) -> None:
    path.write_text(json.dumps({MANIFEST: manifest, "data": data}, sort_keys=True, allow_nan=True))


def _load_json(path: Path) -> tuple[dict, Any]:
    obj = json.loads(path.read_text())
    return obj[MANIFEST], obj["data"]


CODECS: dict[str, tuple[str, Callable, Callable]] = {
    "arrays": ("npz", _save_arrays, _load_arrays),
    "tensors": ("pt", _save_tensors, _load_tensors),
    "json": ("json", _save_json, _load_json),
}


class Cache:
    """The artifact store of the stages.

    Parameters
    ----------
    root
        Folder of the cache; created if missing.
    force
        Recompute every stage (and overwrite its entry) instead of reading the cache.
    strict
        Stop with :class:`CacheMismatch` on an unreadable or mismatched entry instead of setting it aside and
        recomputing it.
    """

    def __init__(self, root: Path | str, force: bool = False, strict: bool = False) -> None:
        self.root = Path(root)
        self.force = force
        self.strict = strict
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()
        self.healed: Counter[str] = Counter()  # entries set aside in the quarantine and recomputed, by stage
        self._written: set[str] = set()  # keys computed by this process: reused even under ``force``

    def check_writable(self) -> None:
        """Raise :class:`BenchError` unless entries can be written under the root."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-"):
                pass
        except OSError as exc:
            raise BenchError(
                f"cannot write to the cache folder {self.root} ({exc.strerror or exc}); "
                "pass a writable folder with --cache-dir"
            ) from None

    def clean_temporaries(self, older_than: float = STALE_TEMPORARY_SECONDS) -> int:
        """Delete the temporary files of writes that never finished (a killed run), when older than ``older_than``
        seconds, so that a write still in progress in another run is left alone; return how many went."""
        cutoff, removed = time.time() - older_than, 0
        for tmp in self.root.glob("*/*/.*.tmp"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:  # renamed or removed meanwhile
                continue
        if removed:
            log.info("removed %d unfinished temporary files older than %.0f s from %s", removed, older_than, self.root)
        return removed

    def path(self, stage: str, key: str, kind: str) -> Path:
        return self.root / stage / key[:2] / f"{key}.{CODECS[kind][0]}"

    def load(self, stage: str, key: str, kind: str) -> Any | None:
        """The artifact under ``key``, or ``None`` if there is none. A file that is unreadable or was written for
        another key is set aside (:meth:`quarantine`) and read as missing; with ``strict`` it raises
        :class:`CacheMismatch` instead."""
        path = self.path(stage, key, kind)
        if not path.exists():
            return None
        try:
            manifest, data = CODECS[kind][2](path)
        except Exception as exc:  # noqa: BLE001 - any decoding failure means the same thing to the user
            return self._bad_entry(stage, path, f"cannot be read ({type(exc).__name__}: {exc})")
        if manifest.get("key") != key or manifest.get("stage") != stage:
            return self._bad_entry(stage, path, f"holds stage {manifest.get('stage')!r} key {manifest.get('key')!r}, "
                                                f"not the requested {stage!r} {key!r}")
        return data

    def _bad_entry(self, stage: str, path: Path, why: str) -> None:
        if self.strict:
            raise CacheMismatch(f"cache entry {path} {why}; delete it, rerun with --force, or drop --strict to have "
                                "it set aside and recomputed")
        moved = self.quarantine(stage, path, why)
        self.healed[stage] += 1
        log.warning("cache entry %s %s: moved to %s and recomputed", path, why, moved)
        return None

    def quarantine(self, stage: str, path: Path, why: str) -> Path:
        """Move a bad entry to ``<root>/quarantine/<stage>/``, beside a ``.why.txt`` note; return its new path.
        A name taken by an earlier quarantined file gets a numbered suffix, so nothing set aside is overwritten."""
        folder = self.root / QUARANTINE / stage
        folder.mkdir(parents=True, exist_ok=True)
        target, n = folder / path.name, 1
        while target.exists():
            target, n = folder / f"{path.name}.{n}", n + 1
        try:
            os.replace(path, target)
        except FileNotFoundError:  # another worker set it aside first
            return target
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        Path(f"{target}.why.txt").write_text(f"{stamp}: {path} {why}; recomputed under the same key\n")
        return target

    def save(self, stage: str, key: str, kind: str, data: Any, spec: Any = None) -> Path:
        """Write ``data`` under ``key`` atomically (temporary file, then rename)."""
        path = self.path(stage, key, kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        manifest = {"stage": stage, "key": key, "spec": spec}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:12]}-", suffix=".tmp")
        os.close(fd)
        try:
            CODECS[kind][1](Path(tmp), manifest, data)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def get_or_compute(self, stage: str, key: str, kind: str, compute: Callable[[], Any], spec: Any = None) -> Any:
        """Return the cached artifact under ``key``, computing and storing it first if needed."""
        if not self.force or key in self._written:
            data = self.load(stage, key, kind)
            if data is not None:
                self.hits[stage] += 1
                return data
        self.misses[stage] += 1
        data = compute()
        self.save(stage, key, kind, data, spec)
        self._written.add(key)
        return data
