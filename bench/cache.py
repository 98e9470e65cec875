"""Content-addressed, atomically written artifacts for the stages of a cell.

An entry is one file, ``<root>/<stage>/<key[:2]>/<key>.<ext>``, whose key hashes the stage name, the stage
version, the keys of the stage's inputs and every parameter that can change its output. The file carries a
manifest (stage, version, key, spec) that is checked on every load, so an entry is never accepted because
it merely exists or has the right shape. Files are written to a temporary name in the same folder and then
renamed, so an interrupted run leaves no entry behind and a rerun resumes where it stopped.

The manifest also holds a SHA-256 digest of the content (:func:`content_digest`), so a flipped byte that still
decodes (a digit of a JSON number, a float of a tensor) is caught too. An entry that cannot be read, whose manifest
names another key, or whose content does not match its digest, is a miss: it is moved to
``<root>/quarantine/<stage>/`` beside a note saying why, recomputed, and counted (:attr:`Cache.healed`), so a run
reports it instead of stopping. With ``strict`` it stops the run instead, as :class:`CacheMismatch`.

Runs sharing a cache compute each entry once: the writer of a key holds ``.<key>.lock``, created with ``O_EXCL``
beside the entry, and every other process waits for the entry instead of computing it again (:meth:`Cache.writer`).
A lock whose holder died is taken over. Reading an entry refreshes its modification time, so that
:func:`prune_unused` can remove what no run has used for a while.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import stopping
from privkernel.errors import BenchError
from privkernel.hashing import canonical_json, stable_hash

MANIFEST = "__manifest__"
QUARANTINE = "quarantine"
#: Temporary files of unfinished writes older than this are removed when a run starts (a day).
STALE_TEMPORARY_SECONDS = 86400.0
#: A writer's lock held by another host is taken over when it is older than this (a day); on this host, as soon as
#: the process that holds it has died.
STALE_LOCK_SECONDS = 86400.0
#: How often a process waiting for another's entry looks again (seconds).
LOCK_POLL_SECONDS = 0.1
#: A lock file without its holder's host and pid (a writer killed between creating and filling it) is taken over
#: once it is this old (seconds); filling it takes microseconds.
TORN_LOCK_SECONDS = 5.0

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


def content_digest(kind: str, manifest: Mapping[str, Any], data: Any) -> str:
    """SHA-256 of an entry's manifest (less its digest) and content, independent of the file encoding.

    Arrays and tensors hash their names, dtypes, shapes and bytes in name order; JSON data hashes the canonical text
    of what a load gives back (keys become strings; floats round-trip exactly)."""
    head = {k: v for k, v in manifest.items() if k != "sha256"}
    digest = hashlib.sha256(canonical_json(json.loads(canonical_json(head))).encode())
    if kind == "json":
        loaded = json.loads(json.dumps(data, allow_nan=True))
        digest.update(json.dumps(loaded, sort_keys=True, allow_nan=True).encode())
        return digest.hexdigest()
    for name in sorted(data):
        value = data[name]
        if isinstance(value, torch.Tensor):
            flat = value.detach().cpu().contiguous().reshape(-1)
            dtype, shape, raw = str(value.dtype), tuple(value.shape), flat.view(torch.uint8).numpy()
        else:
            array = np.ascontiguousarray(value)
            dtype, shape, raw = array.dtype.str, array.shape, array.reshape(-1).view(np.uint8)
        digest.update(f"{name}|{dtype}|{shape}|".encode())
        digest.update(raw)
    return digest.hexdigest()


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
        # entries written before digests existed have none: accepted as they are
        if "sha256" in manifest and manifest["sha256"] != content_digest(kind, manifest, data):
            return self._bad_entry(stage, path, "does not match its content digest (corrupted)")
        try:
            os.utime(path)  # last use, for `bench cache prune`
        except OSError:  # a read-only cache is still a cache
            pass
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
        """Write ``data`` under ``key`` atomically (temporary file, then rename). A write that fails (a full disk)
        leaves no file behind and raises :class:`BenchError` naming the folder."""
        path = self.path(stage, key, kind)
        manifest: dict[str, Any] = {"stage": stage, "key": key, "spec": spec}
        manifest["sha256"] = content_digest(kind, manifest, data)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:12]}-", suffix=".tmp")
            os.close(fd)
            CODECS[kind][1](Path(tmp), manifest, data)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
                raise BenchError(
                    f"cannot write the {stage} cache entry in {path.parent} ({exc.strerror or exc}); "
                    + ("free space on that disk" if full else "check the folder's permissions")
                    + " or pass another folder with --cache-dir; nothing partial was left there"
                ) from None
            raise
        return path

    @contextmanager
    def writer(self, stage: str, key: str, kind: str) -> Iterator[None]:
        """Hold the one writer's lock of ``key``: ``.<key>.lock`` created with ``O_EXCL`` beside the entry.

        While another process holds it, wait; a lock whose holder died (this host: its process is gone; another
        host: older than :data:`STALE_LOCK_SECONDS`) is taken over."""
        path = self.path(stage, key, kind)
        lock = path.with_name(f".{key}.lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if _stale_lock(lock):
                    lock.unlink(missing_ok=True)
                else:
                    stopping.check()  # a run asked to stop does not wait for another's entry
                    time.sleep(LOCK_POLL_SECONDS)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{socket.gethostname()} {os.getpid()}\n")
            break
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)

    def get_or_compute(self, stage: str, key: str, kind: str, compute: Callable[[], Any], spec: Any = None) -> Any:
        """Return the cached artifact under ``key``, computing and storing it first if needed. Of several processes
        asking for the same missing key at once, one computes it and the others read what it wrote."""
        reuse = not self.force or key in self._written
        if reuse and (data := self.load(stage, key, kind)) is not None:
            self.hits[stage] += 1
            return data
        with self.writer(stage, key, kind):
            if reuse and (data := self.load(stage, key, kind)) is not None:  # written while this process waited
                self.hits[stage] += 1
                return data
            self.misses[stage] += 1
            data = compute()
            self.save(stage, key, kind, data, spec)
        self._written.add(key)
        return data


def _stale_lock(lock: Path) -> bool:
    """Whether the process that holds ``lock`` is gone (see :meth:`Cache.writer`)."""
    try:
        host, pid = lock.read_text().split()
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:  # released meanwhile
        return False
    except ValueError:  # being written right now, or a torn file: judge by its age
        try:
            return time.time() - lock.stat().st_mtime > TORN_LOCK_SECONDS
        except FileNotFoundError:
            return False
    if host != socket.gethostname():
        return age > STALE_LOCK_SECONDS
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):  # alive under another user, or not a pid
        return False
    return False


# --- what the cache holds: `bench cache` -------------------------------------------------------------------


@dataclass(frozen=True)
class StageUsage:
    """The entries of one stage folder: how many, their bytes, and the oldest and newest last use."""

    stage: str
    entries: int
    bytes: int
    oldest: float | None
    newest: float | None


def _stage_files(folder: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """The files of one folder of the cache with their ``stat``: a stage's entries (not the temporaries and locks
    of writes in progress), or every file of the quarantine. A file removed meanwhile (by another run) is skipped."""
    exts = tuple(f".{ext}" for ext, _, _ in CODECS.values())
    paths = folder.rglob("*") if folder.name == QUARANTINE else (
        p for p in folder.glob("*/*") if p.suffix in exts and not p.name.startswith("."))
    for path in paths:
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if path.is_file():
            yield path, stat


def _folders(root: Path | str) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise BenchError(f"no cache at {root}; pass the folder of a cache with --cache-dir")
    return sorted(p for p in root.iterdir() if p.is_dir())


def cache_usage(root: Path | str) -> list[StageUsage]:
    """Per stage folder of the cache at ``root`` (the quarantine included): entries, bytes and last uses."""
    usage = []
    for folder in _folders(root):
        stats = [stat for _, stat in _stage_files(folder)]
        times = [stat.st_mtime for stat in stats]
        usage.append(StageUsage(folder.name, len(stats), sum(stat.st_size for stat in stats),
                                min(times, default=None), max(times, default=None)))
    return usage


def prune_unused(root: Path | str, days: float, dry_run: bool = False) -> tuple[int, int]:
    """Delete the entries (quarantined files included) that no run has read or written for ``days`` days; return
    how many and their bytes. With ``dry_run`` only count them."""
    if days < 0:
        raise BenchError(f"--older-than must be at least 0 days, got {days:g}")
    cutoff = time.time() - days * 86400.0
    count = size = 0
    for folder in _folders(root):
        for path, stat in list(_stage_files(folder)):
            if stat.st_mtime < cutoff:
                count, size = count + 1, size + stat.st_size
                if not dry_run:
                    path.unlink(missing_ok=True)
    return count, size
