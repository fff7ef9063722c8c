"""Write a benchmark's section into docs/benchmarks.md between its own markers."""

from __future__ import annotations

import platform
import re
from datetime import datetime, timezone
from pathlib import Path

import torch

import advlab

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nEvery section is written by the script named in it; rerun the command to reproduce.\n"


def environment() -> str:
    """One line naming the date, versions and machine."""
    return (
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · advlab {advlab.__version__} · torch "
        f"{torch.__version__} · {torch.get_num_threads()} threads · {platform.machine()} · "
        f"Python {platform.python_version()}"
    )


def write_section(key: str, body: str) -> None:
    """Replace (or append) the section between ``<!-- key:start -->`` and ``<!-- key:end -->``."""
    text = DOC.read_text() if DOC.exists() else HEADER
    block = f"<!-- {key}:start -->\n{body.rstrip()}\n<!-- {key}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(key)}:start -->.*?<!-- {re.escape(key)}:end -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
