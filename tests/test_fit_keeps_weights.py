"""``fit`` on a model that already has weights (a user's pretrained network, adversarial fine-tuning) starts from
them; only a network as ``create_model`` built it is re-drawn under the training seed, so that advlab's own training
is the same whatever the caller's random state."""

from __future__ import annotations

import torch
from torch import nn

from advlab.models import create_model
from advlab.models.checkpoint import is_initial, tensor_digest
from advlab.train import TrainConfig, fit

STILL = TrainConfig(epochs=1, batch_size=16, lr=0.0, seed=3)  # (a learning rate of 0: no step moves a weight)


def data(n=32):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def users_net():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def test_a_users_pretrained_module_is_trained_from_its_own_weights():
    net = users_net()
    before = tensor_digest(net)
    fit(net, data(), None, STILL, progress=False)
    assert tensor_digest(net) == before  # (it used to be re-initialised: the user's weights were gone)
    fit(net, data(), None, STILL, progress=False, init_seed=True)
    assert tensor_digest(net) != before  # asked for: re-drawn


def test_a_created_network_is_redrawn_under_the_seed_whatever_the_callers_rng():
    torch.manual_seed(1)
    a = create_model("mlp", in_shape=(1, 8, 8), num_classes=10)
    torch.manual_seed(2)
    b = create_model("mlp", in_shape=(1, 8, 8), num_classes=10)
    assert is_initial(a) and is_initial(b) and tensor_digest(a) != tensor_digest(b)
    fit(a, data(), None, STILL, progress=False)
    fit(b, data(), None, STILL, progress=False)
    assert tensor_digest(a) == tensor_digest(b)


def test_a_created_network_with_loaded_weights_keeps_them():
    trained = create_model("mlp", in_shape=(1, 8, 8), num_classes=10)
    fit(trained, data(), None, TrainConfig(epochs=1, batch_size=16, seed=0), progress=False)
    net = create_model("mlp", in_shape=(1, 8, 8), num_classes=10)
    net.load_state_dict(trained.state_dict())
    assert not is_initial(net)
    fit(net, data(), None, STILL, progress=False)
    assert tensor_digest(net) == tensor_digest(trained)


def test_training_again_continues_from_the_first_run():
    net = create_model("mlp", in_shape=(1, 8, 8), num_classes=10)
    fit(net, data(), None, TrainConfig(epochs=1, batch_size=16, seed=0), progress=False)
    after_first = tensor_digest(net)
    fit(net, data(), None, STILL, progress=False)
    assert tensor_digest(net) == after_first
