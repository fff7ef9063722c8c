import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import advlab
from advlab._io import atomic_write_bytes, atomic_write_text
from advlab.evaluation import CONTRACT_KEYS, ConfigMismatchError, blackbox_attacks, evaluate
from advlab.evaluation.engine import CHECKS_SKIPPED_BLACKBOX
from advlab.models.blackbox import BlackBox
from advlab.report import render_report
from advlab.results import Store

ATTACKS = ["noise", "semantic", "fgsm", "pgd", "deepfool"]
EPS = [0.1, 0.3]


@pytest.fixture(scope="module")
def data(digits):
    _, _, x, y = digits
    return x[:60], y[:60]


def run(model, data, out, **kw):
    kw = {"attacks": ATTACKS, "eps": EPS, "batch_size": 20, "progress": False, **kw}
    return evaluate(model, data, kw.pop("attacks"), kw.pop("eps"), out=out, model_name="digits-mlp", **kw)


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_rows_follow_the_contract(tmp_path, digits_mlp, data):
    ev = run(digits_mlp, data, tmp_path)
    ev.save(tmp_path)
    records = json.loads((tmp_path / "results.json").read_text())
    assert all(tuple(r) == CONTRACT_KEYS for r in records)
    names = [(r["attack"], r["eps"]) for r in records]
    # fixed-budget attacks once per eps, minimal ones scored at every eps, semantic once, worst case per eps
    assert names == [("noise", 0.1), ("noise", 0.3), ("semantic", None), ("fgsm", 0.1), ("fgsm", 0.3),
                     ("pgd", 0.1), ("pgd", 0.3), ("deepfool", 0.1), ("deepfool", 0.3),
                     ("worst-case", 0.1), ("worst-case", 0.3)]
    by = {(r["attack"], r["eps"]): r for r in records}
    assert by[("pgd", 0.3)]["acc1_adv"] <= by[("fgsm", 0.3)]["acc1_adv"] <= by[("noise", 0.3)]["acc1_adv"]
    assert by[("deepfool", 0.1)]["acc1_adv"] >= by[("deepfool", 0.3)]["acc1_adv"]
    for e in EPS:
        worst = by[("worst-case", e)]["acc1_adv"]
        assert worst <= min(by[(a, e)]["acc1_adv"] for a in ("noise", "fgsm", "pgd", "deepfool"))
    assert all(r["median_linf"] is None or r["median_linf"] <= r["eps"] + 1e-6
               for r in records if r["eps"] is not None and r["attack"] != "worst-case")
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == list(CONTRACT_KEYS) and len(csv_lines) == len(records) + 1
    assert "| pgd |" in ev.to_markdown()


def test_numbers_match_an_independent_recomputation(tmp_path, digits_mlp, data):
    """Recompute every row from the stored adversarial examples with numpy."""
    x, y = data
    ev = run(digits_mlp, data, tmp_path, attacks=["fgsm", "pgd", "deepfool"], examples_per_job=len(y))
    store = Store(tmp_path / "results.sqlite")
    with torch.no_grad():
        clean = digits_mlp(x).numpy()
    yn = y.numpy()
    clean_ok = clean.argmax(1) == yn
    for row in ev.rows:
        if row.attack == "worst-case":
            continue
        key = f"{row.attack}|linf|{(math.inf if row.attack == 'deepfool' else row.eps)!r}"
        ex = store.examples(key)
        assert [i for i, _, _ in ex] == list(range(len(y)))
        xa = np.stack([a for _, _, a in ex])
        assert np.array_equal(np.stack([c for _, c, _ in ex]), x.numpy())
        with torch.no_grad():
            logits = digits_mlp(torch.from_numpy(xa)).numpy()
        d = np.abs(xa - x.numpy()).reshape(len(y), -1).max(1)
        fooled = logits.argmax(1) != yn
        if row.attack == "deepfool":  # minimal: counts at eps only within the budget
            fooled &= d <= row.eps * (1 + 1e-6) + 1e-7
        top1 = np.where(fooled, False, clean_ok) if row.attack == "deepfool" else logits.argmax(1) == yn
        assert row.acc1_adv == pytest.approx(top1.mean())
        top5_adv = (np.argsort(-logits, 1)[:, :5] == yn[:, None]).any(1)
        top5_clean = (np.argsort(-clean, 1)[:, :5] == yn[:, None]).any(1)
        top5 = np.where(fooled, top5_adv, top5_clean) if row.attack == "deepfool" else top5_adv
        assert row.acc5_adv == pytest.approx(top5.mean())
        broken = fooled & clean_ok
        assert row.success_rate == pytest.approx(broken.sum() / clean_ok.sum())
        if broken.any():
            assert row.median_linf == pytest.approx(float(torch.from_numpy(d[broken]).median()), rel=1e-5)
    store.close()


