"""The public API as a user meets it: the README's example runs, docstring examples run, types check."""

from __future__ import annotations

import doctest
import importlib
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"


def _modules() -> list[str]:
    names = []
    for p in sorted((SRC / "advlab").rglob("*.py")):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def _has_examples(name: str) -> bool:
    path = SRC / (name.replace(".", "/") + ".py")
    if not path.exists():
        path = SRC / name.replace(".", "/") / "__init__.py"
    return ">>> " in path.read_text()


@pytest.mark.parametrize("name", [m for m in _modules() if _has_examples(m)])
def test_docstring_examples_run(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # aliases re-export the examples' owners
        module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples failed"


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks, "the README has no python example"
    for block in blocks:
        namespace: dict[str, object] = {}
        exec(compile(block, "README.md", "exec"), namespace)


def test_attack_functions_type_check(tmp_path):
    """``from advlab.attacks import pgd`` is typed: mypy accepts a right call and flags a wrong one."""
    snippet = tmp_path / "use_pgd.py"
    snippet.write_text(
        "import torch\n"
        "from advlab import ThreatModel\n"
        "from advlab.attacks import AttackResult, pgd\n"
        "model = torch.nn.Linear(4, 2)\n"
        "x, y = torch.rand(2, 4), torch.tensor([0, 1])\n"
        "ok: AttackResult = pgd(model, x, y, ThreatModel('linf', 0.1), steps=10, loss='margin')\n"
        "bad = pgd(model, x, y, ThreatModel('linf', 0.1), steps='ten')\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent", "--ignore-missing-imports",
         "--cache-dir", str(tmp_path / "cache"), str(snippet)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and "use_pgd.py:7" in errors[0] and '"steps"' in errors[0], done.stdout
