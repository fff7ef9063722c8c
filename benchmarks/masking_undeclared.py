"""Does `advlab.evaluate` see through gradient masking that a model does not declare? (issue #14)

    python benchmarks/masking_undeclared.py                       # first 1000 MNIST test images, L∞ ε = 0.3
    python benchmarks/masking_undeclared.py --n 100 --only quantise,no-grad --threads 1

The six models of advlab.models.masking hide their gradients in `forward` and declare nothing
(no `differentiable`, `randomized`, `bpda`, `surrogate`). Each wraps the shipped lenet-mnist. For
each of them, for its declared twin (`wrap_defense(net, spec)`: the same function, declared), and
once for the undefended net, this runs the default `advlab.evaluate(model, "mnist", eps=[0.3])`
and records: clean Acc@1, the naive PGD Acc@1 (the `pgd` row), the worst-case headline (the
`worst-case` row at 0.3) and the attack it names, the gradient-masking checks that fired, the
rows the evaluation added beyond the default attacks, the seconds, and any crash (the issue
forbids one). An undeclared model passes when a check fired, nothing crashed, and its headline is
within 0.05 of its twin's (of the undefended net's where there is no twin).

Writes benchmarks/results/masking_undeclared.json (the evaluation stores under
benchmarks/results/masking_undeclared/NAME/) and the "masking-undeclared" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment, write_section

import advlab
from advlab.evaluation.defaults import DEFAULT_ATTACKS
from advlab.models.masking import UNDECLARED, make_undeclared
from advlab.models.wrappers import wrap_defense

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
EPS = 0.3
TOLERANCE = 0.05  # |headline − reference headline| allowed for a pass
UNDEFENDED = "undefended"


def _row(rows: list[Any], attack: str) -> Any | None:
    """The row of ``attack`` at ε = EPS, or None."""
    return next((r for r in rows if r.attack == attack and r.eps is not None and abs(r.eps - EPS) < 1e-9), None)


def summarise(ev: Any) -> dict[str, Any]:
    """What the benchmark records of one Evaluation."""
    pgd, worst = _row(ev.rows, "pgd"), _row(ev.rows, "worst-case")
    extra = [{"attack": r.attack, "eps": r.eps, "acc1_adv": r.acc1_adv, "warnings": list(r.warnings)}
             for r in ev.rows if r.attack not in DEFAULT_ATTACKS and r.attack != "worst-case"]
    return {
        "clean": ev.rows[0].acc1_clean if ev.rows else None,
        "pgd": pgd.acc1_adv if pgd else None,
        "headline": worst.acc1_adv if worst else None,
        "strongest": worst.strongest if worst else None,
        "fired": [c["code"] for c in ev.checks if c.get("fired")],
        "extra_rows": extra,
    }


def run(label: str, model: torch.nn.Module, args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate ``model`` once; a crash is recorded (with its message), not raised."""
    out = RESULTS / "masking_undeclared" / label.replace(":", "-")
    t0 = time.perf_counter()
    record: dict[str, Any] = {"model": label, "error": None}
    try:
        ev = advlab.evaluate(model, "mnist", eps=[EPS], n=args.n, progress=False, out=out, force=True,
                             model_name=label, surrogate=args.surrogate)
        record.update(summarise(ev))
        record["escalation"] = [(s["step"], round(s["subset_acc1_after"], 3)) for s in ev.meta.get("escalation") or []]
        record["costs"] = ev.meta.get("costs")
    except Exception as exc:  # a crash is a result here: the issue forbids it
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc(limit=-8)
    record["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps({k: v for k, v in record.items() if k != "traceback"}), flush=True)
    return record


def verdict(name: str, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Flagged (a check fired), no crash, headline within TOLERANCE of the twin's (or the undefended net's)."""
    spec = UNDECLARED[name][1]
    mine, ref = runs[name], runs[f"twin {spec}" if spec else UNDEFENDED]
    gap = None
    if mine["error"] is None and ref["error"] is None and None not in (mine["headline"], ref["headline"]):
        gap = round(mine["headline"] - ref["headline"], 4)
    flagged, no_crash = bool(mine.get("fired")), mine["error"] is None
    close = gap is not None and abs(gap) <= TOLERANCE
    return {"model": name, "reference": ref["model"], "reference_headline": ref.get("headline"), "gap": gap,
            "flagged": flagged, "no_crash": no_crash, "close": close, "pass": flagged and no_crash and close}


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _cell(r: dict[str, Any]) -> str:
    """One table line of a run."""
    if r["error"]:
        msg = r["error"].replace("|", "\\|").replace("\n", " ")
        return f"| {r['model']} | crashed: {msg[:160]} | | | | | | | {r['seconds']:.0f} |"
    extra = ", ".join(f"{e['attack']} {e['acc1_adv']:.3f}" for e in r["extra_rows"]) or "none"
    steps = ", ".join(f"{s} → {a:.3f}" for s, a in r.get("escalation") or []) or "none"
    return (f"| {r['model']} | {_f(r['clean'])} | {_f(r['pgd'])} | {_f(r['headline'])} | {r['strongest'] or '—'} | "
            f"{', '.join(r['fired']) or 'none'} | {extra} | {steps} | {r['seconds']:.0f} |")


def write_doc(record: dict[str, Any], command: str) -> None:
    """The "masking-undeclared" section of docs/benchmarks.md."""
    lines = ["| model | clean Acc@1 | naive PGD Acc@1 | worst case Acc@1 | strongest | checks fired | "
             "added rows (Acc@1) | escalation steps (subset Acc@1 after) | s |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [_cell(r) for r in record["runs"]]
    lines += ["", "| undeclared model | compared with | its worst case | reference | gap | flagged | no crash | "
              f"within {TOLERANCE} | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for v in record["verdicts"]:
        mine = next(r for r in record["runs"] if r["model"] == v["model"])
        yn = {True: "yes", False: "**no**"}
        gap = "—" if v["gap"] is None else f"{v['gap']:+.3f}"
        lines.append(f"| {v['model']} | {v['reference']} | {_f(mine.get('headline'))} | "
                     f"{_f(v['reference_headline'])} | {gap} | {yn[v['flagged']]} | {yn[v['no_crash']]} | "
                     f"{yn[v['close']]} | {'pass' if v['pass'] else '**fail**'} |")
    write_section("masking-undeclared", "\n".join([
        "## Undeclared gradient masking (issue #14)", "",
        f"`{command}` · {record['environment']}", "",
        f"lenet-mnist on the first {record['n']} MNIST test images, L∞ ε = {EPS}, the default `advlab.evaluate` "
        f"(its attacks, checks and escalation; transfer surrogate `{record.get('surrogate')}`). Six models that hide their gradients in `forward` and declare "
        "nothing (`advlab.models.masking`), each beside its declared twin (`wrap_defense(net, spec)`, the same "
        "function with `differentiable`/`randomized` declared) or the undefended net. A model passes when a "
        f"gradient-masking check fired, the evaluation did not crash, and its worst case is within {TOLERANCE} "
        "of the reference's.", "", *lines,
    ]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="first N MNIST test images (default 1000)")
    p.add_argument("--only", default=None, help="NAME[,NAME]: a subset of " + ", ".join(UNDECLARED))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--surrogate", default="lenet-mnist-half-a",
                   help="the escalation's transfer surrogate (default lenet-mnist-half-a: trained on the other half "
                        "of MNIST, not the network inside the masked models, as a user's model would be)")
    args = p.parse_args()
    names = list(UNDECLARED) if args.only is None else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in names if s not in UNDECLARED]
    if unknown or not names:
        p.error(f"--only: expected names among {', '.join(UNDECLARED)}, got {args.only!r}")
    torch.set_num_threads(args.threads)
    net = advlab.load_model("lenet-mnist")
    runs: dict[str, dict[str, Any]] = {UNDEFENDED: run(UNDEFENDED, net, args)}
    for name in names:
        runs[name] = run(name, make_undeclared(name, net), args)
        spec = UNDECLARED[name][1]
        if spec is not None:
            runs[f"twin {spec}"] = run(f"twin {spec}", wrap_defense(net, spec), args)
    verdicts = [verdict(name, runs) for name in names]
    for v in verdicts:
        print(json.dumps(v), flush=True)
    command = "python benchmarks/masking_undeclared.py " + " ".join(sys.argv[1:])
    record = {"environment": environment(), "command": command.strip(), "n": args.n, "eps": EPS,
              "surrogate": args.surrogate,
              "tolerance": TOLERANCE, "runs": list(runs.values()), "verdicts": verdicts}
    (RESULTS / "masking_undeclared.json").write_text(json.dumps(record, indent=2) + "\n")
    write_doc(record, command.strip())


if __name__ == "__main__":
    main()
