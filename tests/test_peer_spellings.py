"""How users of torchattacks, ART, Foolbox and Keras spell what advlab takes: norms ("Linf", np.inf), budgets as
NumPy or tensor scalars, one-hot and NumPy labels, channels-last or channel-less images, a single budget or attack."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch import nn

import advlab
from advlab.attacks import get_attack
from advlab.threat import ThreatModel, canonical_norm, distance

KW = {"progress": False, "checks": False, "ensemble": False}


@pytest.fixture(scope="module")
def digits(mnist_test):
    x, y = mnist_test
    return x[:24], y[:24]


@pytest.mark.parametrize(("spelling", "norm"), [
    ("Linf", "linf"), ("L2", "l2"), ("L1", "l1"), ("L0", "l0"), ("inf", "linf"), (" l_inf ", "linf"),
    (np.inf, "linf"), (math.inf, "linf"), (2, "l2"), (np.float64(2.0), "l2"), (1, "l1"), (0, "l0"),
])
def test_the_peers_spellings_of_a_norm_are_advlabs_norm(spelling, norm):
    """torchattacks' "Linf"/"L2", ART's and CleverHans' np.inf/2/1: the same threat model as advlab's own name."""
    assert canonical_norm(spelling) == norm
    assert ThreatModel(spelling, 0.1) == ThreatModel(norm, 0.1)
    x = torch.rand(3, 5)
    assert torch.equal(distance(x, x + 0.1, spelling), distance(x, x + 0.1, norm))


@pytest.mark.parametrize("norm", ["Lfoo", 3, None, True, "l3"])
def test_a_norm_no_peer_spells_fails_in_one_line(norm):
    with pytest.raises(ValueError, match=r"^norm: expected one of 'linf', 'l2', 'l1', 'l0' \(or 'Linf'") as e:
        ThreatModel(norm, 0.1)
    assert "\n" not in str(e.value)


def test_evaluate_takes_a_peers_norm_and_records_advlabs(lenet, digits):
    ev = advlab.evaluate(lenet, digits, ["fgsm"], [1.0], norm="L2", **KW)
    assert [(r.attack, r.norm) for r in ev.rows] == [("fgsm", "l2"), ("worst-case", "l2")]


def test_a_budget_given_as_a_numpy_or_tensor_scalar_is_a_number(lenet, digits):
    """eps from a config (np.float32) or a tensor (torch.tensor(8/255)) is the same budget as the float."""
    x, y = digits
    pgd = get_attack("pgd")
    want = pgd(lenet, x, y, ThreatModel("linf", 0.1), generator=torch.Generator().manual_seed(0)).x_adv
    for eps in (np.float64(0.1), torch.tensor(0.1, dtype=torch.float64), np.array(0.1)):
        threat = ThreatModel("linf", eps)
        assert type(threat.eps) is float and threat.eps == 0.1
        got = pgd(lenet, x, y, threat, generator=torch.Generator().manual_seed(0)).x_adv
        assert torch.equal(got, want)


@pytest.mark.parametrize("eps", [torch.full((4,), 0.1), np.array([0.1, 0.2])])
def test_a_budget_per_image_is_refused_in_one_line(eps):
    with pytest.raises(TypeError, match=r"^eps: expected a number >= 0, got an? (tensor|array) of shape \(\d,\) "
                                        r"\(one budget per threat model"):
        ThreatModel("linf", eps)


def test_one_hot_and_numpy_labels_are_the_class_indices(lenet, digits):
    """ART's and Keras' one-hot rows, and NumPy int32 labels, attack exactly as the indices do."""
    x, y = digits
    pgd, threat = get_attack("pgd"), ThreatModel("linf", 0.1)
    want = pgd(lenet, x, y, threat, generator=torch.Generator().manual_seed(0)).x_adv
    for labels in (nn.functional.one_hot(y, 10).float(), np.eye(10, dtype=np.float32)[y.numpy()],
                   y.numpy().astype(np.int32)):
        got = pgd(lenet, x, labels, threat, generator=torch.Generator().manual_seed(0)).x_adv
        assert torch.equal(got, want)
    ev = advlab.evaluate(lenet, (x.numpy(), np.eye(10)[y.numpy()]), ["fgsm"], [0.1], **KW)
    assert ev.rows[0].acc1_clean == advlab.evaluate(lenet, (x, y), ["fgsm"], [0.1], **KW).rows[0].acc1_clean


@pytest.mark.parametrize(("labels", "says"), [
    (lambda y: torch.rand(len(y), 10), r"not one-hot; scores or soft labels: y\.argmax\(1\)"),
    (lambda y: y.float(), r"got dtype torch\.float32 \(y\.long\(\) if they are class indices\)"),
    (lambda y: y[:, None], r"got \(24, 1\) \(y\.view\(-1\)\)"),
    (lambda y: 3, r"got int; torch\.full\(\(24,\), y\)"),
    (lambda y: y.tolist(), r"got list; torch\.tensor\(y\)"),
])
def test_labels_advlab_cannot_read_get_the_conversion_in_one_line(lenet, digits, labels, says):
    x, y = digits
    with pytest.raises((TypeError, ValueError), match=says) as e:
        get_attack("fgsm")(lenet, x, labels(y), ThreatModel("linf", 0.1))
    assert "\n" not in str(e.value)


def test_evaluate_takes_one_budget_and_attacks_as_a_string_an_info_or_a_function(lenet, digits):
    want = [(r.attack, r.eps, r.acc1_adv) for r in advlab.evaluate(lenet, digits, ["fgsm", "pgd"], [0.1], **KW).rows]
    from advlab.attacks import fgsm, pgd

    for attacks in ("fgsm,pgd", [get_attack("fgsm"), get_attack("pgd")], [fgsm, pgd], ["FGSM", pgd]):
        for eps in (0.1, np.float64(0.1), torch.tensor([0.1], dtype=torch.float64)):
            got = advlab.evaluate(lenet, digits, attacks, eps, **KW)
            assert [(r.attack, r.eps, r.acc1_adv) for r in got.rows] == want
    with pytest.raises(TypeError, match=r"^attacks: expected attack names, got function; an attack of your own runs "
                                        r"once it is registered"):
        advlab.evaluate(lenet, digits, [lambda *a: None], 0.1, **KW)


class _Grey(nn.Module):
    """A user's grey-image network that declares nothing."""

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(channels, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(4, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.mark.filterwarnings("ignore::advlab.attacks.FastViewSkipped")
@pytest.mark.parametrize("attack", ["pgd", "square"])
@pytest.mark.parametrize(("model", "layout", "says"), [
    ("lenet", lambda x: x.permute(0, 2, 3, 1), r"^x: the model takes images of 1×28×28 \(its checkpoint's in_shape\), "
                                                r"got a batch of shape \(24, 28, 28, 1\) \(channels-last: x\.permute"),
    ("lenet", lambda x: x[:, 0], r"^x: the model takes images of 1×28×28 .* \(no channel axis: x\.unsqueeze\(1\)\)"),
    ("rgb", lambda x: x.repeat(1, 3, 1, 1).permute(0, 2, 3, 1),
     r"^x: the model failed on a batch of shape \(24, 28, 28, 3\), which looks channels-last \(N×H×W×C\); advlab "
     r"passes images as N×C×H×W: x\.permute\(0, 3, 1, 2\) \(the model said: "),
])
def test_images_in_another_layout_get_the_permutation_in_one_line(lenet, digits, attack, model, layout, says):
    """Keras' and ART's channels-last batches, and grey batches without a channel axis: the layout named, not conv2d's
    error — from the checkpoint's in_shape where it declares one, else from the model's failure."""
    x, y = digits
    net = lenet if model == "lenet" else _Grey(3).eval()
    with pytest.raises(ValueError, match=says) as e:
        get_attack(attack)(net, layout(x), y, ThreatModel("linf", 0.1))
    assert "\n" not in str(e.value)


@pytest.mark.filterwarnings("ignore::advlab.attacks.FastViewSkipped")
def test_a_models_own_error_on_a_right_layout_is_its_own(digits):
    """A model that fails for its own reason keeps its own error: the layout is only named when it explains it."""
    x, y = digits

    class Broken(nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("my model is broken")

    with pytest.raises(RuntimeError, match=r"^my model is broken$"):
        get_attack("pgd")(Broken().eval(), x, y, ThreatModel("linf", 0.1))


@pytest.mark.parametrize(("images", "says"), [
    (lambda x: (x * 255).to(torch.uint8), re.escape("x: expected a floating-point tensor, got dtype torch.uint8 "
                                                    "(8-bit images: x.float() / 255)")),
    (lambda x: x.numpy(), re.escape("x: expected a torch.Tensor, got ndarray (torch.from_numpy(x))")),
])
def test_images_advlab_cannot_read_get_the_conversion(lenet, digits, images, says):
    x, y = digits
    with pytest.raises((TypeError, ValueError), match=f"^{says}$"):
        get_attack("fgsm")(lenet, images(x), y, ThreatModel("linf", 0.1))


def test_the_command_line_takes_a_peers_norm(tmp_path, capsys):
    from advlab.cli import main

    rc = main(["evaluate", "--norm", "L2", "--attacks", "fgsm", "--eps", "1", "--n", "20", "--no-checks",
               "--no-progress", "--threads", "1", "--out", str(tmp_path / "out")])
    assert rc == 0 and "1 (l2)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["evaluate", "--norm", "Lfoo"])
    assert "invalid choice: 'Lfoo' (choose from 'linf', 'l2', 'l1', 'l0')" in capsys.readouterr().err


@pytest.mark.parametrize(("images", "says"), [
    (lambda x: (x - 0.1307) / 0.3081, r"\(images already normalised, as a Normalize transform does\? .* "
                                      r"advlab\.models\.with_normalization\(model, mean, std\)\)$"),
    (lambda x: x * 255, r"got range \[0, 255\] \(pixels in 0–255\? divide the images by 255, or give bounds=\(0, 255\)\)$"),
])
def test_images_outside_the_unit_range_are_named_for_what_they_most_likely_are(lenet, digits, images, says):
    """torchvision's ToTensor + Normalize in the test transform, or pixels left in 0–255: the conversion is named,
    by the attack, by evaluate on tensors and on a torch Dataset."""
    from torch.utils.data import TensorDataset

    x, y = digits
    for call in (lambda: get_attack("fgsm")(lenet, images(x), y, ThreatModel("linf", 0.1)),
                 lambda: advlab.evaluate(lenet, (images(x), y), ["fgsm"], [0.1], **KW),
                 lambda: advlab.evaluate(lenet, TensorDataset(images(x), y), ["fgsm"], [0.1], **KW)):
        with pytest.raises(ValueError, match=r"values must lie in the bounds \[0\.0, 1\.0\], .*" + says) as e:
            call()
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"got range \[0\.001, 1\.001\]$"):  # (a rounding overshoot: no guess)
        get_attack("fgsm")(lenet, x + 1e-3, y, ThreatModel("linf", 0.1))


class _ChannelsLast(torch.utils.data.Dataset):
    """A dataset whose transform left its images H×W×C (Albumentations without ToTensorV2, Keras arrays)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.x[i].permute(1, 2, 0).numpy(), int(self.y[i])


def test_evaluate_names_a_channels_last_layout_for_tensors_arrays_and_datasets(lenet, digits):
    x, y = digits
    nhwc = x.permute(0, 2, 3, 1)
    for data, says in (((nhwc, y), r"\(channels-last: x\.permute\(0, 3, 1, 2\)\)$"),
                       ((nhwc.numpy(), y.numpy()), r"\(channels-last: x\.permute\(0, 3, 1, 2\)\)$"),
                       (_ChannelsLast(x, y), r"\(channels-last: each image to C×H×W in the dataset's transform")):
        with pytest.raises(ValueError, match=r"^model: .* expects 1×28×28 inputs \(its checkpoint's in_shape\), got "
                                             r"28×28×1 images from .*" + says):
            advlab.evaluate(lenet, data, ["fgsm"], [0.1], **KW)


@pytest.mark.filterwarnings("ignore::advlab.attacks.FastViewSkipped")
@pytest.mark.parametrize(("layout", "says"), [
    (lambda x: x.repeat(1, 3, 1, 1).permute(0, 2, 3, 1), r"^data: the model failed on a batch of shape \(24, 28, 28, 3\), "
                                                         r"which looks channels-last .* x\.permute\(0, 3, 1, 2\)"),
])
def test_evaluate_names_the_layout_a_model_that_declares_nothing_failed_on(digits, layout, says):
    x, y = digits
    with pytest.raises(ValueError, match=says) as e:
        advlab.evaluate(_Grey(3).eval(), (layout(x), y), ["fgsm"], [0.1], **KW)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("data", "says"), [
    (lambda x, y: (x, np.array([str(int(v)) for v in y])),
     r"^data: expected class indices \(labels in the model's class order\), got an array of strings \('7', "),
    (lambda x, y: (x.numpy().astype(object), y), r"^data: expected numeric images in the bounds, got an array of "
                                                  r"Python objects"),
])
def test_arrays_of_strings_or_objects_are_refused_naming_what_they_hold(lenet, digits, data, says):
    """Class names as labels (a CSV's column), or an object array: not torch's list of the dtypes it converts."""
    x, y = digits
    with pytest.raises(TypeError, match=says):
        advlab.evaluate(lenet, data(x, y), ["fgsm"], [0.1], **KW)
    with pytest.raises(TypeError, match=r"^y: expected class indices"):
        get_attack("fgsm")(lenet, x, np.array([str(int(v)) for v in y]), ThreatModel("linf", 0.1))


def test_an_evaluation_budget_in_pixel_units_says_how_to_write_it(lenet, digits, tmp_path, capsys):
    """torchattacks' eps=8/255 written as 8: evaluate refuses it (every input would be in reach) and says /255."""
    from advlab.cli import main

    with pytest.raises(ValueError, match=r"^eps: 8\.0 is outside the bounds' range for linf \(at most 1\); a budget "
                                         r"in 0–255 units\? write it /255, e\.g\. 8/255$"):
        advlab.evaluate(lenet, digits, ["fgsm"], [8], **KW)
    assert main(["evaluate", "--eps", "8", "--attacks", "fgsm", "--n", "10", "--out", str(tmp_path / "o")]) == 2
    assert "write it /255, e.g. 8/255" in capsys.readouterr().err


def test_a_rounding_slip_past_the_bounds_is_named_as_one(lenet):
    """-1e-8 from un-normalising was taken for images a Normalize transform had normalised; now: clamp them."""
    x, y = torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = -1e-8, torch.nextafter(torch.tensor(1.0), torch.tensor(2.0))
    with pytest.raises(ValueError, match=r"got range \[-1e-08, 1\] \(off by 1e-07, float rounding\? "
                                         r"x\.clamp\(0\.0, 1\.0\)\)$"):
        get_attack("fgsm")(lenet, x, y, ThreatModel("linf", 0.1))
