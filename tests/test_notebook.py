"""An evaluation in a REPL or a notebook: a one-line repr (not thousands of characters of dataclass fields) and the
table as HTML, which Jupyter shows for an evaluation left as a cell's value."""

from __future__ import annotations

import re

import pytest
import torch

import advlab


@pytest.fixture(scope="module")
def evaluation(lenet, mnist_test):
    x, y = mnist_test
    return advlab.evaluate(lenet, (x[:16], y[:16]), attacks=["fgsm", "pgd"], eps=[0.1, 0.2], progress=False,
                           checks=False)


def test_the_repr_is_one_line_with_the_worst_case_per_budget(evaluation):
    text = repr(evaluation)
    worst = [r for r in evaluation.rows if r.attack == "worst-case"]
    assert "\n" not in text and len(text) < 200
    assert text.startswith(f"<Evaluation of {evaluation.config['model']} on tensors: 6 rows, worst-case Acc@1 ")
    assert [float(v) for v in re.findall(r"(\d\.\d{3}) \(linf", text)] == [round(r.acc1_adv, 3) for r in worst]
    assert text.endswith("; print() for the table>")


def test_a_notebook_shows_the_table(evaluation):
    page = evaluation._repr_html_()
    assert page.count("<tr>") == 1 + len(evaluation.rows)  # (the head and one row per result)
    assert "<th>Acc@1 w/</th>" in page and "<td>pgd</td>" in page
    first = evaluation.rows[0]
    assert f"<td>{first.acc1_adv:.3f}</td>" in page


def test_the_notebook_table_escapes_and_keeps_the_notes(evaluation):
    evaluation.meta["notes"] = ["a <b>note</b> & more"]
    try:
        assert "<p>⚠ a &lt;b&gt;note&lt;/b&gt; &amp; more</p>" in evaluation._repr_html_()
    finally:
        evaluation.meta["notes"] = []


def test_an_attack_result_echoes_in_one_line(lenet, mnist_test):
    """``res`` at a prompt: shape, dtype, successes and queries, not the whole batch of pixels."""
    from advlab.attacks import pgd, square

    x, y = mnist_test
    threat = advlab.ThreatModel("linf", eps=0.1)
    res = pgd(lenet, x[:8], y[:8], threat)
    assert repr(res) == f"AttackResult(x_adv: float32 8×1×28×28, success {int(res.success.sum())}/8)"
    boxed = square(lenet, x[:4], y[:4], threat, max_queries=20, generator=torch.Generator())
    assert repr(boxed).endswith(f", mean queries {float(boxed.queries.double().mean()):.1f})")
    assert "\n" not in repr(boxed) and "tensor(" not in repr(boxed)
