"""Vectorized client training gives the sequential loop's updates, client by client."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unseen.federated import LocalTraining, get_flat, local_update
from unseen.federated.vectorized import local_updates, why_not_vectorizable
from unseen.models import init_model
from unseen.runtime.clients import client_generator

# Float32 sums in another order: per-coordinate differences stay around 1e-7 for these sizes.
ATOL = 1e-5
# The CNN cases run in float64: there the two paths agree to about 1e-16, so anything above 1e-10 is a
# different computation, not rounding. (In float32 on one thread, momentum 0.9 over two epochs
# amplified the reassociation of the convolutions to 1.4e-4 on updates of size 0.1.)
ATOL64 = 1e-10


def _clients(sizes, shape=(1, 28, 28), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn((n, *shape), generator=g), torch.randint(0, 10, (n,), generator=g)) for n in sizes]


@pytest.mark.parametrize("config", [
    LocalTraining(epochs=1, batch_size=16, lr=0.1),
    LocalTraining(epochs=2, batch_size=16, lr=0.05, momentum=0.9, weight_decay=1e-3),
    LocalTraining(epochs=2, batch_size=8, lr=0.05, momentum=0.5, prox_mu=0.5),
], ids=["sgd", "momentum+wd", "fedprox"])
def test_vectorized_equals_sequential_per_client(config):
    model = init_model("cnn", (1, 28, 28), 10, seed=1).double()
    start = get_flat(model)
    kept = start.clone()
    # Unequal sizes: short last batches, clients that finish early, and a client with no data.
    data = [(x.double(), y) for x, y in _clients([50, 37, 0, 64, 5])]
    sequential = [local_update(model, start, x, y, config, client_generator(3, 1, c)) for c, (x, y) in enumerate(data)]
    vectorized = local_updates(model, start, data, config, [client_generator(3, 1, c) for c in range(len(data))],
                               chunk=2)  # chunk boundaries inside the round
    for s, v in zip(sequential, vectorized, strict=True):
        assert (s.num_samples, s.steps) == (v.num_samples, v.steps)
        torch.testing.assert_close(v.delta, s.delta, atol=ATOL64, rtol=0)
        assert v.mean_loss == pytest.approx(s.mean_loss, abs=1e-10)
    assert sequential[0].delta.abs().max() > 1e-3  # the clients did train
    assert torch.equal(vectorized[2].delta, torch.zeros_like(start))
    assert torch.equal(start, kept)  # the global weights were not written


def test_vectorized_equals_sequential_for_an_mlp_on_tabular_data():
    model = init_model("mlp", (30,), 2, seed=0)
    start = get_flat(model)
    data = [(x.view(len(x), -1)[:, :30], y % 2) for x, y in _clients([40, 41, 90], shape=(30,))]
    config = LocalTraining(epochs=3, batch_size=32, lr=0.1, momentum=0.9)
    seq = [local_update(model, start, x, y, config, client_generator(0, 2, c)) for c, (x, y) in enumerate(data)]
    vec = local_updates(model, start, data, config, [client_generator(0, 2, c) for c in range(3)])
    for s, v in zip(seq, vec, strict=True):
        torch.testing.assert_close(v.delta, s.delta, atol=ATOL, rtol=0)


def test_models_that_cannot_be_vectorized_say_why():
    assert why_not_vectorizable(init_model("cnn", (1, 28, 28), 10, seed=0)) is None
    bn = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    assert "BatchNorm1d" in why_not_vectorizable(bn)
    drop = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    assert "Dropout" in why_not_vectorizable(drop)
