"""What users of torchattacks and ART bring to the Python API: feature vectors, numpy predict functions,
budgets in 0–255 units, probability models left in training mode."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from advlab.attacks import SquareSkipped, get_attack
from advlab.attacks.fastview import ModelInTrainingMode
from advlab.models import BlackBox
from advlab.threat import BudgetBeyondBounds, ThreatModel


@pytest.fixture(scope="module")
def digits(mnist_test):
    x, y = mnist_test
    return x[:40], y[:40]


class _Flat(torch.nn.Module):
    """lenet-mnist behind a flat input: a model of 784 features, as a tabular model takes them."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.net(v.view(-1, 1, 28, 28))


def test_the_ensemble_runs_on_feature_vectors_without_square(lenet, digits):
    """AutoAttack's recipe on N×D inputs: the white-box stages, Square left out with a warning (it needs H×W)."""
    x, y = digits
    threat = ThreatModel("linf", 0.1)
    flat = _Flat(lenet).eval()
    with pytest.warns(SquareSkipped, match=r"shape \(40, 784\), not images .*Square .* left out"):
        res = get_attack("apgd-ensemble")(flat, x.flatten(1), y, threat, generator=torch.Generator().manual_seed(0),
                                          steps=20)
    assert res.x_adv.shape == (40, 784) and int(res.queries.sum()) == 0
    assert float((res.x_adv - x.flatten(1)).abs().max()) <= 0.1 + 1e-6
    with torch.no_grad():
        assert torch.equal(res.success, flat(res.x_adv).argmax(1) != y)
    assert 0.2 <= float(res.success.float().mean()) < 1.0  # (APGD at 0.1 on lenet breaks about 2 in 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SquareSkipped)  # images: no warning
        get_attack("apgd-ensemble")(lenet, x[:4], y[:4], threat, generator=torch.Generator().manual_seed(0), steps=5,
                                    max_queries=20)


def _numpy_predict(net):
    def predict(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(a)).softmax(1).numpy()
    return predict


@pytest.mark.parametrize(("attack", "norm", "says"), [
    ("square", "linf", r"^model: predict takes numpy arrays, not torch tensors; wrap it as "
                       r"advlab\.models\.BlackBox\(fn, .*input_format='numpy'\)$"),
    ("pgd", "linf", r"^model: predict takes numpy arrays, not torch tensors, so no gradient can pass through it; "
                    r"attack it with a black-box attack"),
])
def test_a_numpy_predict_function_gets_the_wrapper_it_needs(lenet, digits, attack, norm, says):
    """ART's habit: a predict function on numpy arrays. One line naming advlab's BlackBox, not numpy's TypeError."""
    x, y = digits
    with pytest.raises(TypeError, match=says) as err:
        get_attack(attack)(_numpy_predict(lenet), x, y, ThreatModel(norm, 0.2))
    assert "\n" not in str(err.value)
    box = BlackBox(_numpy_predict(lenet), output="probs", input_format="numpy")  # the wrapper it names works
    res = get_attack("square")(box, x, y, ThreatModel("linf", 0.2), generator=torch.Generator().manual_seed(0),
                               max_queries=50)
    assert res.success.any()


def test_a_function_failing_on_its_own_keeps_its_error(lenet, digits):
    """A torch function whose failure is its own (not numpy's input type) is not relabelled."""
    x, y = digits

    def broken(t: torch.Tensor) -> torch.Tensor:
        raise KeyError("layer7")

    with pytest.raises(KeyError, match="layer7"):
        get_attack("square")(broken, x, y, ThreatModel("linf", 0.2), max_queries=10)


