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


@pytest.mark.parametrize("mode", ["bk", "ghost", "hooks"])
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


@pytest.mark.parametrize("name", ["cnn", "dp_cnn", "lenet"])
def test_one_pass_clipping_takes_the_same_noisy_steps_as_opacus(name):
    # Same Poisson batches, same noise draws, momentum and weight decay: our one-backward path and
    # Opacus's materialized per-sample gradients must give the same update.
    model = init_model(name, (1, 28, 28), 10, seed=0)
    params = get_flat(model)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(48, 1, 28, 28, generator=g), torch.randint(0, 10, (48,), generator=g)
    local = LocalTraining(epochs=2, lr=0.5, momentum=0.9, weight_decay=1e-3)
    dp = {mode: DPSGD(0.8, 0.05, 0.3, grad_sample_mode=mode) for mode in ("bk", "hooks")}
    ours, theirs = (dp_sgd_update(model, params, x, y, local, dp[m], torch.Generator().manual_seed(4))
                    for m in ("bk", "hooks"))
    assert ours.steps == theirs.steps == 8 and ours.delta.norm() > 0
    assert torch.allclose(ours.delta, theirs.delta, rtol=1e-4, atol=1e-6)
    assert ours.mean_loss == pytest.approx(theirs.mean_loss, rel=1e-5)


def test_both_dp_sgd_paths_carry_momentum_across_calls_alike():
    # Central DP-SGD runs one call per epoch with the momentum carried: the one-pass path and the Opacus
    # path must carry the same state, and carrying it must change the second epoch's steps.
    model = init_model("dp_cnn", (1, 28, 28), 10, seed=0)
    params = get_flat(model)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(48, 1, 28, 28, generator=g), torch.randint(0, 10, (48,), generator=g)
    local = LocalTraining(epochs=1, lr=0.5, momentum=0.9)
    out = {}
    for mode in ("bk", "hooks"):
        dp = DPSGD(0.8, 0.05, 0.3, grad_sample_mode=mode)
        first = dp_sgd_update(model, params, x, y, local, dp, torch.Generator().manual_seed(4), optimizer_state={})
        second = dp_sgd_update(model, params + first.delta, x, y, local, dp, torch.Generator().manual_seed(5),
                               optimizer_state=first.optimizer_state)
        out[mode] = (first, second)
    (bk1, bk2), (op1, op2) = out["bk"], out["hooks"]
    assert set(bk1.optimizer_state) == set(op1.optimizer_state) == {"param/momentum_buffer"}
    assert torch.allclose(bk1.optimizer_state["param/momentum_buffer"], op1.optimizer_state["param/momentum_buffer"],
                          rtol=1e-4, atol=1e-6)
    assert torch.allclose(bk2.delta, op2.delta, rtol=1e-4, atol=1e-6)
    fresh = dp_sgd_update(model, params + bk1.delta, x, y, local, DPSGD(0.8, 0.05, 0.3, grad_sample_mode="bk"),
                          torch.Generator().manual_seed(5))
    assert not torch.allclose(fresh.delta, bk2.delta, atol=1e-4)


