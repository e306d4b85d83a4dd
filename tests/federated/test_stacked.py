"""Stacked evaluation of many clients' Sequential models equals each client's own model, and the vmap
fallback serves the models it cannot run."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from unseen.federated import LocalTraining, get_flat, local_update
from unseen.federated.params import set_flat
from unseen.federated.stacked import stacked_forward, why_not_stacked
from unseen.federated.vectorized import _gradient_function, local_updates, vectorizing_pays
from unseen.models import Square, init_model
from unseen.runtime.clients import client_generator

K, B = 3, 5


def _awkward_model() -> nn.Sequential:
    """Strides, padding, dilation, grouped convolution, no bias, nesting, both poolings, odd activations."""
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1, bias=False), nn.Tanh(),
        nn.Sequential(nn.Conv2d(4, 6, 3, padding=(1, 2), dilation=(1, 2), groups=2), Square()),
        nn.MaxPool2d(2), nn.AvgPool2d(2, stride=1), nn.GELU(),
        nn.Flatten(), nn.Linear(6, 7, bias=False), nn.LeakyReLU(0.1),
        nn.Sequential(nn.Identity(), nn.Linear(7, 4)),
    ).double()


def _client_models(factory=_awkward_model, k: int = K) -> tuple[list[nn.Sequential], dict[str, torch.Tensor]]:
    """k models from ``factory`` with different weights, and those weights stacked."""
    copies = []
    for i in range(k):
        torch.manual_seed(i)
        copies.append(factory())
    stacked = {n: torch.stack([dict(c.named_parameters())[n].detach() for c in copies])
               for n, _ in copies[0].named_parameters()}
    return copies, stacked


def test_stacked_forward_equals_each_clients_model():
    copies, stacked = _client_models()
    x = torch.randn(K, B, 2, 10, 10, dtype=torch.float64)
    assert why_not_stacked(copies[0], (2, 10, 10)) is None
    out = stacked_forward(copies[0], stacked, x)
    assert out.shape == (K, B, 4)
    for i, model in enumerate(copies):
        torch.testing.assert_close(out[i], model(x[i]), atol=1e-12, rtol=0)
    assert (out[0] - out[1]).abs().max() > 1e-3  # the clients' weights do differ


def test_stacked_gradients_are_each_clients_own():
    copies, stacked = _client_models()
    x = torch.randn(K, B, 2, 10, 10, dtype=torch.float64)
    y = torch.randint(0, 4, (K, B))
    w = torch.ones(K, B, dtype=torch.float64)
    w[2, 3:] = 0.0  # padding rows of a short batch carry no weight
    grads, losses = _gradient_function(copies[0], (2, 10, 10))(stacked, x, y, w)
    for i, model in enumerate(copies):
        keep = w[i] > 0
        loss = F.cross_entropy(model(x[i][keep]), y[i][keep])
        expected = torch.autograd.grad(loss, list(model.parameters()))
        assert float(losses[i]) == pytest.approx(loss.item(), abs=1e-12)
        for (name, _), g in zip(model.named_parameters(), expected, strict=True):
            torch.testing.assert_close(grads[name][i], g, atol=1e-12, rtol=0)


def test_stacked_mlp_on_flat_input():
    model = init_model("mlp", (30,), 3, seed=0, hidden=(8, 8)).double()
    assert why_not_stacked(model, (30,)) is None
    stacked = {n: torch.stack([p.detach() * (1 + i) for i in range(K)]) for n, p in model.named_parameters()}
    x = torch.randn(K, B, 30, dtype=torch.float64)
    out = stacked_forward(model, stacked, x)
    for i in range(K):
        scaled = init_model("mlp", (30,), 3, seed=0, hidden=(8, 8)).double()
        set_flat(scaled, get_flat(model) * (1 + i))
        torch.testing.assert_close(out[i], scaled(x[i]), atol=1e-12, rtol=0)


class _NotSequential(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 5)
        self.fc = nn.Linear(3 * 12 * 12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


@pytest.mark.parametrize("model, shape, reason", [
    (_NotSequential(), (1, 28, 28), "not an nn.Sequential"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, padding_mode="reflect", padding=1), nn.Flatten()), (1, 8, 8), "zero padding"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, padding="same"), nn.Flatten()), (1, 8, 8), "zero padding"),
    (nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten()), (1, 8), "Conv1d"),
    (nn.Sequential(nn.Linear(8, 2)), (1, 8, 8), "not flat"),
    (nn.Sequential(nn.Flatten(0)), (1, 8, 8), "flattens dimensions 0"),
    (nn.Sequential(nn.Conv2d(1, 2, 3)), (1, 8, 8), "output is not flat"),
], ids=["module", "reflect", "same", "conv1d", "linear-on-image", "flatten-0", "image-output"])
def test_why_not_stacked_names_the_layer(model, shape, reason):
    assert reason in why_not_stacked(model, shape)


def test_models_stacked_cannot_run_still_train_vectorized_through_vmap():
    torch.manual_seed(0)
    model = _NotSequential().double()
    start = get_flat(model)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(n, 1, 28, 28, generator=g, dtype=torch.float64), torch.randint(0, 10, (n,), generator=g))
            for n in (20, 9)]
    config = LocalTraining(epochs=2, batch_size=8, lr=0.1, momentum=0.9)
    seq = [local_update(model, start, x, y, config, client_generator(0, 1, c)) for c, (x, y) in enumerate(data)]
    vec = local_updates(model, start, data, config, [client_generator(0, 1, c) for c in range(2)])
    for s, v in zip(seq, vec, strict=True):
        torch.testing.assert_close(v.delta, s.delta, atol=1e-10, rtol=0)
    assert seq[0].delta.abs().max() > 1e-3


def test_auto_vectorizes_lenet_but_not_wide_or_unstackable_convolutions_on_cpu():
    cpu = torch.device("cpu")
    assert vectorizing_pays(init_model("lenet", (1, 28, 28), 10, seed=0), cpu, (1, 28, 28))
    assert vectorizing_pays(init_model("logreg", (30,), 2, seed=0), cpu, (30,))
    assert not vectorizing_pays(init_model("cnn", (1, 28, 28), 10, seed=0), cpu, (1, 28, 28))  # 1.66M parameters
    assert not vectorizing_pays(_NotSequential(), cpu, (1, 28, 28))  # convolutions through vmap


@pytest.mark.parametrize("layers", [
    lambda: [nn.Flatten(), nn.Linear(64, 5), nn.ReLU(), nn.Linear(5, 3)],  # an MLP on images: no conversion
    lambda: [nn.AvgPool2d(2), nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3)],  # pooling before any conv
], ids=["mlp-on-images", "pool-first"])
def test_stacked_image_models_without_a_leading_convolution(layers):
    copies, stacked = _client_models(lambda: nn.Sequential(*layers()).double())
    x = torch.randn(K, B, 1, 8, 8, dtype=torch.float64)
    assert why_not_stacked(copies[0], (1, 8, 8)) is None
    out = stacked_forward(copies[0], stacked, x)
    for i, model in enumerate(copies):
        torch.testing.assert_close(out[i], model(x[i]), atol=1e-12, rtol=0)