def test_a_budget_in_pixel_units_on_unit_images_is_pointed_out():
    """ε = 8 on [0, 1] images (torchattacks' eps=8/255 written without /255) reaches every image: said."""
    with pytest.warns(BudgetBeyondBounds, match=r"eps 8 is beyond the bounds' range for linf \(1\).*8/255"):
        ThreatModel("linf", 8)
    with pytest.warns(BudgetBeyondBounds) as rec:
        ThreatModel("linf", 300, bounds=(0, 255))
    assert "8/255" not in str(rec[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetBeyondBounds)
        for threat in (("linf", 1.0), ("linf", 8 / 255), ("l2", 8.0), ("linf", float("inf")), ("l0", 20)):
            ThreatModel(*threat)


def test_warnings_name_the_users_model_not_advlabs_adapter(lenet, digits):
    """A probability model left in training mode: both warnings name it, not advlab's LogProbabilities."""
    x, y = digits

    class Probs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = lenet

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.net(t).softmax(1)

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        get_attack("fgsm")(Probs(), x, y, ThreatModel("linf", 0.1))
    training = [str(w.message) for w in rec if issubclass(w.category, ModelInTrainingMode)]
    assert training and all(m.startswith("advlab: Probs is in training mode") for m in training)
    assert not any("LogProbabilities" in str(w.message) for w in rec)


def test_a_surrogate_of_other_inputs_is_refused_in_one_line(lenet, digits):
    """transfer's default surrogate (lenet-mnist) on feature vectors, signnet on digits: named, not conv2d's error."""
    x, y = digits
    threat = ThreatModel("linf", 0.1)
    with pytest.raises(ValueError, match=r"^surrogate: lenet-mnist expects 1×28×28 inputs .*pass surrogate="):
        get_attack("transfer")(_Flat(lenet).eval(), x.flatten(1), y, threat)
    with pytest.raises(ValueError, match=r"^surrogate: signnet-signs expects 3×48×48 inputs"):
        get_attack("transfer")(lenet, x, y, threat, surrogate="signnet-signs")
    res = get_attack("transfer")(_Flat(lenet).eval(), x.flatten(1), y, threat, surrogate=_Flat(lenet).eval(),
                                 generator=torch.Generator().manual_seed(0))
    assert res.success.any()


class _Counted(torch.utils.data.Dataset):
    """A map-style dataset of (image, label) that counts the items read; ``targets`` like torchvision's."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, targets: bool = False) -> None:
        self.x, self.y, self.reads = x, y, 0
        if targets:
            self.targets = y.tolist()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        self.reads += 1
        return self.x[i].numpy(), int(self.y[i])  # (numpy images, as a transform may leave them)


def _table(ev) -> list[tuple[str, float, float, float]]:
    return [(r.attack, r.eps, r.acc1_adv, r.acc1_clean) for r in ev.rows]


def test_evaluate_takes_a_torch_dataset_a_loader_and_numpy_arrays(lenet, digits):
    """What a PyTorch user has (a test Dataset, a DataLoader, even shuffled) and an ART user (numpy arrays)."""
    import advlab

    x, y = digits
    kw = {"attacks": ["fgsm"], "eps": [0.1], "checks": False, "progress": False}
    want = _table(advlab.evaluate(lenet, (x, y), **kw))
    data = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(data, batch_size=7, shuffle=True)
    for given in (data, loader, (x.numpy(), y.numpy()), _Counted(x, y)):
        assert _table(advlab.evaluate(lenet, given, **kw)) == want
    ev = advlab.evaluate(lenet, data, **kw)
    assert ev.config["dataset"] == "torch:TensorDataset"


def test_a_dataset_is_read_lazily_and_only_as_far_as_n(lenet, digits):
    import advlab

    x, y = digits
    kw = {"attacks": ["fgsm"], "eps": [0.1], "checks": False, "progress": False, "n": 5}
    big = _Counted(x.repeat(25, 1, 1, 1), y.repeat(25), targets=True)  # 1 000 items
    ev = advlab.evaluate(lenet, big, **kw)
    assert ev.config["n"] == 5 and big.reads <= 40  # (a few passes over 5 images; never the 1 000)
    assert _table(ev) == _table(advlab.evaluate(lenet, (x[:5], y[:5]), **kw))


class _Bad(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, how: str) -> None:
        self.x, self.y, self.how = x, y, how

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> object:
        if self.how == "augmented":
            return (self.x[i] + 0.01 * torch.rand(1)).clamp(0, 1), int(self.y[i])
        if self.how == "uint8":
            return (self.x[i] * 255).to(torch.uint8), int(self.y[i])
        if self.how == "sizes":
            return self.x[i][:, : 28 - i % 2], int(self.y[i])
        if self.how == "dict":
            return {"picture": self.x[i], "label": int(self.y[i])}
        keys = ("pixel_values", "labels") if self.how == "hf" else ("image", "label")
        return {keys[0]: self.x[i], keys[1]: torch.tensor(int(self.y[i]))}


def test_dict_items_are_read_by_their_keys(lenet, digits):
    """A dataset of dicts (Hugging Face's pixel_values / labels, or image / label): the tuples' table."""
    import advlab

    x, y = digits
    kw = {"n": 12, "progress": False, "checks": False, "ensemble": False}
    want = advlab.evaluate(lenet, (x, y), ["fgsm"], [0.1], **kw).rows
    for how in ("hf", "plain"):
        loader = torch.utils.data.DataLoader(_Bad(x, y, how), batch_size=5)
        got = advlab.evaluate(lenet, loader, ["fgsm"], [0.1], **kw).rows
        assert [(r.acc1_clean, r.acc1_adv) for r in got] == [(r.acc1_clean, r.acc1_adv) for r in want]


@pytest.mark.parametrize(("how", "says"), [
    ("augmented", r"^data: _Bad returns another image each time item 0 is read \(a random transform left on\?\)"),
    ("uint8", r"^data: _Bad's item 0 is an image of torch\.uint8; advlab needs float images in the bounds"),
    ("dict", r"^data: _Bad's item 0 is a dict with keys picture, label; advlab reads its image from one of "
             r"pixel_values, image, img, .* and its label from one of labels, label, target"),
    ("sizes", r"^data: _Bad's item 1 is an image of shape \(1, 27, 28\), item 0's is \(1, 28, 28\)"),
])
def test_a_dataset_advlab_cannot_read_faithfully_gets_one_line(lenet, digits, how, says):
    import advlab

    x, y = digits
    with pytest.raises(ValueError, match=says):
        advlab.evaluate(lenet, _Bad(x, y, how), attacks=["fgsm"], eps=[0.1], checks=False, progress=False)


def test_an_iterable_dataset_is_refused_in_one_line(lenet):
    import advlab

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield torch.zeros(1, 28, 28), 0

    with pytest.raises(TypeError, match=r"^data: Stream is an iterable-style dataset; advlab needs a map-style one"):
        advlab.evaluate(lenet, Stream(), attacks=["fgsm"], eps=[0.1], checks=False, progress=False)


class _Body(torch.nn.Module):
    """lenet-mnist without its normalisation layer: a network trained on normalised inputs."""

    def __init__(self, lenet: torch.nn.Module) -> None:
        super().__init__()
        self.features, self.classifier = lenet.features, lenet.classifier

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(t).flatten(1))


def test_with_normalization_puts_the_statistics_inside_the_model(lenet, digits):
    """torchattacks' set_normalization_used / ART's preprocessing: ε in pixels, attacks equal to lenet's own."""
    from advlab.models import with_normalization

    x, y = digits
    body = _Body(lenet).eval()
    net = with_normalization(body, 0.1307, 0.3081)
    with torch.no_grad():
        assert torch.equal(net(x), lenet(x))
    runs = [get_attack("pgd")(m, x, y, ThreatModel("linf", 0.1), steps=10, generator=torch.Generator().manual_seed(0))
            for m in (net, lenet)]
    assert torch.equal(runs[0].x_adv, runs[1].x_adv)
    assert not net.training and list(net.state_dict()) == [f"net.{k}" for k in body.state_dict()]


def test_per_channel_statistics_certify_and_load_the_bare_networks_weights(tmp_path):
    from safetensors.torch import save_file

    from advlab.certify import logit_bounds
    from advlab.models import Normalize, Normalized
    from advlab.models.factory import load_weights

    torch.manual_seed(0)
    bare = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 5))
    net = Normalized(bare, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).eval()
    x = torch.rand(6, 3, 8, 8)
    lo, hi = logit_bounds(net, x, 0.02, method="crown")
    pts = (x + (torch.rand(100, *x.shape) * 2 - 1) * 0.02).clamp(0, 1)
    with torch.no_grad():
        z = net(pts.flatten(0, 1)).view(100, 6, 5)
    assert bool((z >= lo - 1e-5).all() and (z <= hi + 1e-5).all())
    for keys in ("bare", "wrapped"):  # (a factory's --weights: the bare network's file, or the wrapper's)
        state = {k: v + 1 for k, v in (bare if keys == "bare" else net).state_dict().items()}
        w = tmp_path / f"{keys}.safetensors"
        save_file(state, str(w))
        fresh = Normalized(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                               torch.nn.Linear(144, 5)), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        load_weights(fresh, w)
        assert torch.equal(fresh.net[0].weight, bare[0].weight + 1)
    with pytest.raises(ValueError, match=r"^mean, std: one value per channel each, got 2 and 3$"):
        Normalize((0.1, 0.2), (0.3, 0.3, 0.3))
    with pytest.raises(ValueError, match=r"^std: every value must be non-zero$"):
        Normalize(0.1, (1.0, 0.0))


