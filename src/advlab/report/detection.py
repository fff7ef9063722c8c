"""The report's reject option (issue 16): what the detector was fitted on, and ROC curves from the store alone.

One ROC figure per attack family (a row name: ``pgd``, ``cw``, …), one curve per ε: the scores of
the adversarial examples that fool the classifier at that ε (positives) against the scores of the
clean test images (negatives), with the calibrated threshold's operating point marked.
"""

from __future__ import annotations

import html
import math
from typing import Any

import torch

from advlab.metrics import outcome_at_eps, roc_auc, roc_curve
from advlab.report.figures import new_figure, plain_axes, png_bytes
from advlab.report.settings import html_table, md_table, norm_label
from advlab.report.tables import eps_label, fmt
from advlab.results.aggregate import stored_jobs
from advlab.results.detection import Detected, at_budget, clean_detected, job_detected
from advlab.results.plan import Job
from advlab.results.records import Row
from advlab.results.store import Store

COLUMNS_TEXT = (
    "With a detector (the reject option): det. AUC = ROC-AUC of the detector's scores of the adversarial examples "
    "that fool the classifier (the row's successes) against those of every clean test image; TPR@FPR = the share "
    "of those adversarial examples rejected at the threshold calibrated on held-out clean training images; "
    "clean rej. = the share of the clean test images rejected; defended = the share of inputs handled — an "
    "adversarial input if rejected or still correctly classified, a clean input (the `clean` row) only if "
    "accepted and correct. The worst-case row's defended accuracy counts an example handled under every attack "
    "with a detector score at that ε (the gradient-masking checks' own attacks on their subset are not scored)."
)


def _pct(v: Any) -> str:
    return "—" if v is None else f"{100 * float(v):.1f} %"


def detector_text(meta: dict[str, Any]) -> str:
    """One paragraph: which detector, fitted on what, its threshold and the held-out rejection rate."""
    entry = meta.get("entry") or {}
    what = entry.get("spec") or entry.get("name") or entry.get("object") or "?"
    source = f" from {entry['file']}" if entry.get("file") else " (given as an object)" if entry.get("object") else ""
    if "fit_idx" not in meta or entry.get("fit_n") is None:
        return f"Detector {what}{source}: its own threshold {meta.get('threshold', math.nan):.6g}, as saved."
    fit = entry.get("fit_attack") or {}
    fitted = "" if entry.get("file") or entry.get("object") else (
        f"fitted on {entry['fit_n']} clean training images, their {entry.get('noise')} copies and their "
        f"{fit.get('attack')} {fit.get('norm')} ε = {fit.get('eps'):g} copies (fooling "
        f"{_pct(meta.get('fit_attack_fooled'))}); ")
    return (f"Detector {what}{source}: {fitted}threshold {meta['threshold']:.6g} at {entry['fpr']:.0%} FPR on "
            f"{entry['heldout_n']} held-out clean training images, disjoint from those (it rejects "
            f"{_pct(meta.get('heldout_rejected'))} of them); {meta.get('seconds', 0.0):.1f} s.")


def detector_markdown(meta: dict[str, Any] | None) -> list[str]:
    """The report's reject-option section (empty without a detector)."""
    if not meta:
        return []
    return ["## Reject option", "", detector_text(meta), "", COLUMNS_TEXT, ""]


def detector_html(meta: dict[str, Any] | None) -> str:
    """The reject-option section of the page (empty without a detector)."""
    if not meta:
        return ""
    return (f"<h2>Reject option</h2><p>{html.escape(detector_text(meta))}</p>"
            f"<p>{html.escape(COLUMNS_TEXT)}</p>")


# the C&W 2017 joint attacks evaluate adds with a detector: pgd-joint, pgd-joint-hc, cw-joint
JOINT_SUFFIX = "-joint"
ADAPTIVE_HEAD = ["adaptive attack", "ε (norm)", "defended, zero-knowledge", "defended, adaptive",
                 "Acc@1, zero-knowledge", "Acc@1, adaptive", "median norm, zero-knowledge", "median norm, adaptive"]
ADAPTIVE_TEXT = (
    "Zero-knowledge: the attack ignores the detector. Adaptive: the same attack on Carlini & Wagner's (2017) joint "
    "model of classifier and detector (`ATTACK-joint` rows, and `pgd-joint-hc`: the classifier driven to a margin of "
    "10 logits first, then the joint model; success = misclassified and accepted). Median norm: of "
    "the successful examples, in the row's norm (for cw, the L2 that fools the classifier, and for cw-joint both)."
)


