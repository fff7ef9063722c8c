"""The results store: per-example outcomes in SQLite, written as each batch finishes.

One transaction per finished batch holds every per-example outcome of that batch and its wall
time, so a run killed at any moment (SIGKILL included) loses at most the batch in flight, and a
re-run reads finished batches back instead of recomputing them. The report is rendered from the
store alone.
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
"""


class Store:
    """A SQLite results store at ``path`` (created if missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.db.commit()

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

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
                  examples: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
        """Store one finished batch atomically: outcomes, examples for figures, wall time."""
        cols = ("adv", "top1", "top5", "pred", "conf", "l0", "l1", "l2", "linf", "queries")
        rows = [(job, i, *(outcome[c][k] for c in cols)) for k, i in enumerate(idx)]
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO outcomes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self.db.executemany(
                "INSERT OR REPLACE INTO examples VALUES (?, ?, ?, ?, ?)",
                [(job, i, json.dumps(list(x.shape)), x.astype(np.float32).tobytes(),
                  xa.astype(np.float32).tobytes()) for i, x, xa in examples],
            )
            self.db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?)", (job, batch, seconds))

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


__all__ = ["SCHEMA", "Store"]