@pytest.mark.parametrize(("name", "says"), [
    ("AutoAttack", "advlab's 'apgd-ensemble'"),
    ("ProjectedGradientDescent", "advlab's 'pgd'"),
    ("L2CarliniWagnerAttack", "advlab's 'cw' with ThreatModel('l2', ...)"),
    ("LinfPGD", "advlab's 'pgd' with ThreatModel('linf', ...)"),
    ("APGD-CE", "advlab's 'apgd', with loss='ce'"),
    ("FAB", "(FAB itself is not in advlab)"),
])
def test_a_peer_librarys_attack_name_gets_advlabs(name, says):
    """torchattacks', ART's and Foolbox's class names: the error says which advlab attack, and the norm it implies."""
    with pytest.raises(ValueError, match=r"^attack: unknown attack .*from torchattacks, ART or Foolbox: ") as err:
        get_attack(name)
    assert says in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"did you mean 'pgd'"):  # (a typo still gets the close names)
        get_attack("pgdd")


def test_no_labels_says_how_to_attack_the_predictions(lenet, digits):
    """ART's generate(x) without y attacks the model's predictions; advlab asks for them explicitly."""
    x, _ = digits
    with pytest.raises(TypeError, match=r"^y: .*got None; to attack the model's own predictions, as ART does "
                                        r"without labels, pass model\(x\)\.argmax\(1\)$"):
        get_attack("pgd")(lenet, x, None, ThreatModel("linf", 0.1))


