"""The client update: pure with respect to its inputs, deterministic, FedProx pulls towards the anchor."""

from __future__ import annotations

import torch

from unseen.federated import LocalTraining, get_flat, local_update
from unseen.models import init_model


def _data(n=200):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 10, generator=g)
    return x, (x[:, 0] > 0).long()


def test_update_does_not_touch_the_global_params_and_is_deterministic():
    model = init_model("mlp", (10,), 2, seed=0, hidden=(16,))
    params = get_flat(model)
    before = params.clone()
    x, y = _data()
    cfg = LocalTraining(epochs=2, batch_size=16, lr=0.1)
    a = local_update(model, params, x, y, cfg, torch.Generator().manual_seed(1))
    b = local_update(model, params, x, y, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(params, before)
    assert torch.equal(a.delta, b.delta) and a.delta.abs().sum() > 0
    assert a.num_samples == 200 and a.steps == 2 * 13


def test_fedprox_keeps_the_update_closer_to_the_global_model():
    model = init_model("mlp", (10,), 2, seed=0, hidden=(16,))
    params = get_flat(model)
    x, y = _data()
    plain = local_update(model, params, x, y, LocalTraining(epochs=5, lr=0.1), torch.Generator().manual_seed(1))
    prox = local_update(model, params, x, y, LocalTraining(epochs=5, lr=0.1, prox_mu=1.0),
                        torch.Generator().manual_seed(1))
    assert prox.delta.norm() < 0.9 * plain.delta.norm()
