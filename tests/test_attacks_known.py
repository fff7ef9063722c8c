"""Known answers on linear models, and the specific behaviour of each attack."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advlab import ThreatModel
from advlab.attacks import get_attack
from advlab.attacks.gradient import steepest_step


def linear_binary(w, b):
    """Two-class linear model with logits (0, w·x + b): class 1 iff w·x + b > 0."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(w.numel(), 2)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([torch.zeros_like(w.flatten()), w.flatten()]))
        model[1].bias.copy_(torch.tensor([0.0, b]))
    return model.eval().requires_grad_(False)


def test_fgsm_step_is_eps_sign_w():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 4, 4, generator=g)
    model = linear_binary(w, 0.0)
    x = torch.full((1, 1, 4, 4), 0.5)
    y = torch.tensor([1])  # moving away from class 1 means decreasing w·x: step = -eps·sign(w)
    res = get_attack("fgsm")(model, x, y, ThreatModel("linf", 0.1))
    assert torch.allclose(res.x_adv - x, -0.1 * w.sign().unsqueeze(0), atol=1e-6)
    y0 = torch.tensor([0])  # away from class 0 means increasing w·x
    res = get_attack("fgsm")(model, x, y0, ThreatModel("linf", 0.1))
    assert torch.allclose(res.x_adv - x, 0.1 * w.sign().unsqueeze(0), atol=1e-6)


def test_fgm_l2_step_is_eps_times_unit_w():
    w = torch.randn(1, 3, 3, generator=torch.Generator().manual_seed(1))
    model = linear_binary(w, 0.0)
    x = torch.full((1, 1, 3, 3), 0.5)
    res = get_attack("fgsm")(model, x, torch.tensor([0]), ThreatModel("l2", 0.2))
    assert torch.allclose(res.x_adv - x, 0.2 * w.unsqueeze(0) / w.norm(), atol=1e-6)


@pytest.mark.parametrize("overshoot", [0.0, 0.02, 0.5])
def test_deepfool_l2_step_is_distance_to_hyperplane(overshoot):
    g = torch.Generator().manual_seed(2)
    w = torch.randn(1, 4, 4, generator=g) * 0.2
    x = torch.full((1, 1, 4, 4), 0.5) + 0.05 * torch.randn(1, 1, 4, 4, generator=g)
    b = 0.3 - float((w * x[0]).sum())  # w·x + b = 0.3 > 0: class 1, at distance 0.3/‖w‖
    model = linear_binary(w, b)
    res = get_attack("deepfool")(model, x, torch.tensor([1]), ThreatModel("l2", float("inf")),
                                 overshoot=overshoot)
    expected = (0.3 / float(w.norm()) + 1e-4) * (1 + overshoot)  # distance + 1e-4, overshot
    assert float((res.x_adv - x).norm()) == pytest.approx(expected, rel=1e-4)
    # the step is along -w
    d = (res.x_adv - x).flatten()
    assert float(torch.dot(d, w.flatten()) / (d.norm() * w.norm())) == pytest.approx(-1, abs=1e-5)
    assert bool(res.success.all())


def test_deepfool_linf_step_on_linear_model():
    w = torch.randn(1, 3, 3, generator=torch.Generator().manual_seed(3)) * 0.2
    x = torch.full((1, 1, 3, 3), 0.5)
    b = 0.1 - float((w * x[0]).sum())
    model = linear_binary(w, b)
    res = get_attack("deepfool")(model, x, torch.tensor([1]), ThreatModel("linf", float("inf")),
                                 overshoot=0.0)
    expected = 0.1 / float(w.abs().sum()) + 1e-4
    assert float((res.x_adv - x).abs().max()) == pytest.approx(expected, rel=1e-4)


def test_cw_finds_near_minimal_l2_on_linear_model():
    w = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(4)) * 0.5
    x = torch.full((1, 1, 4, 4), 0.5)
    b = 0.4 - float((w * x[0]).sum())
    model = linear_binary(w, b)
    res = get_attack("cw")(model, x, torch.tensor([1]), ThreatModel("l2", float("inf")),
                           steps=200, binary_search_steps=8)
    exact = 0.4 / float(w.norm())
    assert bool(res.success.all())
    assert exact <= float((res.x_adv - x).norm()) <= exact * 1.1


