"""Black-box interface, Square Attack, HopSkipJump: queries counted, budgets kept, models fooled."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import advlab
from advlab.attacks import get_attack
from advlab.models import BlackBox, QueryBudgetExceeded, as_blackbox, load_model, load_sklearn_model


class CountingPredict:
    """A numpy predict function that counts its own calls and rows (the ground truth)."""

    def __init__(self, model, output="logits"):
        self.model, self.output = model, output
        self.calls = self.rows = 0

    def __call__(self, batch):
        assert isinstance(batch, np.ndarray)
        self.calls += 1
        self.rows += len(batch)
        with torch.no_grad():
            logits = self.model(torch.from_numpy(batch))
        if self.output == "labels":
            return logits.argmax(1).numpy()
        if self.output == "probs":
            return logits.softmax(1).numpy()
        return logits.numpy()


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def verify_adversarial(model, x_adv, y):
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


@pytest.fixture(scope="module")
def batch(digits, digits_mlp):
    _, _, xte, yte = digits
    with torch.no_grad():
        correct = digits_mlp(xte).argmax(1) == yte
    idx = correct.nonzero().squeeze(1)[:40]
    return xte[idx], yte[idx]


# ---------------------------------------------------------------------------------------------
# The interface


def test_session_counts_per_example_and_enforces_budget(digits_mlp, batch):
    x, _ = batch
    fn = CountingPredict(digits_mlp)
    box = BlackBox(fn, input_format="numpy", max_queries=3)
    s = box.session(len(x))
    s.scores(x)
    s.scores(x[:5].repeat(2, 1, 1, 1), idx=torch.arange(5).repeat(2))
    assert s.queries[:5].tolist() == [3] * 5
    assert s.queries[5:].tolist() == [1] * (len(x) - 5)
    with pytest.raises(QueryBudgetExceeded, match="budget of 3"):
        s.scores(x[:1], idx=torch.tensor([0]))
    assert fn.rows == box.total_queries == int(s.queries.sum())  # the refused query was not sent
    assert fn.calls == box.calls == 2


def test_session_budget_is_the_smaller_of_box_and_attack(digits_mlp):
    box = BlackBox(digits_mlp, max_queries=10)
    assert box.session(2, max_queries=4).max_queries == 4
    assert box.session(2, max_queries=40).max_queries == 10
    assert BlackBox(digits_mlp).session(2).max_queries is None


def test_outputs_numpy_and_torch_agree(digits_mlp, batch):
    x, _ = batch
    with torch.no_grad():
        logits = digits_mlp(x)
    for output in ("logits", "probs", "labels"):
        box = BlackBox(CountingPredict(digits_mlp, output), output=output, input_format="numpy")
        assert torch.equal(box.labels(x), logits.argmax(1))
    probs = BlackBox(CountingPredict(digits_mlp, "probs"), output="probs", input_format="numpy")
    margins = probs.scores(x) - probs.scores(x)[:, :1]
    assert torch.allclose(margins, logits - logits[:, :1], atol=1e-3)  # log-probs ≅ logits
    assert torch.equal(as_blackbox(digits_mlp)(x), logits)


def test_batch_size_splits_calls(digits_mlp, batch):
    x, _ = batch
    fn = CountingPredict(digits_mlp)
    box = BlackBox(fn, input_format="numpy", batch_size=16)
    box.scores(x)
    assert fn.calls == 3
    assert fn.rows == len(x) == box.total_queries


def test_bad_arguments_one_line_errors(digits_mlp):
    with pytest.raises(TypeError, match="fn: expected a callable"):
        BlackBox(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="output: expected one of") as e:
        BlackBox(digits_mlp, output="scores")  # type: ignore[arg-type]
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="max_queries"):
        BlackBox(digits_mlp, max_queries=0)
    with pytest.raises(ValueError, match="labels only"):
        BlackBox(digits_mlp, output="labels").scores(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="fn: expected an output with 2 rows"):
        BlackBox(lambda b: torch.zeros(3, 10)).scores(torch.zeros(2, 1, 8, 8))


# ---------------------------------------------------------------------------------------------
# Query counting agrees with the wrapped function's own count


@pytest.mark.parametrize(
    ("name", "norm", "eps", "output", "params"),
    [
        ("square", "linf", 0.3, "logits", {"max_queries": 200}),
        ("square", "l2", 2.0, "probs", {"max_queries": 200}),
        ("hopskipjump", "l2", float("inf"), "labels", {"max_queries": 300, "init_evals": 20}),
        ("hopskipjump", "linf", float("inf"), "labels", {"max_queries": 300, "init_evals": 20}),
    ],
)
def test_query_count_matches_the_functions_own_count(digits_mlp, batch, name, norm, eps, output,
                                                     params):
    x, y = batch
    x, y = x[:12], y[:12]
    fn = CountingPredict(digits_mlp, output)
    box = BlackBox(fn, output=output, input_format="numpy")
    res = get_attack(name)(box, x, y, advlab.ThreatModel(norm, eps), generator=gen(), **params)
    assert res.queries is not None
    assert res.queries.dtype == torch.int64
    assert int(res.queries.sum()) == fn.rows == box.total_queries
    assert int(res.queries.max()) <= params["max_queries"]
    assert int(res.queries.min()) >= 1


# ---------------------------------------------------------------------------------------------
# Square Attack


def test_square_linf_fools_digits_mlp_with_early_stop(digits_mlp, batch):
    x, y = batch
    threat = advlab.ThreatModel("linf", 0.3)
    res = get_attack("square")(digits_mlp, x, y, threat, generator=gen(), max_queries=300)
    assert res.success.float().mean() >= 0.95
    assert torch.equal(verify_adversarial(digits_mlp, res.x_adv, y), res.success)
    assert float(threat.distance(x, res.x_adv).max()) <= 0.3 + 1e-6
    assert res.x_adv.min() >= 0
    assert res.x_adv.max() <= 1
    # Early stop: a fooled example stops querying; successes cost far less than the budget.
    assert float(res.queries[res.success].float().median()) < 100


def test_square_l2_fools_digits_mlp_and_stays_in_ball(digits_mlp, batch):
    x, y = batch
    threat = advlab.ThreatModel("l2", 1.5)
    res = get_attack("square")(digits_mlp, x, y, threat, generator=gen(), max_queries=300)
    assert res.success.float().mean() >= 0.8
    assert torch.equal(verify_adversarial(digits_mlp, res.x_adv, y), res.success)
    assert float(threat.distance(x, res.x_adv).max()) <= 1.5 + 1e-5


def test_square_already_misclassified_costs_one_query(digits_mlp, batch):
    x, y = batch
    wrong = (y[:4] + 1) % 10  # labels the model disagrees with: "already adversarial"
    res = get_attack("square")(digits_mlp, x[:4], wrong, advlab.ThreatModel("linf", 0.1),
                               generator=gen(), max_queries=50)
    assert res.success.all()
    assert res.queries.tolist() == [1, 1, 1, 1]
    assert torch.equal(res.x_adv, x[:4])


def test_square_targeted(digits_mlp, batch):
    x, y = batch
    x, y = x[:20], y[:20]
    target = (y + 3) % 10
    res = get_attack("square")(digits_mlp, x, y, advlab.ThreatModel("linf", 0.4, targeted=True),
                               target=target, generator=gen(), max_queries=400)
    with torch.no_grad():
        pred = digits_mlp(res.x_adv).argmax(1)
    assert torch.equal(pred == target, res.success)
    assert res.success.float().mean() >= 0.7


def test_square_refuses_labels_only_and_unbounded(digits_mlp, batch):
    x, y = batch
    labels_box = BlackBox(CountingPredict(digits_mlp, "labels"), output="labels",
                          input_format="numpy")
    with pytest.raises(ValueError, match="model: square is score-based"):
        get_attack("square")(labels_box, x, y, advlab.ThreatModel("linf", 0.3))
    with pytest.raises(ValueError, match=r"threat\.eps: square"):
        get_attack("square")(digits_mlp, x, y, advlab.ThreatModel("linf", float("inf")))
    with pytest.raises(ValueError, match=r"threat\.norm: square supports linf, l2"):
        get_attack("square")(digits_mlp, x, y, advlab.ThreatModel("l1", 3.0))


# ---------------------------------------------------------------------------------------------
# HopSkipJump


def test_hopskipjump_l2_labels_only_shrinks_perturbation(digits_mlp, batch):
    x, y = batch
    x, y = x[:16], y[:16]
    box = BlackBox(CountingPredict(digits_mlp, "labels"), output="labels", input_format="numpy")
    threat = advlab.ThreatModel("l2", float("inf"))
    short = get_attack("hopskipjump")(box, x, y, threat, generator=gen(), max_queries=150,
                                      init_evals=20)
    long = get_attack("hopskipjump")(box, x, y, threat, generator=gen(), max_queries=1000,
                                     init_evals=20)
    for res in (short, long):
        assert res.success.all()
        assert verify_adversarial(digits_mlp, res.x_adv, y).all()
        assert res.x_adv.min() >= 0
        assert res.x_adv.max() <= 1
    d_short = threat.distance(x, short.x_adv).median()
    d_long = threat.distance(x, long.x_adv).median()
    assert d_long < 0.8 * d_short  # more queries, smaller perturbation


def test_hopskipjump_bounded_eps_stops_inside_ball(digits_mlp, batch):
    x, y = batch
    x, y = x[:16], y[:16]
    threat = advlab.ThreatModel("l2", 2.0)
    res = get_attack("hopskipjump")(digits_mlp, x, y, threat, generator=gen(), max_queries=800,
                                    init_evals=20)
    assert float(threat.distance(x, res.x_adv).max()) <= 2.0 + 1e-5
    assert torch.equal(verify_adversarial(digits_mlp, res.x_adv, y)[res.success],
                       torch.ones(int(res.success.sum()), dtype=torch.bool))
    assert res.success.float().mean() >= 0.7


def test_hopskipjump_attacks_sklearn_through_predict_only(digits):
    _, _, xte, yte = digits
    box = load_sklearn_model("sklearn-logreg-digits", output="labels")
    assert box.meta["acc1"] > 0.95
    x, y = xte[:30], yte[:30]
    correct = box.labels(x) == y
    x, y = x[correct][:10], y[correct][:10]
    res = get_attack("hopskipjump")(box, x, y, advlab.ThreatModel("l2", float("inf")),
                                    generator=gen(), max_queries=400, init_evals=20)
    assert res.success.all()
    assert (box.labels(res.x_adv) != y).all()
    assert float(advlab.ThreatModel("l2", 1.0).distance(x, res.x_adv).median()) < 3.0


def test_load_model_takes_sklearn_names(digits):
    _, _, xte, _ = digits
    box = load_model("sklearn-logreg-digits")
    same = load_sklearn_model("sklearn-logreg-digits")
    assert isinstance(box, BlackBox) and box.name == "sklearn-logreg-digits" and box.output == "probs"
    assert box.meta == same.meta and box.meta["acc1"] > 0.95
    assert torch.equal(box.scores(xte), same.scores(xte))


def test_sklearn_cache_is_one_plain_npz_read_back(tmp_path, monkeypatch, digits):
    _, _, xte, _ = digits
    monkeypatch.setenv("ADVLAB_CACHE", str(tmp_path / "cache"))
    trained = load_model("sklearn-logreg-digits")
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # no temporary file left behind
    with np.load(files[0], allow_pickle=False) as z:
        assert set(z.files) == {"coef", "intercept", "classes", "acc1", "train_seconds"}
    cached = load_model("sklearn-logreg-digits")
    assert cached.meta == trained.meta
    assert torch.equal(cached.scores(xte), trained.scores(xte))


def test_sklearn_name_type_lists_the_sklearn_targets():
    from typing import get_args

    from advlab.models.sklearn import SKLEARN_MODELS, SklearnName

    assert set(get_args(SklearnName)) == set(SKLEARN_MODELS)


def test_hopskipjump_targeted_with_starting_points(digits, digits_mlp, batch):
    xtr, _ytr, _, _ = digits
    x, y = batch
    x, y = x[:8], y[:8]
    target = (y + 1) % 10
    with torch.no_grad():
        pred_tr = digits_mlp(xtr).argmax(1)
    starts = torch.stack([xtr[(pred_tr == t).nonzero()[0, 0]] for t in target.tolist()])
    res = get_attack("hopskipjump")(
        digits_mlp, x, y, advlab.ThreatModel("l2", float("inf"), targeted=True), target=target,
        generator=gen(), max_queries=400, init_evals=20, starting_points=starts,
    )
    assert res.success.all()
    with torch.no_grad():
        assert torch.equal(digits_mlp(res.x_adv).argmax(1), target)
    assert (advlab.ThreatModel("l2", 1.0).distance(x, res.x_adv)
            < advlab.ThreatModel("l2", 1.0).distance(x, starts)).all()


def test_hopskipjump_no_start_found_is_failure_not_crash(digits_mlp, batch):
    x, _y = batch
    constant = BlackBox(lambda b: torch.zeros(len(b), dtype=torch.int64), output="labels")
    res = get_attack("hopskipjump")(constant, x[:3], torch.zeros(3, dtype=torch.int64),
                                    advlab.ThreatModel("l2", float("inf")), generator=gen(),
                                    init_tries=5)
    assert not res.success.any()
    assert torch.equal(res.x_adv, x[:3])
    assert res.queries.tolist() == [6, 6, 6]


@pytest.mark.parametrize("name", ["square", "hopskipjump"])
def test_deterministic_under_seed_and_input_untouched(digits_mlp, batch, name):
    x, y = batch
    x, y = x[:8], y[:8]
    before = x.clone()
    eps = 0.3 if name == "square" else float("inf")
    threat = advlab.ThreatModel("linf", eps)
    kw = {"max_queries": 120} if name == "square" else {"max_queries": 150, "init_evals": 10}
    a = get_attack(name)(digits_mlp, x, y, threat, generator=gen(7), **kw)
    b = get_attack(name)(digits_mlp, x, y, threat, generator=gen(7), **kw)
    assert torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(a.queries, b.queries)
    assert torch.equal(x, before)


def test_registered_as_black_box():
    sq, hsj = get_attack("square"), get_attack("hopskipjump")
    assert (sq.kind, sq.needs_grad, sq.minimal) == ("score-based", False, False)
    assert (hsj.kind, hsj.needs_grad, hsj.minimal) == ("decision-based", False, True)
    assert set(sq.norms) == set(hsj.norms) == {"linf", "l2"}
    assert "arxiv.org/abs/1912.00049" in sq.paper
    assert "arxiv.org/abs/1904.02144" in hsj.paper


# ---------------------------------------------------------------------------------------------
# Acceptance on the shipped lenet-mnist (slow; figures in docs/benchmarks.md)


@pytest.mark.slow
def test_square_linf_acceptance_lenet_mnist():
    torch.set_num_threads(2)
    model = advlab.load_model("lenet-mnist")
    x, y = advlab.load_dataset("mnist", "test")
    x, y = x[:1000], y[:1000]
    res = get_attack("square")(model, x, y, advlab.ThreatModel("linf", 0.3), generator=gen(),
                               max_queries=5000)
    assert float((~verify_adversarial(model, res.x_adv, y)).float().mean()) <= 0.05
    assert int(res.queries.max()) <= 5000


@pytest.mark.slow
def test_hopskipjump_l2_acceptance_lenet_mnist():
    torch.set_num_threads(2)
    model = advlab.load_model("lenet-mnist")
    x, y = advlab.load_dataset("mnist", "test")
    x, y = x[:200], y[:200]
    res = get_attack("hopskipjump")(model, x, y, advlab.ThreatModel("l2", float("inf")),
                                    generator=gen(), max_queries=5000)
    assert int(res.queries.max()) <= 5000
    assert float(verify_adversarial(model, res.x_adv, y).float().mean()) >= 0.95
