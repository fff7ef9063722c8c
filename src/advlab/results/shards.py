"""Moving finished batches between results stores: a worker's shard into the run's one store.

Under ``torchrun`` each rank other than 0 writes the batches it attacks into its own shard store
(``OUT/shards/rank-R/results.sqlite``, the same schema, resumable); :func:`dump` reads every finished batch
of a shard as plain rows, which travel to rank 0 over ``torch.distributed`` (so the ranks need no
shared file system), and :func:`load` writes them into rank 0's store in one transaction.
Loading is idempotent: a batch is keyed by (job, batch) and an outcome by (job, example), and the
same batch computed twice (a run resumed with another number of processes) holds the same values.

Example:
    >>> import tempfile, torch
    >>> from advlab.results.store import Store
    >>> d = tempfile.mkdtemp()
    >>> a, b = Store(f"{d}/a.sqlite"), Store(f"{d}/b.sqlite")
    >>> outcome = {c: [0, 1] for c in ("adv", "top1", "top5", "pred", "conf", "l0", "l1", "l2", "linf", "queries")}
    >>> a.put_batch("fgsm|linf|0.1", 3, 0.5, [6, 7], outcome, [])
    >>> load(b, dump(a))
    2
    >>> b.done_batches("fgsm|linf|0.1"), b.outcomes("fgsm|linf|0.1")["idx"].tolist()
    ({3}, [6, 7])
"""

from __future__ import annotations

from typing import Any

from advlab.results.store import Store

# The tables a batch writes (Store.put_batch), in the order they are copied.
BATCH_TABLES = ("outcomes", "examples", "dense", "detect", "batches")


def dump(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every finished batch of ``store``: the raw rows of its outcomes, examples and batches tables."""
    return {t: store.db.execute(f"SELECT * FROM {t}").fetchall() for t in BATCH_TABLES}  # the schema's names


def load(store: Store, rows: dict[str, list[tuple[Any, ...]]]) -> int:
    """Write a :func:`dump` into ``store`` in one transaction; returns the number of outcome rows."""
    with store.db:
        for table in BATCH_TABLES:
            batch = rows.get(table) or []
            if batch:
                marks = ", ".join("?" * len(batch[0]))
                store.db.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", batch)
    return len(rows.get("outcomes") or [])


__all__ = ["BATCH_TABLES", "dump", "load"]
