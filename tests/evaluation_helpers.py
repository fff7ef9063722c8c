"""Helpers of the evaluation tests (tests/test_evaluation*.py): a small evaluation and the browser check."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from advlab.evaluation import evaluate

ATTACKS = ["noise", "semantic", "fgsm", "pgd", "deepfool"]
EPS = [0.1, 0.3]


def run(model, data, out, **kw):
    kw = {"attacks": ATTACKS, "eps": EPS, "batch_size": 20, "progress": False, **kw}
    return evaluate(model, data, kw.pop("attacks"), kw.pop("eps"), out=out, model_name="digits-mlp", **kw)


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=5000", "--window-size=1280,900", "--dump-dom"]
# added to a copy of the page: after load, the page's width and the window's, as the browser laid them out
WIDTH_PROBE = ('<script>window.addEventListener("load", function () {document.body.setAttribute("data-width", '
               'document.documentElement.scrollWidth + "/" + window.innerWidth);});</script>')


def check_in_browser(page, attacks, images=5):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no headless chromium on this machine (.ci/run installs Debian's chromium); "
                    "the browser check of report.html was not run")
    profile = page.parent / "chromium-profile"
    probe = page.with_name("probe-" + page.name)
    probe.write_text(page.read_text().replace("</body>", WIDTH_PROBE + "</body>"))
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    import re

    m = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert m, "the page's load handler did not run"
    loaded, total = int(m.group(1)), int(m.group(2))
    assert total == images and loaded == total
    body = dom.split('<table id="results">')[1].split("</table>")[0]
    assert body.count("<tr>") == 1 + attacks  # header + one row per (attack, eps)
    # the page fits a 1 280-px window: nothing widens it beyond the window (tables scroll in their own box)
    width, window = map(int, re.search(r'data-width="(\d+)/(\d+)"', dom).groups())
    assert window == 1280 and width <= 1280, f"report.html is {width} px wide in a {window}-px window"
