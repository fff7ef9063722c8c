"""The peers benchmark's verdicts and report: agreement, the speed targets, the docs section (from peers.py).

Split from benchmarks/peers.py, which runs the cases; it imports this module inside ``main()``
(after registering itself as ``peers`` when run as a script, so the cases are defined once).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from peers import CASES, LIB_NAMES, ROBUST_CASES, SEED

# ---- agreement and speed targets ---------------------------------------------------------------

def _per_image(r: dict) -> float:
    return r["seconds"] / r["n"]


def _fastest_peer(res: dict, key: str) -> dict | None:
    peers = [r for r in res["rows"] if r["case"] == key and r["library"] != "advlab"]
    return min(peers, key=_per_image) if peers else None


def _get(res: dict, key: str, lib: str) -> dict | None:
    return next((r for r in res["rows"] if r["case"] == key and r["library"] == lib), None)


def agreement(res: dict) -> list[str]:
    lines = []
    for key, name in (("pgd", "PGD"), ("fgsm", "FGSM")):
        a, t = _get(res, key, "advlab"), _get(res, key, "torchattacks")
        if a and t:
            lines.append(f"{name} robust accuracy: advlab {a['acc1']:.3f} vs torchattacks {t['acc1']:.3f} "
                         f"({100 * (a['acc1'] - t['acc1']):+.1f} points)")
    for key, name in (("deepfool", "DeepFool"), ("cw", "CW-L2")):
        a = _get(res, key, "advlab")
        peers = [r for r in res["rows"] if r["case"] == key and r["library"] != "advlab"]
        if a and peers:
            best = max(peers, key=lambda r: r["success"])
            lines.append(f"{name} success: advlab {a['success']:.3f} vs best peer {LIB_NAMES[best['library']]} "
                         f"{best['success']:.3f} ({100 * (a['success'] - best['success']):+.1f} points); median L2 "
                         f"advlab {a['median_l2']:.3f} vs {best['median_l2']:.3f}")
    return lines


def _speed(res: dict, key: str, ref: str | None = None) -> tuple[float, dict] | None:
    """advlab's speed on case ``key`` ÷ the fastest peer's on case ``ref`` (per image)."""
    a, p = _get(res, key, "advlab"), _fastest_peer(res, ref or key)
    return (_per_image(p) / _per_image(a), p) if a and p else None


def target_pgd(res: dict) -> tuple[str, bool] | None:
    s, a = _speed(res, "pgd"), _get(res, "pgd", "advlab")
    if not s or not a:
        return None
    ratio, p = s
    eff = a["floor_efficiency"]
    text = (f"PGD fixed steps ≥ 1.0× fastest peer ({LIB_NAMES[p['library']]}) and ≥ 0.9 floor efficiency: "
            f"{ratio:.2f}×, efficiency {eff:.2f}")
    if "view_floor_efficiency" in a:
        text += (f" (against the floor pass through advlab's view of the model, as its attacks run it: "
                 f"{a['view_floor_efficiency']:.2f})")
    cl = _speed(res, "pgd", "pgd-cl")
    if cl:
        text += (f"; against the fastest peer handed a channels_last copy of the model "
                 f"({LIB_NAMES[cl[1]['library']]}): {cl[0]:.2f}×")
    return text, ratio >= 1.0 and eff >= 0.9


def target_pgd_es(res: dict) -> tuple[str, bool] | None:
    s, a, fixed = _speed(res, "pgd-es", "pgd"), _get(res, "pgd-es", "advlab"), _get(res, "pgd", "advlab")
    if not s or not a or not fixed:
        return None
    ratio, p = s
    same = a["acc1"] == fixed["acc1"] == p["acc1"]
    return (f"PGD early stop ≥ 1.5× fastest peer's fixed-step PGD ({LIB_NAMES[p['library']]}) with identical "
            f"robust accuracy: {ratio:.2f}×, Acc@1 {a['acc1']:.3f} (advlab fixed {fixed['acc1']:.3f}, "
            f"{LIB_NAMES[p['library']]} {p['acc1']:.3f})", ratio >= 1.5 and same)


def _minimal_target(res: dict, key: str, name: str, need: float) -> tuple[str, bool] | None:
    s, a = _speed(res, key), _get(res, key, "advlab")
    if not s or not a:
        return None
    ratio, p = s
    l2 = a["median_l2"] / p["median_l2"] - 1
    text = (f"{name} ≥ {need:g}× fastest peer ({LIB_NAMES[p['library']]}) with median L2 ≤ its +2%: "
            f"{ratio:.2f}×, median L2 {a['median_l2']:.3f} vs {p['median_l2']:.3f} ({100 * l2:+.1f}%)")
    # Medians compare only over the same images: peers run on all of advlab's, at no lower success.
    same = [r for r in res["rows"] if r["case"] == key and r["library"] != "advlab" and r["n"] == a["n"]
            and r["success"] >= a["success"]]
    best = min(same, key=lambda r: r["median_l2"]) if same else p
    if best is not p:
        text += (f" [for reference, vs the peer with the smallest median L2 on the same images at no lower success, "
                 f"{LIB_NAMES[best['library']]}: {_per_image(best) / _per_image(a):.2f}×, median L2 "
                 f"{100 * (a['median_l2'] / best['median_l2'] - 1):+.1f}%]")
    return text, ratio >= need and l2 <= 0.02


TARGETS: list[Callable[[dict], tuple[str, bool] | None]] = [
    target_pgd,
    target_pgd_es,
    lambda res: _minimal_target(res, "deepfool", "DeepFool", 3.0),
    lambda res: _minimal_target(res, "cw", "CW-L2", 1.0),
]


# ---- reporting ---------------------------------------------------------------------------------

def _f(v: float | None, fmt: str = ".3f") -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def table(res: dict) -> list[str]:
    lines = [
        "| library | attack | n | wall time (median s) | images/s | Acc@1 | Acc@5 | success | median L2 | "
        "median L∞ | valid | advlab/peer speed | floor efficiency |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        speed = f"{r['advlab_speedup']:.2f}×" if "advlab_speedup" in r else "—"
        lines.append(
            f"| {LIB_NAMES[r['library']]} | {r['attack']} | {r['n']} | {r['seconds']:.2f} | "
            f"{r['images_per_s']:.0f} | {r['acc1']:.3f} | {r['acc5']:.3f} | {r['success']:.3f} | "
            f"{_f(r['median_l2'])} | {_f(r['median_linf'])} | {r['valid']:.3f} | {speed} | "
            f"{_f(r.get('floor_efficiency'), '.2f')} |"
        )
    return lines


def observations(res: dict) -> list[str]:
    lines = []
    for r in res["rows"]:
        who = f"{LIB_NAMES[r['library']]} {r['attack']}"
        if r["all_black"]:
            lines.append(f"{who} returned {r['all_black']} all-black images (its failures); scored as the model "
                         "sees them, so they count as successes if the black image is misclassified")
        if r["near_boundary"]:
            lines.append(f"{who} left {r['near_boundary']} images within 1e-5 of the decision boundary (true-class "
                         f"logit minus the best other), {r['ties']} of them exact ties; {r['near_boundary_correct']} "
                         f"of them are still classified correctly (argmax breaks a tie towards the lower class index, "
                         f"so {r['ties_success']} of the ties count as successes)")
        if r["valid"] < 1:
            lines.append(f"{who}: only {r['valid']:.3f} of x_adv inside [0, 1] and the ε-ball (+1e-5)")
        if not r["deterministic"]:
            lines.append(f"{who}: x_adv differed between repeats (scores are from the first)")
    for s in res["skipped"]:
        lines.append(f"{LIB_NAMES[s['library']]} skipped for {s['case']}: {s['why']}")
    lines += [
        "Foolbox's CW returns an all-black (all-zero) image for every example it fails on; any such image is "
        "scored like any other x_adv (all-black CW images in this run: "
        + ", ".join(f"{LIB_NAMES[r['library']]} {r['all_black']}" for r in res["rows"] if r["case"] == "cw")
        + ").",
        "torchattacks' DeepFool leaves images on (not past) the boundary: where clipping to [0, 1] eats part of "
        "each step it converges to the tie and runs all 50 iterations; argmax then breaks the tie towards the "
        "lower class index, so many of its x_adv are still classified correctly. ART's DeepFool attacks the "
        "predicted class, not the label.",
        "Speed ratios are per image. Where a peer ran on fewer images (the n column) its batches are smaller, "
        "which on a CPU costs some per-image efficiency, so those ratios overstate the gap somewhat.",
        "Floor efficiency above 1 means a library's gradient steps ran faster than the floor pass measured at the "
        "start of the repeat: under a varying load the floor is itself noisy.",
    ]
    return lines


def report(res: dict, targets: list[tuple[str, bool]]) -> str:
    v = res["versions"]
    caps = sorted({r["n"] for r in res["rows"]} - {res["n"]})
    lines = [
        "## advlab vs torchattacks, Foolbox, ART",
        "",
        f"`python benchmarks/peers.py --n {res['n']} --repeats {res['repeats']} --model {res['model']}` "
        f"(`make bench-peers`) — `{res['model']}`, first {res['n']} MNIST test images"
        + (f" (fewer where the n column says so: {', '.join(map(str, caps))})" if caps else "")
        + f", seed {SEED}. {res['environment']}. Libraries: advlab {v['advlab']}, torchattacks "
        f"{v['torchattacks']}, Foolbox {v['foolbox']}, ART {v['art']}; CPU {res['processor'] or res['machine']}. "
        f"Clean Acc@1 {res['clean_acc1']:.3f}, Acc@5 {res['clean_acc5']:.3f}. Whole run "
        + (f"{res['end_to_end_seconds'] / 60:.1f} min end to end (this model's cases "
           f"{res['total_seconds'] / 60:.1f} min)" if "end_to_end_seconds" in res
           else f"{res['total_seconds'] / 60:.1f} min")
        + f"; load average {res['load_average_before'][0]:.1f} before, "
        f"{res['load_average_after'][0]:.1f} after (2 cores shared with other jobs: the times are noisy, "
        "and the floor is measured under the same load).",
        "",
        f"Each time is the median of {res['repeats']} interleaved repeats (repeat r runs every case of every "
        "library before repeat r+1). Every x_adv is scored here, from the model's prediction on it, never "
        "from a library's own success flag: success = prediction ≠ label; medians over successful examples; "
        "valid = fraction finite, inside [0, 1] and inside the ε-ball (+1e-5). advlab/peer speed = the "
        "peer's time per image ÷ advlab's (for the same case; advlab's fixed-step PGD for the peers' PGD). "
        f"Floor: one forward+backward (input gradient) pass over the {res['n']}-image batch, "
        f"{res['floor_images_per_s']:.0f} images/s ({res['floor_seconds'] * 1000:.1f} ms); floor efficiency = "
        "(images × gradient steps / time) ÷ floor. advlab's attacks run the model through "
        "`advlab.attacks.fast_view` (detached parameters, channels_last convolution weights; the model "
        "itself is untouched): the same pass through that view runs at "
        + (f"{res['n'] / res['view_floor_seconds']:.0f} images/s" if "view_floor_seconds" in res else "—")
        + ", and the `pgd-cl` row hands the peers a channels_last copy of the model to show how much of "
        "the difference is that layout.",
        "",
        "Matched settings:",
        "",
    ]
    lines += [f"- {c.label}: {res['settings'][c.key]}" for c in CASES if c.key in res["settings"]]
    rob = res.get("robust")
    lines += ["", *table(res), "", "Agreement:", ""]
    lines += [f"- {s}" for s in agreement(res)]
    lines += ["", "Speed targets:", ""]
    lines += [f"- **{'PASS' if ok else 'MISS'}** {s}" for s, ok in targets]
    obs = observations(res)
    if obs:
        lines += ["", "Observations:", ""] + [f"- {s}" for s in obs]
    if rob:
        lines += _robust_lines(rob)
    return "\n".join(lines)


def _robust_lines(rob: dict) -> list[str]:
    """The robust model's subsection: its settings, its table and the AutoAttack comparisons."""
    lines = ["", f"### On the adversarially trained `{rob['model']}` (first {rob['n']} images, "
             f"{rob['repeats']} repeat(s))", "", "Matched settings:", ""]
    lines += [f"- {c.label}: {rob['settings'][c.key]}" for c in ROBUST_CASES if c.key in rob["settings"]]
    lines += ["", *table(rob), ""]
    for key, what in (("autoattack", "10 iterations, as torchattacks ships AutoAttack-standard"),
                      ("autoattack-100", "100 iterations, as the original AutoAttack")):
        a, t = _get(rob, key, "advlab"), _get(rob, key, "torchattacks")
        if a and t:
            lines.append(f"- {what}: robust accuracy advlab APGD ensemble {a['acc1']:.3f} vs torchattacks "
                         f"{t['acc1']:.3f} ({100 * (a['acc1'] - t['acc1']):+.1f} points); advlab "
                         f"{_per_image(t) / _per_image(a):.2f}× torchattacks' speed per image.")
    a, p40 = _get(rob, "autoattack-100", "advlab"), _get(rob, "pgd", "advlab")
    if a and p40:
        lines.append(f"- The 100-iteration ensemble's robust accuracy {a['acc1']:.3f} is "
                     f"{'≤' if a['acc1'] <= p40['acc1'] else '>'} PGD-40's {p40['acc1']:.3f} on the same images.")
    return lines


def _json_safe(v):
    """NaN → null, so the file is strict JSON."""
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    return v


def _nan(d: dict) -> dict:
    """null → NaN for the median columns (the inverse of _json_safe)."""
    return {k: float("nan") if v is None and k.startswith("median") else v for k, v in d.items()}
