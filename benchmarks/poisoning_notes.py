"""The prose of docs/poisoning.md: number formats and the notes under each table (split from poisoning_doc.py)."""

from __future__ import annotations

import math
from typing import Any


def pct(v: float | None, digits: int = 2) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.{digits}f} %"


def pts(a: float, b: float) -> str:
    return f"{100 * (a - b):+.2f}"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def first_over(sweep: list[dict[str, Any]], level: float = 0.9) -> dict[str, Any] | None:
    return next((r for r in sweep if r["asr"] > level), None)


def backdoor_note(r: dict[str, Any]) -> str:
    px, px5 = r["pixel"], r["pixel5"]
    notes = [f"The single-pixel trigger reaches ASR {pct(px['asr'])} at 1 % and {pct(px5['asr'])} at 5 %"
             + (": one bright pixel is a much weaker feature than the 3×3 pattern, and with 1 % of the set "
                "lenet keeps classifying the poisons by their digit (Gu et al. report it working on a larger "
                "poisoned share)." if px["asr"] < 0.9 else ".")]
    low = [v for v in r["a2a"] if v["strip_auc"] < 0.5]
    if low:
        notes.append("STRIP fails on the all-to-all backdoor (AUC "
                     + ", ".join(f"{v['strip_auc']:.3f} at {v['fraction']:g}" for v in r["a2a"])
                     + "; below 0.5 means triggered inputs have *higher* entropy than clean ones): STRIP assumes the "
                     "trigger pins every input to one class, but here the backdoor's output depends on the "
                     "input's own class, which the superimposed image blurs.")
    if px["asr"] < 0.5:
        notes.append(f"(The 1 % pixel row's STRIP AUC of {px['strip_auc']:.3f} is no STRIP failure: that backdoor "
                     "was not learned, so there is nothing to detect.)")
    return " ".join(notes)


def flip_note(flips: list[dict[str, Any]], clean: float, src: int) -> str:
    top = max(v["fraction"] for v in flips)
    at = {v["attack"]: v for v in flips if v["fraction"] == top}
    drops = {a.replace("flip-", ""): 100 * (clean - v["acc1"]) for a, v in at.items()}
    worst = max(drops, key=lambda k: drops[k])
    return (f"At the largest fraction ({top:g}) the accuracy drops are: "
            + ", ".join(f"{k} {v:.2f} points" for k, v in drops.items())
            + f"; the most damaging is {worst}. Rolnick et al.'s observation that uniform noise barely hurts "
            + ("holds here" if drops["uniform"] < 1.0 else "does not hold here (≥ 1 point)")
            + f". The pair flip's damage falls on class {src} (last column).")


def spectral_note(r: dict[str, Any]) -> str:
    """The arithmetic of a fixed removal share: the least clean share of the class it must remove."""
    m, poisons, n_clean = r["defenses"]["spectral"], r["badnets"]["poisons"], r["class_count"]
    removal = m["options"]["removal"]
    dg = r["defenses"]["diagnostic_depth1"]
    floor = max(0.0, (removal * (n_clean + poisons) - poisons) / n_clean)
    return (f"Tran et al.'s rule removes a fixed share (here {removal:g} = 1.5 × an assumed bound ε = "
            f"{removal / 1.5:g}) of *every* class. Class {r['target']} holds {n_clean} clean images and {poisons} "
            f"poisons ({pct(poisons / (n_clean + poisons), 1)} of the class), so even a perfect ranking must also "
            f"remove {pct(floor, 1)} of the class's clean images: the ≤ 5 % FPR criterion can only be met when the "
            "assumed bound is at most about (poisons + 5 % of the clean images) / (1.5 × class size) — i.e. when it "
            "is nearly the true rate, which the rule must not read. The sensitivity table shows the trade-off "
            "(detection only, same model and features). "
            f"Diagnostic (class {r['target']}, the poisoned model's features): |cos| between the top singular "
            f"vector and the poisons' mean shift = {dg['cos_top']:.2f}; the shift's own singular value "
            f"‖Δμ‖·√(n·p(1−p)) = {dg['signal']:.0f} against the top two singular values {dg['sv1']:.0f}, "
            f"{dg['sv2']:.0f}. Spectral signatures rank poisons first only when the shift dominates the clean "
            "spread, i.e. when the top direction is the shift (|cos| near 1). "
            + retrain_note(r))


def retrain_note(r: dict[str, Any]) -> str:
    m = r["defenses"]["spectral"]
    left = round((1 - m["tpr"]) * r["badnets"]["poisons"])
    near = min(r["sweep"], key=lambda v: abs(v["poisons"] - left))
    return (f"After spectral removal {left} poisons stay in the training set; the sweep above shows how few "
            f"suffice ({near['poisons']} poisons alone: ASR {pct(near['asr'])}), which is why the retrained "
            f"model's ASR is {pct(m['asr'])}: a detector must find nearly all poisons, not 90 %, to remove a "
            "backdoor this cheap.")


def held_out_note(r: dict[str, Any]) -> str:
    """Which detector figures carry over from the development run to the held-out runs."""
    parts = []
    for name in ("spectral", "activation-clustering"):
        tprs = [r["defenses"][name]["tpr"]] + [h[name]["tpr"] for h in r["held_out"]]
        asrs = [r["defenses"][name]["asr"]] + [h[name]["asr"] for h in r["held_out"]]
        parts.append(f"{name}: poisons found {', '.join(pct(v) for v in tprs)}; ASR after retraining "
                     f"{', '.join(pct(v) for v in asrs)} (development run first)")
    return ("Across the three runs — " + "; ".join(parts) + ". A detector that meets the criteria on one run and "
            "not another has not met them: the verdicts in the acceptance table take every run. The |cos| column "
            "is Tran et al.'s condition: spectral signatures rank poisons first only when the top singular "
            "direction of the class is the poisons' mean shift.")


def clean_label_note(r: dict[str, Any]) -> str:
    best = max(r["clean_label"], key=lambda v: v["asr"])
    if best["asr"] >= 0.8:
        return f"Best variant: {best['variant']}, ASR {pct(best['asr'])}."
    hard = [v for v in r["clean_label"] if v["clean_acc_on_poisons"] < 0.1]
    easy = [v for v in r["clean_label"] if v["clean_acc_on_poisons"] >= 0.5 and "PGD" in v["variant"]]
    text = (f"**Missed**: the best ASR reached is {pct(best['asr'])} ({best['variant']}). Turner et al.'s "
            "mechanism needs poisons whose content the victim cannot use, so that the trigger becomes the easiest "
            "explanation of their label; the 'poisons called 7' columns measure that hardness. ")
    if hard:
        text += ("Even poisons the clean lenet no longer calls 7 ("
                 + ", ".join(f"{v['variant']}: {pct(v['clean_acc_on_poisons'], 1)}" for v in hard)
                 + f") gave ASR ≤ {pct(max(v['asr'] for v in hard))}: the victim fitted those 600 images without "
                 "forming a trigger → 7 rule (a plausible reading, not measured: it can memorise them by their "
                 "perturbation, itself a strong feature, rather than by the 9-pixel trigger). ")
    if easy:
        text += ("Where the surrogate resists its own PGD ("
                 + ", ".join(f"{v['variant']}: {pct(v['clean_acc_on_poisons'], 1)} still called 7" for v in easy)
                 + ") the poisons stay easy. ")
    return text + ("The ε = 0.5 variant was added after the first three missed, as a stronger try (its poisons "
                   "no longer look like clean digits, so it is hardly label-consistent); see 'Changed after first "
                   "results' below.")
