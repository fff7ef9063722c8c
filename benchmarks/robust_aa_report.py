"""The models and the report of benchmarks/robust_aa.py: recipes, peers' versions, the summary, the Markdown.

Split from robust_aa.py (which runs the models and the peers and keeps the cache) so that each stays
readable; robust_aa.py imports everything here.
"""

from __future__ import annotations

from advlab.evaluation.defaults import DEFAULT_ATTACKS

SHIPPED = "cnn-mnist-robust"

# The exact commands of /work/robust/train.sh (run from the advlab checkout), by model stem.
TRAIN = {
    "cnn-fast": "advlab train --model cnn --dataset mnist --epochs 8 --batch-size 128 --lr 1e-3 --defense fast "
                "-o eps=0.3 --seed 1 --threads 1 --no-progress --out /work/robust/cnn-fast.safetensors",
    "cnn-trades": "advlab train --model cnn --dataset mnist --epochs 4 --batch-size 128 --lr 1e-3 --defense trades "
                  "-o eps=0.3 -o steps=10 --seed 2 --threads 1 --no-progress --out /work/robust/cnn-trades.safetensors",
    "cnn-pgd40": "advlab train --model cnn --dataset mnist --epochs 3 --batch-size 128 --lr 1e-3 --defense pgd "
                 "-o eps=0.3 -o steps=40 --seed 3 --threads 1 --no-progress --out /work/robust/cnn-pgd40.safetensors",
    "cnn-fast-warmup": "advlab train --model cnn --dataset mnist --epochs 8 --batch-size 128 --lr 1e-3 --defense fast "
                       "-o eps=0.3 -o eps_warmup=0.3 --seed 1 --threads 1 --no-progress "
                       "--out /work/robust/cnn-fast-warmup.safetensors",
    "cnn-pgd20-warmup": "advlab train --model cnn --dataset mnist --epochs 3 --batch-size 128 --lr 1e-3 --defense pgd "
                        "-o eps=0.3 -o steps=20 -o eps_warmup=0.3 --seed 3 --threads 1 --no-progress "
                        "--out /work/robust/cnn-pgd20-warmup.safetensors",
    "cnn-mixed-pgd10": "advlab train --model cnn --dataset mnist --epochs 3 --batch-size 128 --lr 1e-3 --defense "
                       "adversarial -o attack=pgd -o eps=0.3 -o steps=10 -o clean_weight=0.5 -o eps_warmup=0.3 "
                       "--seed 4 --threads 1 --no-progress --out /work/robust/cnn-mixed-pgd10.safetensors",
}
RECIPES = {"cnn-fast": "fast FGSM-AT (no warm-up: catastrophic overfitting)", "cnn-trades": "TRADES (10 steps)",
           "cnn-pgd40": "Madry PGD-40 (no warm-up: collapsed to one class)",
           "cnn-fast-warmup": "fast FGSM-AT, ε warm-up (catastrophic overfitting again)",
           "cnn-pgd20-warmup": "Madry PGD-20, ε warm-up",
           "cnn-mixed-pgd10": "50% clean + 50% PGD-10 loss, ε warm-up",
           SHIPPED: "PGD-10, ε warm-up (shipped)"}
VERSIONS = {
    "aa-standard": "torchattacks AutoAttack-standard (10 iterations)",
    "aa-100": "AutoAttack with 100 iterations (peers.py `_ta_autoattack_100`)",
}


def acc(mask: list[int] | None) -> float | None:
    return sum(mask) / len(mask) if mask else None



def compare(adv: list[int], peers: dict[str, list[int]]) -> dict:
    """Examples some AutoAttack breaks that advlab leaves robust, by which; and the reverse count."""
    n = len(adv)
    aa_robust = [all(m[i] for m in peers.values()) for i in range(n)]
    misses = [i for i in range(n) if adv[i] and not aa_robust[i]]
    return {
        "misses": misses,
        "misses_by": {str(i): [v for v, m in peers.items() if not m[i]] for i in misses},
        "misses_per_version": {v: sum(1 for i in range(n) if adv[i] and not m[i]) for v, m in peers.items()},
        "reverse": sum(1 for i in range(n) if not adv[i] and aa_robust[i]),
    }


def summarize(stem: str, entry: dict) -> dict:
    """The figures of one model from its cache entry (None where a part has not run)."""
    rec: dict = {"model": stem, "recipe": RECIPES.get(stem, ""), "sha256": entry["sha256"], "n": entry["n"],
                 "eps": entry["eps"], "train_command": TRAIN.get(stem, entry.get("train_command")),
                 "clean_acc1": acc(entry["clean"])}
    peers = entry["peers"]
    for v in VERSIONS:
        p = peers.get(v)
        rec[v] = None if p is None else {"acc1": acc(p["mask"]), "seconds": p["seconds"], "valid": p["valid"],
                                         "threads": p.get("threads")}
    adv = entry.get("advlab")
    rec["advlab"] = None if adv is None else {
        "acc1": acc(adv["mask"]), "seconds": adv["seconds"], "strongest": adv["strongest"], "added": adv["added"],
        "rows": adv["rows"], "checks_fired": adv["checks_fired"], "source": adv["source"],
        "threads": adv.get("threads"), "advlab": adv.get("advlab"), "src": adv.get("src"),
        "meta": adv.get("meta") or {},
    }
    rec["fab_leftovers"] = entry.get("fab_leftovers")
    rec["verdict"] = None
    if adv is not None and all(v in peers for v in VERSIONS):
        a = rec["advlab"]["acc1"]
        rec["verdict"] = all(a <= rec[v]["acc1"] + 1e-12 for v in VERSIONS)
        rec.update(compare(adv["mask"], {v: peers[v]["mask"] for v in VERSIONS}))
        if adv.get("broken_by"):
            rec["reverse_by"] = {}
            for i, by in enumerate(adv["broken_by"]):
                if by is not None and all(peers[v]["mask"][i] for v in VERSIONS):
                    rec["reverse_by"][by] = rec["reverse_by"].get(by, 0) + 1
    return rec