def adaptive_rows(rows: list[Row]) -> list[list[str]]:
    """Each joint row (``ATTACK-joint[-variant]``) next to its zero-knowledge attack's row at the same norm and ε."""
    by = {(r.attack, r.norm, r.eps): r for r in rows}
    out = []
    for r in rows:
        family, sep, _variant = r.attack.partition(JOINT_SUFFIX)
        base = by.get((family, r.norm, r.eps)) if sep and family else None
        if base is None:
            continue
        med = f"median_{r.norm}"
        out.append([r.attack, eps_label(r), fmt(base.defended_acc), fmt(r.defended_acc), fmt(base.acc1_adv),
                    fmt(r.acc1_adv), fmt(getattr(base, med)), fmt(getattr(r, med))])
    return out


def adaptive_markdown(rows: list[Row]) -> list[str]:
    """The zero-knowledge vs adaptive section (empty without joint rows)."""
    table = adaptive_rows(rows)
    if not table:
        return []
    return ["## Zero-knowledge vs adaptive (the detector attacked too)", "", ADAPTIVE_TEXT, "",
            *md_table(ADAPTIVE_HEAD, table), ""]


def adaptive_html(rows: list[Row]) -> str:
    """The zero-knowledge vs adaptive section of the page (empty without joint rows)."""
    table = adaptive_rows(rows)
    if not table:
        return ""
    return (f"<h2>Zero-knowledge vs adaptive (the detector attacked too)</h2><p>{html.escape(ADAPTIVE_TEXT)}</p>"
            f"{html_table(ADAPTIVE_HEAD, table, 'adaptive-detector')}")


Curves = list[tuple[str, torch.Tensor, torch.Tensor]]  # (ε label, positive scores, negative scores) per budget


def roc_points(store: Store, config: dict[str, Any]) -> dict[tuple[str, str], Curves]:
    """Per attack family and its norm: (ε label, positive scores, negative scores) per budget."""
    clean = store.clean()
    n = len(clean["label"])
    cd = clean_detected(store, n)
    out: dict[tuple[str, str], Curves] = {}
    if cd is None:
        return out
    for job in stored_jobs(store, config):
        if job.eps is None:
            continue
        o, d = store.outcomes(job.key), job_detected(store, job, n)
        for e in (list(job.sweep) if job.eps == math.inf else [job.eps]):
            pos = _positives(job, o, d, cd, e, clean)
            out.setdefault((job.name, job.norm), []).append((f"ε = {e:g}", pos, cd.score))
    return out


def _positives(job: Job, o: dict[str, torch.Tensor], d: Detected, cd: Detected, e: float,
               clean: dict[str, torch.Tensor]) -> torch.Tensor:
    scored = e if job.eps == math.inf else None
    broken = outcome_at_eps(o["adv"], o[job.norm], scored, o["top1"], o["top5"], clean["top1"], clean["top5"])[0]
    return at_budget(job, d, cd, broken).score[broken]


def roc_figure(name: str, curves: Curves, threshold: float, norm: str) -> bytes:
    """One attack family's ROC curves (one per ε), the calibrated threshold's operating point marked on each."""
    fig = new_figure((4.6, 4.0))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.7", linestyle=":", linewidth=1)
    for k, (label, pos, neg) in enumerate(curves):
        if not len(pos):
            ax.plot([], [], color=f"C{k}", label=f"{label}: no adversarial example fooled the classifier")
            continue
        fpr, tpr = roc_curve(pos, neg)
        ax.plot(fpr.numpy(), tpr.numpy(), color=f"C{k}", label=f"{label}: AUC {roc_auc(pos, neg):.3f} "
                f"({len(pos)} fooled)")
        if math.isfinite(threshold):
            ax.plot([float((neg > threshold).double().mean())], [float((pos > threshold).double().mean())],
                    marker="o", color=f"C{k}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-positive rate (clean test images rejected)", fontsize=8)
    ax.set_ylabel("true-positive rate (fooling examples rejected)", fontsize=8)
    ax.set_title(f"{name} ({norm_label(norm)}): detection ROC; dots = the threshold", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    plain_axes(ax)
    fig.tight_layout()
    return png_bytes(fig, dpi=90, bbox_inches="tight")


def roc_figures(store: Store, config: dict[str, Any]) -> list[tuple[str, str, bytes]]:
    """(file stem, caption, PNG) per attack family of an evaluation with a detector (none without one)."""
    if not config.get("detector"):
        return []
    meta = store.get_meta("detector") or {}
    threshold = float(meta.get("threshold", math.nan))
    return [(f"roc_{name}", f"Detection ROC of {name}: adversarial examples that fool the classifier vs clean "
             "test images, one curve per ε", roc_figure(name, curves, threshold, norm))
            for (name, norm), curves in roc_points(store, config).items()]


__all__ = ["ADAPTIVE_HEAD", "COLUMNS_TEXT", "adaptive_html", "adaptive_markdown", "adaptive_rows", "detector_html",
           "detector_markdown", "detector_text", "roc_figure", "roc_figures", "roc_points"]