@pytest.mark.parametrize(("attack", "param", "says"), [
    ("pgd", "alpha", "torchattacks' alpha is advlab's step_size"),
    ("pgd", "eps_step", "ART's eps_step is advlab's step_size"),
    ("pgd", "nb_iter", "CleverHans' nb_iter is advlab's steps"),
    ("cw", "confidence", "confidence is advlab's kappa"),
    ("pgd", "eps", "the budget, the norm, the bounds and targeting are the ThreatModel's"),
    ("pgd", "targeted", "ThreatModel('linf', eps, bounds=(lo, hi), targeted=True)"),
    ("pgd", "eps_iter", "CleverHans' eps_iter is advlab's step_size"),
    ("pgd", "rand_init", "CleverHans' rand_init is advlab's random_start"),
    ("deepfool", "nb_candidate", "ART's nb_candidate is advlab's candidates"),
    ("pgd", "batch_size", "an attack takes the batch it is given; to run over a dataset in batches use "
                          "advlab.evaluate, whose batch_size splits the images"),
    ("square", "verbose", "whose progress=True shows a progress bar"),
])
def test_a_peer_librarys_parameter_name_gets_advlabs(lenet, digits, attack, param, says):
    x, y = digits
    threat = ThreatModel("l2", float("inf")) if attack == "cw" else ThreatModel("linf", 0.1)
    with pytest.raises(TypeError, match=rf"^{attack}: unexpected parameter\(s\) {param} \(") as err:
        get_attack(attack)(lenet, x, y, threat, **{param: 1})
    assert says in str(err.value)


def test_a_black_box_declared_logits_that_returns_probabilities_is_read_through_the_log(lenet, digits):
    """ART's predict returns probabilities; declared output='logits', they are read as their log, with one warning."""
    from advlab.models.blackbox import ModelReturnsProbabilities

    x, y = digits
    box = BlackBox(_numpy_predict(lenet), output="logits", input_format="numpy")
    right = BlackBox(_numpy_predict(lenet), output="probs", input_format="numpy")
    threat = ThreatModel("linf", 0.2)
    with pytest.warns(ModelReturnsProbabilities, match=r"^advlab: predict returns probabilities .* output='logits'"):
        a = get_attack("square")(box, x, y, threat, generator=torch.Generator().manual_seed(0), max_queries=300)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ModelReturnsProbabilities)  # (once per box; none when declared)
        box.scores(x[:2])
        b = get_attack("square")(right, x, y, threat, generator=torch.Generator().manual_seed(0), max_queries=300)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)


def test_the_worst_case_names_a_check_attack_that_broke_more(lenet, digits):
    """With FGSM alone, the checks' own PGD breaks more on its subset: the worst case says so, not "[fgsm]"."""
    import advlab

    ev = advlab.evaluate(lenet, digits, attacks=["fgsm"], eps=[0.1], check_n=30, progress=False)
    fgsm = next(r for r in ev.rows if r.attack == "fgsm")
    worst = next(r for r in ev.rows if r.attack == "worst-case")
    assert worst.acc1_adv < fgsm.acc1_adv and worst.strongest == "fgsm + checks' pgd"
    assert "| worst-case [fgsm + checks' pgd] |" in ev.to_markdown()