def test_resume_after_a_crash_loses_nothing_and_recomputes_nothing(tmp_path, digits_mlp, data, monkeypatch):
    full = run(digits_mlp, data, tmp_path / "a")
    calls = {"n": 0}
    real = Store.put_batch

    def crashing(self, *a, **kw):
        real(self, *a, **kw)
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # killed right after the 5th batch was stored

    monkeypatch.setattr(Store, "put_batch", crashing)
    with pytest.raises(KeyboardInterrupt):
        run(digits_mlp, data, tmp_path / "b")
    monkeypatch.setattr(Store, "put_batch", real)
    counted = {"n": 0}

    def counting(self, *a, **kw):
        counted["n"] += not str(a[0]).startswith("check:")  # (the checks' own attacks are stored once, too)
        real(self, *a, **kw)

    monkeypatch.setattr(Store, "put_batch", counting)
    resumed = run(digits_mlp, data, tmp_path / "b")
    jobs = 2 + 1 + 2 + 2 + 1  # noise×2, semantic, fgsm×2, pgd×2, deepfool
    assert counted["n"] == jobs * 3 - 5
    assert without_seconds(resumed.to_records()) == without_seconds(full.to_records())


def test_refuses_a_directory_with_another_configuration(tmp_path, digits_mlp, data):
    run(digits_mlp, data, tmp_path, attacks=["fgsm"])
    with pytest.raises(ConfigMismatchError, match=r"different configuration \(differs in attacks"):
        run(digits_mlp, data, tmp_path, attacks=["pgd"])
    assert Store(tmp_path / "results.sqlite").done_batches("fgsm|linf|0.1") == {0, 1, 2}  # nothing lost
    ev = run(digits_mlp, data, tmp_path, attacks=["pgd"], force=True)
    assert {r.attack for r in ev.rows} == {"pgd", "worst-case"}


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"attacks": ["pgdd"]}, r"unknown attack 'pgdd' \(did you mean 'pgd'"),
    ({"eps": [1.5]}, r"eps: 1.5 is outside the bounds' range for linf"),
    ({"eps": [-0.1]}, r"eps: expected numbers >= 0"),
])
def test_bad_input_one_line_errors(tmp_path, digits_mlp, data, kwargs, match):
    with pytest.raises(ValueError, match=match) as e:
        run(digits_mlp, data, tmp_path, **kwargs)
    assert "\n" not in str(e.value)


