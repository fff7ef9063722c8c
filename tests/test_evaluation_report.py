"""The evaluation report: readable settings, one accuracy panel per norm, plain axes, fits a 1 280-px window.

The engine's contract is tests/test_evaluation.py; helpers are in tests/evaluation_helpers.py.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from advlab.report import render_report
from advlab.results import Store
from evaluation_helpers import check_in_browser, run


@pytest.fixture(scope="module")
def data(digits):
    _, _, x, y = digits
    return x[:60], y[:60]


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
