"""The house rules of the source tree: rooms import downwards only, no cycles, small functions and modules.

The rooms and their order are the map at the top of docs/architecture.md. A module may import
modules of its own room or of a lower one, never of a higher one — not even inside a function —
and the module-level import graph has no cycle. Deprecated aliases (old import paths kept for one
release) sit above every room. Sizes are measured on the syntax tree.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PKG = SRC / "advlab"

# Rooms, lowest first: (room, module prefixes). The longest matching prefix decides a module's room.
ROOMS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("advlab._checks", "advlab._device", "advlab._io", "advlab._version", "advlab._deprecation", "advlab._grad_mode", "advlab._paths",
              "advlab.threat", "advlab.metrics", "advlab.metrics_dense")),
    ("physical", ("advlab.physical",)),
    ("data", ("advlab.data",)),
    ("models", ("advlab.models",)),
    ("train", ("advlab.train", "advlab.train_dense")),
    ("attacks", ("advlab.attacks",)),
    ("certify", ("advlab.certify",)),
    ("defenses", ("advlab.defenses",)),
    ("detect", ("advlab.detect",)),
    ("results", ("advlab.results",)),
    ("report", ("advlab.report",)),
    ("poison", ("advlab.poison",)),
    ("lab", ("advlab.lab",)),
    ("evaluation", ("advlab.evaluation",)),
    ("commands", ("advlab.commands", "advlab.cli", "advlab.__main__")),
]
# Old import paths kept working for one release (each warns on import); they may import anything.
ALIASES = {"advlab.attacks.base", "advlab.attacks.apgd", "advlab.attacks.cw", "advlab.attacks.deepfool",
           "advlab.attacks.square", "advlab.attacks.hopskipjump", "advlab.blackbox", "advlab.sklearn_models",
           "advlab.transfer", "advlab.evaluation.runner", "advlab.evaluation.store", "advlab.evaluation.metrics"}
TOP = len(ROOMS)  # the package itself (the public API surface) and the aliases

MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def rank(module: str) -> int:
    if module == "advlab" or module in ALIASES:
        return TOP
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(ROOMS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no room of tests/test_layout.py::ROOMS (add it to the map)")
    return best


def imports(module: str) -> list[tuple[str, int]]:
    """Every advlab module ``module`` imports anywhere in its body (with the line), resolved to a module."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[: len(up) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            # `from advlab.attacks import gradient` imports a module; `from advlab.attacks import pgd` a name
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name.startswith("advlab") and name != module:
                found.add((name, node.lineno))
    return sorted(found)


def test_every_module_is_in_a_room():
    for m in MODULES:
        rank(m)


def test_no_module_imports_a_higher_room():
    upward = []
    for m in MODULES:
        for target, line in imports(m):
            if target == "advlab" and rank(m) < TOP:
                upward.append(f"{m}:{line} imports the advlab package (import the module that defines the name)")
            elif rank(target) > rank(m):
                upward.append(f"{m}:{line} → {target} ({ROOMS[rank(m)][0]} → "
                              f"{ROOMS[rank(target)][0] if rank(target) < TOP else 'top'})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_import_graph_has_no_cycle():
    graph = {m: {t for t, _ in imports(m) if rank(t) < TOP or m in ALIASES or m == "advlab"} for m in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = [*stack[stack.index(t):], t]
                raise AssertionError("import cycle: " + " → ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_each_module_imports_alone():
    """Each module imported first, in a fresh set of advlab modules, imports without error."""
    names = [m for m in MODULES if m not in ALIASES and m != "advlab.__main__"]
    script = (
        "import importlib, sys, warnings\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        f"for name in {names!r}:\n"
        "    for k in [k for k in sys.modules if k == 'advlab' or k.startswith('advlab.')]:\n"
        "        del sys.modules[k]\n"
        "    importlib.import_module(name)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(SRC), "PATH": ""})
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_functions_and_modules_are_small(module):
    path = MODULES[module]
    text = path.read_text()
    lines = len(text.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(SRC)} has {lines} lines (at most {MAX_MODULE_LINES})"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES  # type: ignore[operator]
    ]
    assert not long, f"{path.relative_to(SRC)}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


def test_no_module_is_shadowed_by_a_name_its_package_exports():
    """``import advlab.x.y as m`` gives the module y, not a function the package also calls y."""
    import importlib
    import types

    shadowed = []
    for m in MODULES:
        parent, _, leaf = m.rpartition(".")
        if not parent or m in ALIASES or m == "advlab.__main__":
            continue
        package = importlib.import_module(parent)
        importlib.import_module(m)
        if not isinstance(getattr(package, leaf), types.ModuleType):
            shadowed.append(f"{m} (the package's {leaf!r} is a {type(getattr(package, leaf)).__name__})")
    assert not shadowed, "modules shadowed by a package attribute: " + ", ".join(shadowed)
