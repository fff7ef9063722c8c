"""The results store: per-example outcomes in SQLite, written as each batch finishes.

One transaction per finished batch holds every per-example outcome of that batch and its wall
time, so a run killed at any moment (SIGKILL included) loses at most the batch in flight, and a
re-run reads finished batches back instead of recomputing them. The report is rendered from the
store alone.

:func:`open_store` is how an evaluation opens its directory's store: a store that is not a
database (or fails SQLite's quick check) is reported in one line, and a store whose configuration
differs from the run's — names, parameters, or the content fingerprints of the model and the data
— is refused with a message naming what changed, unless it holds no finished batch (then nothing
is lost by starting it afresh) or ``force`` replaces it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import torch

SCHEMA = """
CREATE TABLE IF NOT EXISTS config (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clean (
    idx INTEGER PRIMARY KEY, label INTEGER, top1 INTEGER, top5 INTEGER, pred INTEGER, conf REAL
);
CREATE TABLE IF NOT EXISTS batches (
    job TEXT, batch INTEGER, seconds REAL, PRIMARY KEY (job, batch)
);
CREATE TABLE IF NOT EXISTS outcomes (
    job TEXT, idx INTEGER, adv INTEGER, top1 INTEGER, top5 INTEGER, pred INTEGER, conf REAL,
    l0 REAL, l1 REAL, l2 REAL, linf REAL, queries INTEGER, PRIMARY KEY (job, idx)
);
CREATE TABLE IF NOT EXISTS examples (
    job TEXT, idx INTEGER, shape TEXT, x BLOB, x_adv BLOB, PRIMARY KEY (job, idx)
);
CREATE TABLE IF NOT EXISTS dense (
    job TEXT, idx INTEGER, stats BLOB, PRIMARY KEY (job, idx)
);
CREATE TABLE IF NOT EXISTS detect (
    job TEXT, idx INTEGER, score REAL, rejected INTEGER, PRIMARY KEY (job, idx)
);
"""
STORE_NAME = "results.sqlite"
TABLES = ("config", "clean", "batches", "outcomes", "examples", "dense", "detect")
CLEAN_JOB = "clean"  # the detect table's key of the clean test images (job keys always hold a "|")
FINGERPRINTS = ("model_fingerprint", "data_fingerprint")  # configuration keys compared by content digest


class StoreError(ValueError):
    """A results store cannot be opened."""


class StoreCorrupt(StoreError):
    """A results store that is not a SQLite database, or fails its quick check (``reason`` says how)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ConfigMismatchError(ValueError):
    """The output directory holds results of a different configuration (or another model, or other data)."""


def _is_corruption(e: sqlite3.DatabaseError) -> bool:
    """Whether SQLite's error says the file is damaged (not locked, not unreadable)."""
    name = getattr(e, "sqlite_errorname", "")
    return name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or not isinstance(e, sqlite3.OperationalError)


class Store:
    """A SQLite results store at ``path`` (created if missing).

    Raises:
        StoreCorrupt: ``path`` exists and is not a SQLite database, or fails ``PRAGMA quick_check``.
        StoreError: ``path`` cannot be opened (a directory, no permission).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.replaced = False  # set by open_store: an earlier store's contents were discarded
        existing = self.path.is_file() and self.path.stat().st_size > 0
        try:
            self.db = sqlite3.connect(self.path)
        except sqlite3.Error as e:
            raise StoreError(f"store: cannot open {self.path} ({e})") from None
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            found = self.db.execute("PRAGMA quick_check").fetchone()[0] if existing else "ok"
            if found != "ok":
                raise sqlite3.DatabaseError(f"quick check: {' '.join(str(found).split())[:120]}")
            self.db.executescript(SCHEMA)
            self.db.commit()
        except sqlite3.DatabaseError as e:
            self.db.close()
            reason = " ".join(str(e).split())
            if _is_corruption(e):
                raise StoreCorrupt(f"store: {self.path} is corrupt ({reason})", reason) from None
            raise StoreError(f"store: cannot open {self.path} ({reason})") from None

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def has_results(self) -> bool:
        """Whether any batch of any job has finished (what starting afresh would lose)."""
        return self.db.execute("SELECT 1 FROM batches LIMIT 1").fetchone() is not None

    def reset(self) -> None:
        """Remove everything the store holds, configuration included (one transaction)."""
        with self.db:
            for table in TABLES:
                self.db.execute(f"DELETE FROM {table}")  # the names are the schema's, never input

    # configuration -------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any] | None:
        """The stored run configuration, or None for a new store."""
        row = self.db.execute("SELECT value FROM config WHERE key = 'run'").fetchone()
        return json.loads(row[0]) if row else None

    def set_config(self, config: dict[str, Any]) -> None:
        """Record the run configuration."""
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO config VALUES ('run', ?)", (json.dumps(config, sort_keys=True),))

    def set_meta(self, key: str, value: Any) -> None:
        """Record a piece of metadata (environment, command)."""
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO config VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str) -> Any:
        """A stored piece of metadata, or None."""
        row = self.db.execute("SELECT value FROM config WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    # clean predictions ---------------------------------------------------------------------
    def has_clean(self, n: int) -> bool:
        """Whether clean predictions for all n examples are stored."""
        count: int = self.db.execute("SELECT COUNT(*) FROM clean").fetchone()[0]
        return count == n

    def put_clean(self, labels: torch.Tensor, top1: torch.Tensor, top5: torch.Tensor,
                  pred: torch.Tensor, conf: torch.Tensor) -> None:
        """Store clean predictions for every example (one transaction)."""
        rows = zip(range(len(labels)), labels.tolist(), top1.int().tolist(), top5.int().tolist(),
                   pred.tolist(), conf.tolist(), strict=True)
        with self.db:
            self.db.execute("DELETE FROM clean")
            self.db.executemany("INSERT INTO clean VALUES (?, ?, ?, ?, ?, ?)", rows)

    def clean(self) -> dict[str, torch.Tensor]:
        """Clean predictions as tensors indexed by example."""
        rows = self.db.execute("SELECT label, top1, top5, pred, conf FROM clean ORDER BY idx").fetchall()
        a = np.array(rows, dtype=np.float64).reshape(-1, 5)
        return {
            "label": torch.from_numpy(a[:, 0]).long(), "top1": torch.from_numpy(a[:, 1]).bool(),
            "top5": torch.from_numpy(a[:, 2]).bool(), "pred": torch.from_numpy(a[:, 3]).long(),
            "conf": torch.from_numpy(a[:, 4]),
        }

    # attack outcomes -----------------------------------------------------------------------
    def done_batches(self, job: str) -> set[int]:
        """Indices of the finished batches of a job."""
        return {r[0] for r in self.db.execute("SELECT batch FROM batches WHERE job = ?", (job,))}

    def put_batch(self, job: str, batch: int, seconds: float, idx: list[int], outcome: dict[str, list[Any]],
                  examples: list[tuple[int, np.ndarray, np.ndarray]], dense: list[np.ndarray] | None = None) -> None:
        """Store one finished batch atomically: outcomes, examples for figures, a dense task's stats, wall time."""
        cols = ("adv", "top1", "top5", "pred", "conf", "l0", "l1", "l2", "linf", "queries")
        rows = [(job, i, *(outcome[c][k] for c in cols)) for k, i in enumerate(idx)]
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO outcomes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self.db.executemany(
                "INSERT OR REPLACE INTO examples VALUES (?, ?, ?, ?, ?)",
                [(job, i, json.dumps(list(x.shape)), x.astype(np.float32).tobytes(),
                  xa.astype(np.float32).tobytes()) for i, x, xa in examples],
            )
            if dense is not None:
                self.db.executemany("INSERT OR REPLACE INTO dense VALUES (?, ?, ?)",
                                    [(job, i, s.tobytes()) for i, s in zip(idx, dense, strict=True)])
            if "det_score" in outcome:  # an evaluation with a detector: its score and decision per example
                self._put_detect(job, idx, outcome["det_score"], outcome["det_rejected"])
            self.db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?)", (job, batch, seconds))

    def _put_detect(self, job: str, idx: list[int], score: list[float], rejected: list[int]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO detect VALUES (?, ?, ?, ?)",
                            [(job, i, float(sc), int(r)) for i, sc, r in zip(idx, score, rejected, strict=True)])

    def put_detect(self, job: str, idx: list[int], score: list[float], rejected: list[int]) -> None:
        """Store a detector's score and decision (1 = rejected) per example of a job (one transaction)."""
        with self.db:
            self._put_detect(job, idx, score, rejected)

    def detect(self, job: str) -> dict[str, torch.Tensor]:
        """A job's detector scores and decisions (``idx``, ``score``, ``rejected``), by example index."""
        rows = self.db.execute("SELECT idx, score, rejected FROM detect WHERE job = ? ORDER BY idx", (job,)).fetchall()
        a = np.array(rows, dtype=np.float64).reshape(-1, 3)
        return {"idx": torch.from_numpy(a[:, 0]).long(), "score": torch.from_numpy(a[:, 1]),
                "rejected": torch.from_numpy(a[:, 2]).bool()}

    def put_dense(self, job: str, stats: list[np.ndarray]) -> None:
        """Store a dense task's per-image stats of a whole pass (the clean one) in one transaction."""
        with self.db:
            self.db.execute("DELETE FROM dense WHERE job = ?", (job,))
            self.db.executemany("INSERT INTO dense VALUES (?, ?, ?)",
                                [(job, i, s.tobytes()) for i, s in enumerate(stats)])

    def dense(self, job: str) -> list[tuple[int, bytes]]:
        """A dense task's stored (example index, stats record) pairs of a job, by example index."""
        return list(self.db.execute("SELECT idx, stats FROM dense WHERE job = ? ORDER BY idx", (job,)))

    def outcomes(self, job: str) -> dict[str, torch.Tensor]:
        """Per-example outcomes of a job, ordered by example index."""
        rows = self.db.execute(
            "SELECT idx, adv, top1, top5, pred, conf, l0, l1, l2, linf, queries FROM outcomes "
            "WHERE job = ? ORDER BY idx", (job,)
        ).fetchall()
        a = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64).reshape(-1, 11)
        out = {
            "idx": torch.from_numpy(a[:, 0]).long(), "adv": torch.from_numpy(a[:, 1]).bool(),
            "top1": torch.from_numpy(a[:, 2]).bool(), "top5": torch.from_numpy(a[:, 3]).bool(),
            "pred": torch.from_numpy(a[:, 4]).long(), "conf": torch.from_numpy(a[:, 5]),
        }
        for j, k in enumerate(("l0", "l1", "l2", "linf"), start=6):
            out[k] = torch.from_numpy(a[:, j])
        out["queries"] = torch.from_numpy(a[:, 10])
        return out

    def seconds(self, job: str) -> float:
        """Total wall time of a job's stored batches."""
        row = self.db.execute("SELECT COALESCE(SUM(seconds), 0) FROM batches WHERE job = ?", (job,)).fetchone()
        return float(row[0])

    def examples(self, job: str) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Stored (index, x, x_adv) examples of a job, for figures."""
        out = []
        for idx, shape, x, xa in self.db.execute(
            "SELECT idx, shape, x, x_adv FROM examples WHERE job = ? ORDER BY idx", (job,)
        ):
            s = tuple(json.loads(shape))
            out.append(
                (idx, np.frombuffer(x, dtype=np.float32).reshape(s), np.frombuffer(xa, dtype=np.float32).reshape(s))
            )
        return out


def remove_store(path: str | Path) -> None:
    """Delete a store file with its write-ahead log and shared-memory index (a stale log must not meet a new file)."""
    path = Path(path)
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        p.unlink(missing_ok=True)


def config_changes(stored: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """The configuration keys whose values differ; the data counts as the same when its digest is.

    The data directory is recorded beside the data's digest, but the same bytes read from another
    directory give the same numbers, so a moved copy of the data is not a change.

    Args:
        stored: The configuration in the store.
        config: The configuration of the run about to start.

    Returns:
        The differing keys, sorted.
    """
    changed = []
    for key in sorted(set(stored) | set(config)):
        old, new = stored.get(key), config.get(key)
        if key == "data_fingerprint" and isinstance(old, dict) and isinstance(new, dict):
            old, new = old.get("digest"), new.get("digest")
        if old != new:
            changed.append(key)
    return changed


def _short(digest: Any) -> str:
    return f"{str(digest)[:8]}…" if digest else "none recorded"


def _model_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """How the model changed, e.g. ``weights digest 3fa2c0de… → 9c01aa17…``."""
    if old.get("class") != new.get("class"):
        return f"class {old.get('class')} → {new.get('class')}"
    if old.get("name") != new.get("name"):
        return f"black box {old.get('name')} → {new.get('name')}"
    key = "weights" if "weights" in new else "meta"
    return f"{key} digest {_short(old.get(key))} → {_short(new.get(key))}"


def _data_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """How the data changed, e.g. ``data digest 3fa2c0de… → 9c01aa17…, data_dir 'a' → 'b'``."""
    text = f"data digest {_short(old.get('digest'))} → {_short(new.get('digest'))}"
    if old.get("data_dir") != new.get("data_dir"):
        text += f", data_dir {old.get('data_dir')!r} → {new.get('data_dir')!r}"
    return text


def mismatch_message(where: str, stored: dict[str, Any], config: dict[str, Any], changed: list[str]) -> str:
    """One line naming what changed: another model, other data, or the configuration keys that differ.

    Args:
        where: The start of the message (``"out: runs/x"``).
        stored: The configuration in the store.
        config: The configuration of the run about to start.
        changed: The keys that differ (:func:`config_changes`).

    Returns:
        E.g. ``out: runs/x holds results of another model (weights digest 3fa2c0de… → 9c01aa17…); use
        another directory or --force to replace them``.
    """
    parts = []
    unrecorded = [k.split("_")[0] for k in FINGERPRINTS if k in changed and not isinstance(stored.get(k), dict)]
    if unrecorded:  # written before advlab fingerprinted what it evaluated: it cannot be checked
        parts.append(f"a run without {' and '.join(unrecorded)} fingerprints (an older advlab; what it evaluated "
                     "cannot be checked)")
    old_model, old_data = stored.get("model_fingerprint"), stored.get("data_fingerprint")
    if "model_fingerprint" in changed and isinstance(old_model, dict):
        parts.append(f"another model ({_model_change(old_model, config['model_fingerprint'])})")
    if "data_fingerprint" in changed and isinstance(old_data, dict):
        parts.append(f"other data ({_data_change(old_data, config['data_fingerprint'])})")
    rest = [k for k in changed if k not in FINGERPRINTS]
    if rest:
        parts.append(f"a different configuration (differs in {', '.join(rest)})")
    return f"{where} holds results of {' and '.join(parts)}; use another directory or --force to replace them"


def open_store(directory: str | Path, config: dict[str, Any], force: bool, *, arg: str = "out") -> Store:
    """The store of ``directory`` for a run of ``config``: refused, started afresh or replaced as needed.

    The caller holds the directory's lock, so no other process is using the store. The store's
    ``replaced`` is True when an earlier store's contents were discarded (corrupt, forced, or reset).

    Args:
        directory: The output directory (it exists).
        config: The run's configuration, content fingerprints included.
        force: Replace a store that is corrupt or holds finished results of another configuration.
        arg: The argument that named the directory, for error messages.

    Raises:
        StoreCorrupt: The store is corrupt and ``force`` is False.
        ConfigMismatchError: The store holds finished results of another configuration and ``force`` is False.
    """
    path = Path(directory) / STORE_NAME
    replaced = False
    try:
        store = Store(path)
    except StoreCorrupt as e:
        if not force:
            raise StoreCorrupt(f"{arg}: {path} is corrupt ({e.reason}); use --force to replace it", e.reason) from None
        remove_store(path)
        store, replaced = Store(path), True
    stored = store.get_config()
    changed = config_changes(stored, config) if stored is not None else []
    if changed and store.has_results():
        store.close()
        if not force:
            raise ConfigMismatchError(mismatch_message(f"{arg}: {directory}", stored or {}, config, changed))
        remove_store(path)
        store = Store(path)
    elif changed:
        store.reset()  # nothing finished under the old configuration: nothing to lose
    store.replaced = replaced or bool(changed)
    store.set_config(config)
    return store


__all__ = [
    "CLEAN_JOB", "FINGERPRINTS", "SCHEMA", "STORE_NAME", "TABLES", "ConfigMismatchError", "Store", "StoreCorrupt",
    "StoreError", "config_changes", "mismatch_message", "open_store", "remove_store",
]
