"""Write a benchmark's section into docs/benchmarks.md between its own markers."""

from __future__ import annotations

import json
import platform
import re
from datetime import datetime, timezone
from pathlib import Path

import torch

import advlab

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nEvery section is written by the script named in it; rerun the command to reproduce.\n"
DEFENSES_DOC = DOC.parent / "defenses.md"
DEFENSES_HEADER = "# Training defenses: measured\n\nEach section is written by the script named in it.\n"


def environment() -> str:
    """One line naming the date, versions and machine."""
    return (
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · advlab {advlab.__version__} · torch "
        f"{torch.__version__} · {torch.get_num_threads()} threads · {platform.machine()} · "
        f"Python {platform.python_version()}"
    )


def write_section(key: str, body: str, doc: Path = DOC, header: str = HEADER) -> None:
    """Replace (or append) the section between ``<!-- key:start -->`` and ``<!-- key:end -->`` of ``doc``.

    ``header`` starts the file when it does not exist yet.
    """
    text = doc.read_text() if doc.exists() else header
    block = f"<!-- {key}:start -->\n{body.rstrip()}\n<!-- {key}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(key)}:start -->.*?<!-- {re.escape(key)}:end -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)


def write_defenses_section(key: str, body: str) -> None:
    """:func:`write_section` into docs/defenses.md (the robust-training and masking measurements)."""
    write_section(key, body, DEFENSES_DOC, DEFENSES_HEADER)


def publish_defenses(key: str, body: str, record: Path, res: dict, write: bool = True) -> None:
    """Print ``body``; unless ``write`` is false, save ``res`` as JSON to ``record`` and ``body`` as section ``key`` of docs/defenses.md."""
    print(body)
    if write:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(res, indent=1))
        write_defenses_section(key, body)