def test_semantic_is_the_negative_image():
    x = torch.rand(3, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    model = nn.Sequential(nn.Flatten(), nn.Linear(25, 10)).eval()
    res = get_attack("semantic")(model, x, torch.zeros(3, dtype=torch.long), ThreatModel("linf", 0.1))
    assert torch.equal(res.x_adv, 1.0 - x)
    res = get_attack("semantic")(model, x * 2 - 1, torch.zeros(3, dtype=torch.long),
                                 ThreatModel("linf", 0.1, bounds=(-1.0, 1.0)))
    assert torch.allclose(res.x_adv, -(x * 2 - 1))


def test_noise_has_the_requested_scale():
    x = torch.full((4, 1, 28, 28), 0.5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    res = get_attack("noise")(model, x, torch.zeros(4, dtype=torch.long), ThreatModel("linf", 10.0),
                              sigma=0.1, generator=torch.Generator().manual_seed(0))
    d = res.x_adv - x
    assert float(d.std()) == pytest.approx(0.1, rel=0.05)
    assert float(d.mean()) == pytest.approx(0.0, abs=0.01)


def test_l1_step_is_sparse_with_l1_length():
    g = torch.randn(2, 1, 10, 10, generator=torch.Generator().manual_seed(0))
    s = steepest_step(g, "l1", 0.5, sparsity=0.05)
    assert ((s != 0).flatten(1).sum(1) == 5).all()
    assert torch.allclose(s.abs().flatten(1).sum(1), torch.tensor([0.5, 0.5]))


def test_pgd_restarts_never_hurt(digits_mlp, digits):
    _, _, x, y = digits
    x, y = x[:64], y[:64]
    tm = ThreatModel("linf", 0.08)
    one = get_attack("pgd")(digits_mlp, x, y, tm, steps=10, generator=torch.Generator().manual_seed(0))
    many = get_attack("pgd")(digits_mlp, x, y, tm, steps=10, restarts=4,
                             generator=torch.Generator().manual_seed(0))
    assert bool((many.success | ~one.success).all())  # whatever one restart broke stays broken
    assert int(many.success.sum()) >= int(one.success.sum())


def test_early_stop_keeps_robust_accuracy(digits_mlp, digits):
    _, _, x, y = digits
    tm = ThreatModel("linf", 0.1)
    a = get_attack("pgd")(digits_mlp, x, y, tm, steps=20, generator=torch.Generator().manual_seed(0))
    b = get_attack("pgd")(digits_mlp, x, y, tm, steps=20, early_stop=True,
                          generator=torch.Generator().manual_seed(0))
    # early stop only freezes examples that are already adversarial: it can only report more breaks
    assert bool((b.success | ~a.success).all())
    assert abs(int(a.success.sum()) - int(b.success.sum())) <= 0.02 * len(y)


def test_bim_has_no_random_start():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
    x = torch.full((2, 1, 2, 2), 0.5)
    y = torch.tensor([0, 1])
    a = get_attack("bim")(model, x, y, ThreatModel("linf", 0.1), generator=torch.Generator().manual_seed(0))
    b = get_attack("bim")(model, x, y, ThreatModel("linf", 0.1), generator=torch.Generator().manual_seed(9))
    assert torch.equal(a.x_adv, b.x_adv)


def test_fixed_budget_attacks_refuse_infinite_eps(digits_mlp, digits):
    _, _, x, y = digits
    with pytest.raises(ValueError, match="needs a finite eps"):
        get_attack("pgd")(digits_mlp, x[:2], y[:2], ThreatModel("linf", float("inf")))


def test_least_likely_targets(digits_mlp, digits):
    from advlab.attacks import choose_targets

    _, _, x, y = digits
    t = choose_targets(digits_mlp, x[:16], y[:16], "least-likely")
    with torch.no_grad():
        assert torch.equal(t, digits_mlp(x[:16]).argmin(1)) or not bool((t == y[:16]).any())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), size=st.floats(0.1, 20.0))
def test_fgsm_l1_step_maximises_the_linearised_loss_in_the_l1_ball_and_box(seed, size):
    from advlab.attacks.gradient import linear_l1_step

    g = torch.Generator().manual_seed(seed)
    grad = torch.randn(4, 1, 5, 5, generator=g)
    at = torch.rand(4, 1, 5, 5, generator=g).round()  # saturated pixels, as on MNIST
    at[:, :, :2] = torch.rand(4, 1, 2, 5, generator=g)
    step = linear_l1_step(grad, at, size, (0.0, 1.0))
    assert bool((step.flatten(1).abs().sum(1) <= size * (1 + 1e-5)).all())
    assert float((at + step).min()) >= -1e-6 and float((at + step).max()) <= 1 + 1e-6
    gain = (grad * step).flatten(1).sum(1)
    for other in (steepest_step(grad, "l1", size, 1.0), steepest_step(grad, "l1", size, 0.2, at),
                  steepest_step(grad, "l2", size)):
        other = ((at + other).clamp(0, 1) - at).flatten(1)
        other = other * (size / other.abs().sum(1, keepdim=True).clamp_min(size)).clamp(max=1.0)
        assert bool((gain >= (grad.flatten(1) * other).sum(1) - 1e-4).all())


def test_l1_steps_skip_pixels_already_at_the_bound_they_are_pushed_past():
    grad = torch.tensor([[[[-5.0, 4.0, 1.0, 0.5]]]])
    at = torch.tensor([[[[0.0, 1.0, 0.5, 0.5]]]])  # the two largest |g| push out of [0, 1]
    step = steepest_step(grad, "l1", 1.0, 0.5, at)
    assert torch.equal(step, torch.tensor([[[[0.0, 0.0, 0.5, 0.5]]]]))
