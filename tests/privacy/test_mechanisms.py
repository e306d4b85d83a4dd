"""DP-SGD clips per record, DP-FedAvg reduces to clipped FedAvg without noise, noise is what it claims."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from unseen.errors import ModelError
from unseen.federated import LocalTraining, get_flat
from unseen.models import init_model
from unseen.privacy.dp_fedavg import DPFedAvg, clip_updates, dp_fedavg_aggregate
from unseen.privacy.dpsgd import DPSGD, check_model, dp_sgd_update
from unseen.privacy.noise import gaussian_noise


def _outlier_data(n=50):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 10, generator=g)
    x[0] *= 1e4  # one record with an enormous gradient
    return x, (x[:, 0] > 0).long()


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_dp_sgd_clips_every_record(mode):
    model = init_model("logreg", (10,), 2, seed=0)
    params = get_flat(model)
    x, y = _outlier_data()
    local = LocalTraining(epochs=1, lr=1.0)
    # q = 1 (every record in the one batch), no noise: the update is -lr * mean of clipped gradients.
    dp = DPSGD(noise_multiplier=1e-12, max_grad_norm=0.5, sampling_rate=1.0, grad_sample_mode=mode)
    result = dp_sgd_update(model, params, x, y, local, dp, torch.Generator().manual_seed(0))
    assert result.steps == 1
    assert result.delta.norm() <= 0.5 + 1e-5
    # A single record's step has exactly the clip's norm when its gradient is larger.
    one = dp_sgd_update(model, params, x[:1], y[:1], local, dp, torch.Generator().manual_seed(0))
    assert one.delta.norm() == pytest.approx(0.5, rel=1e-4)
    # Without DP the outlier's gradient dominates the update.
    from unseen.federated import local_update
    plain = local_update(model, params, x, y, LocalTraining(epochs=1, lr=1.0, batch_size=50), torch.Generator())
    assert plain.delta.norm() > 10


def test_ghost_clipping_equals_materialized_per_sample_clipping():
    # Same Poisson batches, no noise: the fast path must give the same update as Opacus's hooks.
    model = init_model("cnn", (1, 28, 28), 10, seed=0)
    params = get_flat(model)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)
    local = LocalTraining(epochs=1, lr=0.5)
    updates = [dp_sgd_update(model, params, x, y, local, DPSGD(1e-12, 0.1, 0.25, grad_sample_mode=mode),
                             torch.Generator().manual_seed(3)).delta for mode in ("ghost", "hooks")]
    assert updates[0].norm() > 0
    assert torch.allclose(updates[0], updates[1], rtol=1e-3, atol=1e-6)


def test_empty_poisson_batches_still_take_noisy_steps():
    model = init_model("logreg", (10,), 2, seed=0)
    params = get_flat(model)
    x, y = _outlier_data(4)
    # q tiny: almost every batch is empty, yet every step adds noise (as the accountant assumes).
    result = dp_sgd_update(model, params, x, y, LocalTraining(epochs=1, lr=1.0),
                           DPSGD(1.0, 1.0, 0.01), torch.Generator().manual_seed(0))
    assert result.steps == 100 and result.delta.norm() > 0 and torch.isfinite(result.delta).all()


def test_dp_sgd_uses_poisson_batches_and_leaves_no_hooks():
    model = init_model("mlp", (10,), 2, seed=0, hidden=(8,))
    params = get_flat(model)
    x, y = _outlier_data(200)
    dp = DPSGD(noise_multiplier=1.0, max_grad_norm=1.0, sampling_rate=0.05)
    a = dp_sgd_update(model, params, x, y, LocalTraining(epochs=2, lr=0.1), dp, torch.Generator().manual_seed(1))
    b = dp_sgd_update(model, params, x, y, LocalTraining(epochs=2, lr=0.1), dp, torch.Generator().manual_seed(1))
    assert a.steps == 2 * 20 and torch.equal(a.delta, b.delta)  # ceil(1/q) steps per epoch, seeded
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
    assert not any(hasattr(p, "grad_sample") and p.grad_sample is not None for p in model.parameters())


def test_models_opacus_cannot_make_private_are_refused_with_the_fix():
    with pytest.raises(ModelError, match="GroupNorm"):
        check_model(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)))
    for name in ("logreg", "mlp", "cnn", "he_cnn"):
        check_model(init_model(name, (1, 28, 28), 10, seed=0))


def test_dp_fedavg_without_noise_is_fedavg_with_clipping():
    g = torch.Generator().manual_seed(0)
    updates = torch.randn(6, 100, generator=g) * torch.tensor([0.1, 1, 5, 0.5, 20, 2])[:, None]
    config = DPFedAvg(noise_multiplier=0.0, clip=1.0, client_rate=1.0, num_clients=6)
    delta, clip = dp_fedavg_aggregate(updates, config, 1.0, g)
    clipped, norms = clip_updates(updates, 1.0)
    assert torch.allclose(delta, clipped.mean(0)) and clip == 1.0
    assert (torch.linalg.vector_norm(clipped, dim=1) <= 1.0 + 1e-6).all()
    assert torch.allclose(clipped[norms <= 1.0], updates[norms <= 1.0])


def test_dp_fedavg_noise_scale_and_fixed_denominator():
    updates = torch.zeros(3, 20_000)
    config = DPFedAvg(noise_multiplier=2.0, clip=0.5, client_rate=0.5, num_clients=10)
    delta, _ = dp_fedavg_aggregate(updates, config, 0.5, torch.Generator().manual_seed(0))
    # std of the average = z * clip / (q * N) = 2 * 0.5 / 5
    assert float(delta.std()) == pytest.approx(0.2, rel=0.03)


def test_adaptive_clip_moves_towards_the_quantile():
    updates = torch.ones(50, 4) * 10  # every norm is 20: far above a clip of 1
    config = DPFedAvg(noise_multiplier=1.0, clip=1.0, client_rate=1.0, num_clients=50, adaptive=True,
                      target_quantile=0.5, clip_lr=0.2)
    clip = 1.0
    for r in range(30):
        _, clip = dp_fedavg_aggregate(updates, config, clip, torch.Generator().manual_seed(r))
    assert clip > 5  # grows geometrically while almost no update fits
    assert config.update_noise_multiplier == pytest.approx(1 / np.sqrt(0.9))


@pytest.mark.parametrize("secure", [False, True])
def test_noise_is_gaussian_with_the_stated_std(secure):
    sample = gaussian_noise((50_000,), 3.0, generator=torch.Generator().manual_seed(0), secure=secure).double().numpy()
    assert abs(sample.mean()) < 0.05 and sample.std() == pytest.approx(3.0, rel=0.02)
    assert stats.kstest(sample / 3.0, "norm").pvalue > 1e-6  # p is uniform under the null: 1e-6 never flakes


def test_secure_noise_is_not_reproducible_and_seeded_noise_is():
    a = gaussian_noise((100,), 1.0, secure=True)
    b = gaussian_noise((100,), 1.0, secure=True)
    assert not torch.equal(a, b)
    c = gaussian_noise((100,), 1.0, generator=torch.Generator().manual_seed(5))
    d = gaussian_noise((100,), 1.0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(c, d)