def test_cli_evaluate_config_report_and_browser(tmp_path, digits_ckpt):
    ckpt = digits_ckpt
    cfg = tmp_path / "eval.toml"
    cfg.write_text(f'model = "{ckpt}"\ndataset = "digits"\nattacks = ["fgsm", "semantic", "deepfool"]\n'
                   'eps = [0.1, 0.2]\nn = 40\nbatch_size = 20\n')
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "advlab", "evaluate", "--config", str(cfg), "--eps", "0.1,0.3", "--out", str(out),
           "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "worst-case" in proc.stdout
    records = json.loads((out / "results.json").read_text())
    assert sorted({r["eps"] for r in records if r["eps"] is not None}) == [0.1, 0.3]  # the flag overrides
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["n"] == 40 and saved["environment"]["torch"] == torch.__version__
    # the report is rendered from the store alone
    for f in ("report.html", "report.md", "results.json"):
        (out / f).unlink()
    shutil.rmtree(out / "figures")
    subprocess.run([sys.executable, "-m", "advlab", "report", str(out)], check=True, capture_output=True)
    page = (out / "report.html").read_text()
    assert page.count("<img") == 2 + 3  # accuracy curves, norm histograms, a triplet per attack
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 1\n")
    proc = subprocess.run([sys.executable, "-m", "advlab", "evaluate", "--config", str(bad)], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "unknown key(s) colour" in proc.stderr and proc.stderr.count("\n") == 1
    check_in_browser(out / "report.html", attacks=3 + 1 + 1 + 2)  # fgsm×2, semantic, deepfool×2, worst×2


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


def test_python_api_example():
    ev = advlab.evaluate("lenet-mnist", "mnist", ["fgsm"], [0.1], n=50, progress=False)
    assert [(r.attack, r.eps, r.n) for r in ev.rows] == [("fgsm", 0.1, 50), ("worst-case", 0.1, 50)]
    assert ev.rows[0].acc1_clean >= 0.98


# ---------------------------------------------------------------------------------------------
# A black box is evaluable


def numpy_predict(model, output="logits"):
    """A numpy predict function over a torch model: what a deployed model's API looks like."""

    def predict(batch):
        with torch.no_grad():
            logits = model(torch.from_numpy(batch))
        return {"logits": logits, "probs": logits.softmax(1), "labels": logits.argmax(1)}[output].numpy()

    return predict


BB_PARAMS = {"square": {"max_queries": 100}, "hopskipjump": {"max_queries": 200}, "sparse-rs": {"max_queries": 100}}


def test_a_blackbox_is_evaluated_with_the_gradient_free_attacks(tmp_path, digits_mlp, data):
    box = BlackBox(numpy_predict(digits_mlp, "probs"), output="probs", input_format="numpy", name="digits-api")
    ev = evaluate(box, data, eps=[0.3], out=tmp_path, batch_size=20, progress=False, params=BB_PARAMS)
    # sparse-rs is L0 only: it runs at its own norm's default sweep (5, 10, 20 elements), in rows of its own
    assert [r.attack for r in ev.rows] == ["noise", "semantic", *["sparse-rs"] * 3, "square", "hopskipjump",
                                           "worst-case"]
    assert ev.config["attacks"] == list(blackbox_attacks()) == ["noise", "semantic", "sparse-rs", "square",
                                                                "hopskipjump"]
    assert ev.rows[0].model == "digits-api"
    assert all(r.acc1_clean == pytest.approx(ev.rows[0].acc1_clean) for r in ev.rows)
    by = {r.attack: r for r in ev.rows}
    assert by["square"].mean_queries is not None and 0 < by["square"].mean_queries <= 100
    assert by["worst-case"].acc1_adv <= min(by[a].acc1_adv for a in ("noise", "square", "hopskipjump"))
    # the checks need gradients: skipped, and recorded as skipped (in the result, the store and the report)
    assert ev.checks == [] and ev.checks_skipped == CHECKS_SKIPPED_BLACKBOX
    assert ev.config["checks"] is False
    store = Store(tmp_path / "results.sqlite")
    assert store.get_meta("checks_skipped") == CHECKS_SKIPPED_BLACKBOX and store.get_meta("checks") is None
    store.close()
    md, page = render_report(tmp_path)
    assert f"Skipped: {CHECKS_SKIPPED_BLACKBOX}." in md.read_text()
    assert "Skipped:" in page.read_text()


def test_a_blackbox_scores_like_the_model_behind_it(tmp_path, digits_mlp, data):
    """Noise and the negative image see only predictions: the black box's rows equal the model's."""
    box = BlackBox(numpy_predict(digits_mlp), input_format="numpy")
    kw = {"attacks": ["noise", "semantic"], "eps": [0.2], "batch_size": 20, "progress": False, "model_name": "m"}
    rows_box = evaluate(box, data, **kw).to_records()
    rows_net = evaluate(digits_mlp, data, **kw, checks=False).to_records()
    assert without_seconds(rows_box) == without_seconds(rows_net)


def test_a_blackbox_refuses_white_box_attacks_before_running(tmp_path, digits_mlp, data):
    box = BlackBox(numpy_predict(digits_mlp), input_format="numpy")
    with pytest.raises(TypeError, match="pgd is white-box and needs a differentiable torch model, got a BlackBox") as e:
        evaluate(box, data, ["noise", "pgd"], [0.1], out=tmp_path / "run", progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_labels_only_blackbox_is_refused(tmp_path, digits_mlp, data):
    box = BlackBox(numpy_predict(digits_mlp, "labels"), output="labels", input_format="numpy")
    with pytest.raises(ValueError, match=r"needs scores .*labels-only BlackBox") as e:
        evaluate(box, data, progress=False, out=tmp_path)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------
# Files, aliases, backends


def test_save_writes_atomically_with_normal_permissions(tmp_path, digits_mlp, data):
    ev = run(digits_mlp, data, tmp_path / "store", attacks=["fgsm"], eps=[0.1])
    out = tmp_path / "out"
    ev.save(out)
    assert sorted(p.name for p in out.iterdir()) == ["checks.json", "results.csv", "results.json"]  # no temp files
    mask = os.umask(0)
    os.umask(mask)
    assert all((p.stat().st_mode & 0o777) == 0o666 & ~mask for p in out.iterdir())
    assert (out / "results.csv").read_bytes().splitlines()[0].decode().split(",") == list(CONTRACT_KEYS)


def test_atomic_write_leaves_the_old_file_on_error(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")

    def crash(*args):
        raise KeyboardInterrupt  # killed between writing the temporary file and renaming it

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


@pytest.mark.parametrize(("old", "names"), [
    ("advlab.evaluation.runner", ["evaluate", "Evaluation", "Row", "compute_rows", "plan_jobs", "format_table",
                                  "eps_label", "DEFAULT_PARAMS", "batch_seed", "environment"]),
    ("advlab.evaluation.store", ["Store"]),
    ("advlab.transfer", ["train_substitute", "transfer_matrix", "TransferMatrix", "half_indices", "train_half",
                         "load_any", "HALF_SPLIT_SEED"]),
])
def test_old_module_paths_still_work_and_warn(old, names):
    code = (f"import warnings\nwarnings.simplefilter('always')\nwith warnings.catch_warnings(record=True) as w:\n"
            f"    import {old} as m\nprint(len([x for x in w if issubclass(x.category, DeprecationWarning)]))\n"
            f"print(all(hasattr(m, n) for n in {names!r}), sorted(m.__all__) == sorted(set(m.__all__)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "True", "True"]


def test_reports_never_touch_the_matplotlib_backend(tmp_path, digits_mlp, data):
    run(digits_mlp, data, tmp_path, attacks=["fgsm"], eps=[0.1])
    code = ("import sys, matplotlib\nmatplotlib.use('svg')\nfrom advlab.report import render_report\n"
            f"render_report({str(tmp_path)!r})\n"
            "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["svg", "False"]


# ---------------------------------------------------------------------------------------------
# The report: readable settings, one accuracy panel per norm, plain axes, fits a 1 280-px window

REPORT_ATTACKS = ["noise", "semantic", "fgsm", "pgd", "deepfool", "cw"]  # cw runs at L2 in this L∞ evaluation
REPORT_PARAMS = {"pgd": {"steps": 5}, "cw": {"steps": 10, "binary_search_steps": 2}}
LONG_COMMAND = "advlab evaluate --n 60 --out /tmp/" + "a-very-long-directory-name-" * 12


@pytest.fixture(scope="module")
def wide_report(tmp_path_factory, digits_mlp, data):
    """An evaluation with six attacks (six histograms), two norms and a long command line, stored in a directory."""
    out = tmp_path_factory.mktemp("wide-report")
    ev = run(digits_mlp, data, out, attacks=REPORT_ATTACKS, eps=[0.1, 0.3], params=REPORT_PARAMS,
             command=LONG_COMMAND, checks=False)
    return ev, out


def visible_text(page):
    """The page without its style and script elements: what a reader sees."""
    import re

    return re.sub(r"<(style|script)>.*?</\1>", "", page, flags=re.S)


def test_report_shows_parameters_and_environment_as_tables(tmp_path, wide_report):
    ev, out = wide_report
    md_path, page_path = render_report(out)
    md, page = md_path.read_text(), visible_text(page_path.read_text())
    # the parameters each attack ran with (advlab's defaults updated by the user's), and the user's overrides
    assert "| pgd | L∞ | 0.1, 0.3 | early_stop = True, step_size = 0.01, steps = 5 | steps = 5 |" in md
    assert ("| cw | L2 | minimal (scored at 1, 1.5, 2) | binary_search_steps = 2, lr = 0.1, steps = 10 | "
            "binary_search_steps = 2, steps = 10 |") in md
    assert "| fgsm | L∞ | 0.1, 0.3 | the attack's defaults | — |" in md
    assert ("<tr><td>pgd</td><td>L∞</td><td>0.1, 0.3</td><td>early_stop = True, step_size = 0.01, steps = 5</td>"
            "<td>steps = 5</td></tr>") in page.split('<table id="params">')[1]
    # the environment, one row each
    env = ev.environment
    for label, value in (("torch", torch.__version__), ("Python", env["python"]), ("torch threads", env["threads"])):
        assert f"| {label} | {value} |" in md
        assert f"<tr><td>{label}</td><td>{value}</td></tr>" in page.split('<table id="environment">')[1]
    assert "| threat model | L∞, ε ∈ {0.1, 0.3}, inputs in [0, 1], untargeted |" in md
    assert f"| command | {LONG_COMMAND} |" in md
    for text in (md, page):  # no raw dict or JSON left
        assert "{}" not in text and '{"' not in text and "{'" not in text and "&quot;" not in text
    # a configuration key the report does not know (a later advlab's) is still shown, by name
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    store = Store(copy / "results.sqlite")
    store.set_config({**store.get_config(), "model_digest": "sha256:0123abcd"})
    store.close()
    md_path, _ = render_report(copy)
    assert "| model_digest | sha256:0123abcd |" in md_path.read_text()


def test_report_has_one_accuracy_panel_per_norm(wide_report):
    from advlab.report.figures import accuracy_plot

    ev, _ = wide_report
    fig = accuracy_plot(ev.rows, "linf")
    fig.draw_without_rendering()
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["L∞ budget", "L2 budget"]
    linf, l2 = panels
    assert sorted(ln.get_label() for ln in linf.get_lines()) == ["deepfool", "fgsm", "noise", "pgd", "worst-case"]
    assert [ln.get_label() for ln in l2.get_lines()] == ["cw"]  # the L2 rows of this L∞ evaluation
    clean = ev.rows[0].acc1_clean
    for ax, sweep in ((linf, [0.0, 0.1, 0.3]), (l2, [0.0, 1.0, 1.5, 2.0])):
        assert ax.get_xlim()[0] == 0.0 and sweep[-1] <= ax.get_xlim()[1] < 1.2 * sweep[-1]  # its own ε axis
        assert ax.xaxis.get_offset_text().get_text() == "" and ax.yaxis.get_offset_text().get_text() == ""
        for ln in ax.get_lines():
            rows = [r for r in ev.rows if r.attack == ln.get_label() and r.norm == ("linf" if ax is linf else "l2")]
            assert list(ln.get_xdata()) == sweep
            assert list(ln.get_ydata()) == [clean] + [r.acc1_adv for r in sorted(rows, key=lambda r: r.eps)]


def histogram_jobs():
    """Outcomes whose histograms matplotlib labels with an offset or in scientific notation by default."""
    from advlab.results import Job

    n, gen = 50, torch.Generator().manual_seed(0)
    eps32 = float(torch.tensor(0.3))  # 0.30000001192…: PGD's L∞ is ε in float32

    def outcome(norm, values, adv=True):
        v = torch.as_tensor(values, dtype=torch.float64)
        return {"adv": torch.full((len(v),), adv), norm: v}

    return [
        (Job("pgd", "linf", 0.3, (0.3,)), outcome("linf", [eps32] * n)),  # all equal
        (Job("fgsm", "linf", 0.3, (0.3,)), outcome("linf", [0.3 + 1e-8 * i for i in range(n)])),  # was 1e-8+3e-1
        (Job("bim", "linf", 0.3, (0.3,)), outcome("linf", [0.3 - 1e-5 * i for i in range(n)])),
        (Job("cw", "l2", math.inf, (1.0,)), outcome("l2", (1e5 + torch.rand(n, generator=gen)).tolist())),
        (Job("noise", "l0", 10.0, (10.0,)), outcome("l0", [784.0] * n)),
        (Job("deepfool", "linf", math.inf, (0.3,)), outcome("linf", (1e-6 * torch.rand(n, generator=gen)).tolist())),
        (Job("semantic", "linf", None, (0.3,)), outcome("linf", [1.0] * n, adv=False)),  # no successful example
        (Job("apgd", "linf", 0.3, (0.3,)), outcome("linf", [0.29845, 0.29975])),  # two values, a narrow range
    ]


def test_histogram_axes_read_plainly_in_a_grid():
    import itertools
    import re

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from advlab.report.figures import norm_histogram_plot, norm_histograms

    jobs = histogram_jobs()
    fig = norm_histogram_plot(jobs)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == len(jobs)
    assert len({round(ax.get_position().x0, 3) for ax in panels}) <= 4  # wraps: at most four per row
    plain = re.compile(r"^[−-]?\d+(\.\d+)?$")
    for ax in panels:
        for axis in (ax.xaxis, ax.yaxis):
            assert axis.get_offset_text().get_text() == "", ax.get_title()
            lo, hi = sorted(axis.get_view_interval())
            shown = [t for t, v in zip(axis.get_ticklabels(), axis.get_ticklocs(), strict=True)
                     if lo <= v <= hi and t.get_text()]
            labels = [t.get_text() for t in shown]
            assert all(plain.match(t) for t in labels), (ax.get_title(), labels)
            assert len(set(labels)) == len(labels), (ax.get_title(), labels)  # each tick says where it is
        boxes = [t.get_window_extent(canvas.get_renderer()) for t in ax.get_xticklabels() if t.get_text()
                 and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
        assert all(a.x1 < b.x0 for a, b in itertools.pairwise(boxes)), ax.get_title()  # labels do not run together
    png = norm_histograms(jobs)
    assert int.from_bytes(png[16:20], "big") <= 1000  # the PNG's width: seven histograms no longer in one row


def test_report_fits_a_1280px_window(wide_report):
    ev, out = wide_report
    _, page = render_report(out)
    check_in_browser(page, attacks=len(ev.rows), images=2 + len(REPORT_ATTACKS))


def test_histograms_count_the_successes_the_table_counts(wide_report):
    from advlab.report.render import successful_outcomes

    ev, out = wide_report
    store = Store(out / "results.sqlite")
    try:
        clean_top1 = store.clean()["top1"]
        histograms = dict((job.key, o) for job, o in successful_outcomes(store, ev.config))
        raw = store.outcomes("fgsm|linf|0.3")["adv"]
    finally:
        store.close()
    assert bool((raw & ~clean_top1).any())  # an example the model already got wrong is "adversarial" in the store…
    n_correct = int(clean_top1.sum())
    for attack in ("fgsm", "pgd"):
        row = next(r for r in ev.rows if r.attack == attack and r.eps == 0.3)
        successes = histograms[f"{attack}|linf|0.3"]["adv"]
        assert int(successes.sum()) == round(row.success_rate * n_correct)  # …but no success in the histogram
        assert not bool((successes & ~clean_top1).any())
