"""Aggregation rules and server optimizers, checked against hand computations."""

from __future__ import annotations

import pytest
import torch

from unseen.federated import ServerOptimizer, aggregate, init_state, server_step
from unseen.federated.aggregate import coordinate_median, krum, krum_scores, trimmed_mean, weighted_mean


def test_weighted_mean_is_sample_weighted():
    updates = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    assert torch.allclose(weighted_mean(updates, torch.tensor([1.0, 3.0])), torch.tensor([2.5, 3.0]))


def test_median_even_and_odd():
    assert torch.equal(coordinate_median(torch.tensor([[1.0], [5.0], [2.0]])), torch.tensor([2.0]))
    assert torch.equal(coordinate_median(torch.tensor([[1.0], [5.0], [2.0], [4.0]])), torch.tensor([3.0]))


def test_trimmed_mean_drops_extremes():
    updates = torch.tensor([[-100.0], [1.0], [2.0], [3.0], [100.0]])
    assert torch.equal(trimmed_mean(updates, 0.2), torch.tensor([2.0]))
    with pytest.raises(ValueError, match="< 0.5"):
        trimmed_mean(updates[:4], 0.5)


def test_krum_picks_an_honest_update():
    honest = torch.randn(8, 50, generator=torch.Generator().manual_seed(0)) * 0.1 + 1.0
    attackers = torch.full((2, 50), -20.0)
    updates = torch.cat([attackers, honest])
    chosen = krum(updates, byzantine=2)
    assert any(torch.equal(chosen, h) for h in honest)
    assert krum_scores(updates, 2)[:2].min() > krum_scores(updates, 2)[2:].max()
    assert (krum(updates, 2, select=6) > 0).all()
    with pytest.raises(ValueError, match="2f \\+ 2"):
        krum(updates[:5], byzantine=2)


def test_dispatch_rejects_unknown_rule():
    with pytest.raises(ValueError, match="unknown aggregation rule"):
        aggregate("average", torch.zeros(2, 2), torch.ones(2))


def test_fedavg_server_step_adds_the_update():
    params, delta = torch.ones(3), torch.tensor([0.5, -1.0, 0.0])
    new, state = server_step(ServerOptimizer("sgd", 1.0), params, delta, {})
    assert torch.equal(new, params + delta) and state == {}


def test_fedavgm_is_heavy_ball_momentum_on_the_update():
    opt = ServerOptimizer("sgd", lr=0.5, momentum=0.9)
    params, d1, d2 = torch.zeros(2), torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.5])
    state = init_state(opt, params)
    p1, state = server_step(opt, params, d1, state)
    p2, state = server_step(opt, p1, d2, state)
    assert torch.allclose(p1, 0.5 * d1)  # the first step is FedAvg's, scaled by the server lr
    assert torch.allclose(state["m"], 0.9 * d1 + d2) and torch.allclose(p2, p1 + 0.5 * (0.9 * d1 + d2))
    # the same as torch.optim.SGD driven by the pseudo-gradient -delta
    w = torch.zeros(2, requires_grad=True)
    sgd = torch.optim.SGD([w], lr=0.5, momentum=0.9)
    for d in (d1, d2):
        w.grad = -d
        sgd.step()
    assert torch.allclose(w.detach(), p2)


def test_server_momentum_is_for_sgd_only():
    with pytest.raises(ValueError, match="beta1"):
        ServerOptimizer("adam", momentum=0.9)


def test_fedadam_matches_hand_computation():
    opt = ServerOptimizer("adam", lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    params, delta = torch.zeros(2), torch.tensor([1.0, -2.0])
    state = init_state(opt, params)
    new, state = server_step(opt, params, delta, state)
    m = 0.1 * delta
    v = 0.99 * 1e-6 + 0.01 * delta**2
    assert torch.allclose(new, 0.1 * m / (v.sqrt() + 1e-3))
    assert torch.allclose(state["v"], v)


def test_fedyogi_second_moment_moves_additively():
    opt = ServerOptimizer("yogi", lr=0.1, beta2=0.99, tau=1e-3)
    delta = torch.tensor([2.0])
    _, state = server_step(opt, torch.zeros(1), delta, init_state(opt, torch.zeros(1)))
    # v0 = tau^2 < delta^2, so sign(v - d^2) = -1 and v grows by (1 - beta2) * d^2.
    assert torch.allclose(state["v"], torch.tensor([1e-6 + 0.01 * 4.0]))
