"""What an evaluation produces: table rows, jobs, the SQLite store, rows aggregated from it, transfer records.

The report is rendered from these records alone; nothing here runs an attack.
"""

from advlab.results.aggregate import compute_rows, stored_jobs
from advlab.results.plan import DEFAULT_EPS, Job, batch_seed, plan_jobs
from advlab.results.records import CONTRACT_KEYS, Row, TransferRecord, environment
from advlab.results.store import Store

__all__ = [
    "CONTRACT_KEYS", "DEFAULT_EPS", "Job", "Row", "Store", "TransferRecord", "batch_seed", "compute_rows",
    "environment", "plan_jobs", "stored_jobs",
]