class _EveryBranch(nn.Module):
    """Every branch of the one-pass clipping: dense Linear (ghost norm), Linear on a sequence, a
    convolution with stride, padding and dilation (materialized) and one with many channels over few
    positions (ghost)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, stride=2, padding=2, dilation=2)
        self.wide = nn.Conv2d(3, 64, 4, bias=False)  # 64 x 12 weights over 3 x 3 positions: ghost norm
        self.seq = nn.Linear(4, 5)
        self.out = nn.Linear(64 * 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.tanh(self.wide(torch.tanh(self.conv(x))))  # (B, 3, 6, 6) -> (B, 64, 3, 3)
        z = torch.tanh(self.seq(z.flatten(2)[..., :4]))  # (B, 64, 5): a sequence of 64 tokens
        return self.out(z.flatten(1))


def _clipped_by_torch_func(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float, copies: int = 1):
    """The reference: per-sample gradients from ``torch.func``, averaged over each record's ``copies``
    consecutive rows, then clipped and summed. Returns the per-record norms and the sums by name."""
    from torch.func import functional_call, grad, vmap

    weights = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, xi, yi):
        return nn.functional.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

    per_row = vmap(grad(loss), in_dims=(None, 0, 0))(weights, x, y)
    per_record = {n: g.view(-1, copies, *g.shape[1:]).mean(1) for n, g in per_row.items()}
    norms = torch.sqrt(sum(v.flatten(1).square().sum(1) for v in per_record.values()))
    factors = (clip / (norms + 1e-6)).clamp(max=1)
    return norms, {n: torch.einsum("b,b...->...", factors, g) for n, g in per_record.items()}


def test_per_sample_norms_and_clipped_sums_match_torch_func():
    from unseen.privacy.per_sample import clipped_grad_sum

    torch.manual_seed(0)
    model = _EveryBranch()
    # Batches of varying size, as Poisson sampling gives: the layers' reused work buffers grow and
    # shrink under them, and every step must still be exact.
    for batch in [6, 9, 4]:
        x, y = torch.randn(batch, 2, 11, 11), torch.randint(0, 3, (batch,))
        norms, want = _clipped_by_torch_func(model, x, y, 0.05)
        sums, got_norms, _ = clipped_grad_sum(model, x, y, 0.05)
        assert torch.allclose(got_norms, norms, rtol=1e-5)
        for name, p in model.named_parameters():
            assert torch.allclose(sums[p], want[name], rtol=1e-4, atol=1e-7), name
    assert all(p.grad is None for p in model.parameters())  # parameter gradients were never formed


def test_augmentation_multiplicity_clips_each_records_mean_gradient_once():
    from unseen.privacy.per_sample import clipped_grad_sum

    torch.manual_seed(1)
    model = _EveryBranch()
    for batch, k in [(5, 3), (3, 4), (4, 1)]:
        views = torch.randn(batch, k, 2, 11, 11)
        y = torch.randint(0, 3, (batch,))
        flat_x, flat_y = views.flatten(0, 1), y.repeat_interleave(k)
        norms, want = _clipped_by_torch_func(model, flat_x, flat_y, 0.05, copies=k)
        assert (norms > 0.05).all()  # the bound binds: a wrong grouping would show
        sums, got_norms, losses = clipped_grad_sum(model, flat_x, flat_y, 0.05, copies=k)
        assert got_norms.shape == (batch,) and losses.shape == (batch * k,)
        assert torch.allclose(got_norms, norms, rtol=1e-5)
        for name, p in model.named_parameters():
            assert torch.allclose(sums[p], want[name], rtol=1e-4, atol=1e-7), name
    with pytest.raises(ValueError, match="divide the batch"):
        clipped_grad_sum(model, torch.randn(5, 2, 11, 11), torch.zeros(5, dtype=torch.long), 0.05, copies=2)


def test_dp_sgd_over_identical_views_equals_dp_sgd_over_the_records():
    # k identical views average to the record's own gradient: same Poisson masks, same noise, same update.
    from unseen.errors import ModelError

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 6 * 6, 4))
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 4, (40,))
    params = get_flat(model).detach().clone()
    local = LocalTraining(epochs=2, lr=0.3, momentum=0.5)
    plain = dp_sgd_update(model, params, x, y, local, DPSGD(1.1, 0.05, 0.25), torch.Generator().manual_seed(3))
    views = x[:, None].expand(-1, 3, -1, -1, -1).contiguous()
    tripled = dp_sgd_update(model, params, views, y, local, DPSGD(1.1, 0.05, 0.25, copies=3),
                            torch.Generator().manual_seed(3))
    assert tripled.steps == plain.steps and tripled.num_samples == 40
    assert torch.allclose(tripled.delta, plain.delta, rtol=1e-4, atol=1e-6)
    shifted = torch.cat([x[:, None], x.roll(1, dims=-1)[:, None]], 1)
    other = dp_sgd_update(model, params, shifted, y, local, DPSGD(1.1, 0.05, 0.25, copies=2),
                          torch.Generator().manual_seed(3))
    assert not torch.allclose(other.delta, plain.delta, atol=1e-4)
    with pytest.raises(ModelError, match="one-pass clipping"):
        dp_sgd_update(model, params, views, y, local, DPSGD(1.1, 0.05, 0.25, grad_sample_mode="ghost", copies=3),
                      torch.Generator().manual_seed(3))


@pytest.mark.parametrize("conv", [nn.Conv2d(1, 4, 8, stride=2, padding=3), nn.Conv2d(3, 5, 3, padding=2, dilation=2),
                                  nn.Conv2d(6, 2, (3, 2), stride=(2, 1), padding=(1, 0))])
def test_both_per_sample_convolution_kernels_agree(conv):
    from unseen.privacy import per_sample

    x = torch.randn(5, conv.in_channels, 13, 12)
    g = torch.randn_like(conv(x))
    by_unfold = per_sample._conv_unfold(conv, x, g)
    by_groups = per_sample._conv_grouped(conv, x, g)
    assert by_unfold.shape == (5, conv.out_channels, conv.weight[0].numel())
    assert torch.allclose(by_unfold, by_groups, rtol=1e-4, atol=1e-5)
    # Their sum over the batch is the ordinary weight gradient.
    summed = torch.ops.aten.convolution_backward(g, x, conv.weight, None, conv.stride, conv.padding, conv.dilation,
                                                 False, (0, 0), 1, (False, True, False))[1]
    assert torch.allclose(by_unfold.sum(0).view_as(conv.weight), summed, rtol=1e-4, atol=1e-4)


def test_one_pass_clipping_names_the_layers_it_cannot_handle():
    from unseen.privacy.per_sample import unsupported_layers

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    assert unsupported_layers(model) == ["1 (GroupNorm)"]
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    local = LocalTraining(epochs=1, lr=0.1)
    with pytest.raises(ModelError, match=r"not 1 \(GroupNorm\).*ghost"):
        dp_sgd_update(model, get_flat(model), x, y, local, DPSGD(1.0, 1.0, 0.5, grad_sample_mode="bk"),
                      torch.Generator().manual_seed(0))
    # "auto" hands such a model to Opacus's ghost clipping instead.
    auto = dp_sgd_update(model, get_flat(model), x, y, local, DPSGD(1.0, 1.0, 0.5), torch.Generator().manual_seed(0))
    assert torch.isfinite(auto.delta).all() and auto.delta.norm() > 0


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