def _f(v: float | None, fmt: str = ".4f") -> str:
    return "—" if v is None else format(v, fmt)


def table_lines(records: list[dict]) -> list[str]:
    lines = [
        "| model (recipe) | clean Acc@1 | advlab worst case Acc@1 · strongest row · rows added by the checks "
        "| advlab time (s) | AA-standard Acc@1 | AA-standard time (s) | AA-100 Acc@1 | AA-100 time (s) "
        "| advlab ≤ both | AA breaks, advlab misses | advlab breaks, AA misses |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        a, s, h = r["advlab"] or {}, r["aa-standard"] or {}, r["aa-100"] or {}
        worst = "not run" if not a else (f"**{a['acc1']:.4f}** · {a['strongest']} · "
                                         f"{', '.join(a['added']) or 'none'}")
        verdict = "—" if r["verdict"] is None else ("yes" if r["verdict"] else "**NO**")
        misses = "—" if "misses" not in r else str(len(r["misses"]))
        lines.append(
            f"| `{r['model']}` ({r['recipe']}{'; cached run, not rerun' if r.get('cached_only') else ''}) | {_f(r['clean_acc1'])} | {worst} | {_f(a.get('seconds'), '.0f')} "
            f"| {_f(s.get('acc1'))} | {_f(s.get('seconds'), '.0f')} | {_f(h.get('acc1'))} "
            f"| {_f(h.get('seconds'), '.0f')} | {verdict} | {misses} | {r.get('reverse', '—')} |"
        )
    return lines


def detail_lines(records: list[dict]) -> list[str]:
    lines = []
    for r in records:
        if "misses" not in r:
            continue
        by = ", ".join(f"{i} ({'+'.join(v)})" for i, v in r["misses_by"].items()) or "none"
        lines.append(f"- `{r['model']}`: AutoAttack breaks, advlab misses: {by}; advlab breaks, neither AutoAttack "
                     f"does: {r['reverse']}" + (f" (first broken by {r['reverse_by']})" if r.get("reverse_by") else ""))
        fab = r.get("fab_leftovers")
        if fab is not None:
            lines.append(f"  - FAB-T (torchattacks, 9 targets, 100 steps) on the {fab['tried']} examples advlab left "
                         f"robust: broke {len(fab['broken'])} {fab['broken'] or ''} in {fab['seconds']:.0f} s")
    return lines


def report(res: dict) -> str:
    """The "robust-aa" section of docs/benchmarks.md."""
    n, eps, recs = res["n"], res["eps"], res["models"]
    sources = sorted({r["advlab"]["source"] for r in recs if r["advlab"]})
    threads = sorted({t for r in recs for p in (r["aa-standard"], r["aa-100"], r["advlab"]) if p
                      for t in [p.get("threads")] if t})
    lines = [
        "## Robust models: advlab's default evaluation vs AutoAttack (issue 14)", "",
        f"`{res['command']}` · {res['environment']}", "",
        f"The first {n} MNIST test images, L∞ ε = {eps}, every model scored from its own argmax on each "
        "library's x_adv. **advlab** is the default `advlab.evaluate(model, \"mnist\", n=n)`: default attacks "
        f"({', '.join(DEFAULT_ATTACKS)}), default ε sweep 0.1/0.2/0.3, gradient-masking checks on; its worst "
        f"case at ε = {eps} counts an example broken if any attack run at that ε broke it (per example from: "
        f"{'; '.join(sources) or '—'}). **AA-standard** is torchattacks `AutoAttack(version=\"standard\")` "
        "(APGD-CE, APGD-T, FAB-T, Square 5 000 queries, with torchattacks' 10 iterations); **AA-100** the same "
        "four attacks with 100 iterations as the original AutoAttack runs them (`_ta_autoattack_100` in "
        "benchmarks/peers.py). Times are wall seconds on the shared 2-core machine "
        f"(torch threads: {', '.join(map(str, threads)) or '—'}); the peers' results are cached per model "
        "(benchmarks/results/robust_aa/<model>.json, keyed by the sha256 of the weights' tensors, n and ε).", "",
        "The three adversarially trained models (`/work/robust/train.sh`, run from the advlab checkout):", "",
        "```", *TRAIN.values(), "```", "",
        f"`{SHIPPED}` is the shipped model (`{res.get('shipped_command') or 'see docs/defenses.md'}`).", "",
        *table_lines(recs), "",
        "\"AA breaks, advlab misses\": examples either AutoAttack leaves misclassified that advlab's worst case "
        "leaves correct (listed below with the version that broke them); \"advlab breaks, AA misses\": the "
        "reverse, examples neither AutoAttack breaks."
        + (" A row marked \"cached run, not rerun\" is a model whose weights were not on the machine "
           "(`--no-train`): its figures are from the cached earlier run, advlab's part from the advlab of that run."
           if any(r.get("cached_only") for r in recs) else ""), "",
        *(detail_lines(recs) or ["- (no model has both parts yet)"]),
    ]
    return "\n".join(lines)
