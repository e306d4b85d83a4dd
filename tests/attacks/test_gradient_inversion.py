"""Gradient inversion of a FedSGD update on real MNIST: what a curious server can see."""

from __future__ import annotations

import statistics

import pytest
import torch

from tests.conftest import needs
from unseen.attacks.gradient_inversion import client_gradient, invert_gradients, psnr, recover_label
from unseen.data import load
from unseen.models import init_model

pytestmark = needs("mnist")


def _pixels(z: torch.Tensor) -> torch.Tensor:
    return (z * 0.3081 + 0.1307).clamp(0, 1)  # undo MNIST normalisation: PSNR on [0, 1] pixels


@pytest.fixture(scope="module")
def mnist_test():
    ds = load("mnist")
    return torch.from_numpy(ds.test.x[:10]), torch.from_numpy(ds.test.y[:10])


def test_single_image_update_gives_away_image_and_label(mnist_test):
    x, y = mnist_test
    model = init_model("mlp", (1, 28, 28), 10, seed=0)
    update = client_gradient(model, x[:1], y[:1])
    assert recover_label(update) == int(y[0])
    rec = invert_gradients(model, update, (1, 28, 28), steps=500)
    assert rec.label == int(y[0])
    assert psnr(_pixels(rec.image), _pixels(x[0])) >= 25  # measured: 56.8 dB


def test_sum_of_ten_updates_hides_most_clients(mnist_test):
    # What the server sees under secure aggregation: the sum. Most clients' images are not recovered
    # (PSNR near that of a blank image), but with few single-image clients one can still leak; see docs/audit.md.
    x, y = mnist_test
    model = init_model("mlp", (1, 28, 28), 10, seed=0)
    updates = [client_gradient(model, x[i : i + 1], y[i : i + 1]) for i in range(10)]
    summed = [sum(parts) for parts in zip(*updates, strict=True)]
    rec = invert_gradients(model, summed, (1, 28, 28), steps=500)
    scores = [psnr(_pixels(rec.image), _pixels(x[i])) for i in range(10)]
    assert statistics.median(scores) < 15


def test_batches_and_multi_step_updates_still_leak_and_big_secure_sums_do_not():
    from unseen.attacks.gradient_inversion import local_update_delta, matched_psnr

    ds = load("mnist")
    x, y = torch.from_numpy(ds.test.x[:160]), torch.from_numpy(ds.test.y[:160])
    model = init_model("mlp", (1, 28, 28), 10, seed=0)
    batch = invert_gradients(model, client_gradient(model, x[:4], y[:4]), (1, 28, 28), labels=y[:4].tolist(),
                             steps=500)
    assert min(matched_psnr(_pixels(batch.image), _pixels(x[:4]))) >= 30  # measured: 45 dB on average
    fedavg = invert_gradients(model, local_update_delta(model, x[:1], y[:1], 2, 0.1), (1, 28, 28),
                              labels=[int(y[0])], local_steps=2, local_lr=0.1, steps=500)
    assert psnr(_pixels(fedavg.image), _pixels(x[0])) >= 25  # measured: 31.8 dB
    # 10 clients x 16 images, summed by secure aggregation: the 160-image batch gives nothing recognisable.
    summed = [sum(parts) for parts in zip(*[client_gradient(model, x[16 * i:16 * i + 16], y[16 * i:16 * i + 16])
                                            for i in range(10)], strict=True)]
    big = invert_gradients(model, summed, (1, 28, 28), labels=y.tolist(), steps=500)
    assert statistics.median(matched_psnr(_pixels(big.image), _pixels(x))) < 18  # measured: 14.5 dB


def test_ssim_is_one_for_identical_images_and_falls_with_noise(mnist_test):
    from unseen.attacks.gradient_inversion import ssim

    x = _pixels(mnist_test[0][0])
    gen = torch.Generator().manual_seed(0)
    noisy = [(x + s * torch.randn(x.shape, generator=gen)).clamp(0, 1) for s in (0.05, 0.2, 0.5)]
    values = [ssim(x, n) for n in noisy]
    assert ssim(x, x) == pytest.approx(1.0)
    assert values == sorted(values, reverse=True) and values[0] < 1.0 and values[-1] < 0.3
    assert ssim(x, noisy[1]) == pytest.approx(ssim(noisy[1], x))
