"""Split learning computes what the joined model computes, and parties refuse malformed gradients."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from unseen.federated.vertical import bottom_forward, bottom_step, split_model, top_step
from unseen.runtime.vertical import VerticalData, epoch_order, train_split


def _data(n=150, dims=(5, 3, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, d, generator=g) for d in dims]
    y = ((xs[0][:, 0] + xs[1][:, 0] - xs[2][:, 1]) > 0.3).long()  # the label needs every party's columns
    return xs, y


def test_split_training_gives_the_weights_of_training_the_joined_model():
    xs, y = _data()
    settings = dict(epochs=2, batch_size=32, lr=0.1, momentum=0.9, weight_decay=1e-3, lr_schedule="cosine", seed=3)
    split = split_model([5, 3, 2], 2, seed=7)
    history = train_split(split, VerticalData(xs, y, xs, y), **settings).history

    joined = split_model([5, 3, 2], 2, seed=7)  # the same initial weights, trained in one place
    opt = torch.optim.SGD(joined.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for epoch in (1, 2):
        for group in opt.param_groups:
            group["lr"] = 0.1 * (1.0 if epoch == 1 else 0.5)  # cosine over 2 epochs
        order = epoch_order(len(y), 3, epoch)
        for s in range(0, len(y), 32):
            idx = order[s : s + 32]
            opt.zero_grad()
            F.cross_entropy(joined([x[idx] for x in xs]), y[idx]).backward()
            opt.step()
    for a, b in zip(split.parameters(), joined.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert max((a - b).abs().max() for a, b in zip(split.parameters(), split_model([5, 3, 2], 2, seed=7).parameters(),
                                                    strict=True)) > 1e-2  # it did train
    assert len(history) == 2 and history[1]["train_loss"] < history[0]["train_loss"]


def test_bytes_are_those_of_the_embeddings_gradients_and_batch_ids():
    xs, y = _data(n=100)
    history = train_split(split_model([5, 3, 2], 2, embedding=4, seed=0), VerticalData(xs, y, xs, y),
                          epochs=1, batch_size=25, lr=0.1).history
    header = 128  # .npy header of these small arrays
    # 4 batches x 2 passive parties: a 25 x 4 float32 embedding up; ids (int64) and a gradient down.
    assert history[0]["bytes_up"] == 4 * 2 * (header + 25 * 4 * 4)
    assert history[0]["bytes_down"] == 4 * 2 * (header + 25 * 8) + 4 * 2 * (header + 25 * 4 * 4)


@pytest.mark.parametrize("bad", ["shape", "nan"])
def test_a_party_refuses_a_malformed_gradient_and_keeps_its_weights(bad):
    model = split_model([3], 2, seed=0)
    opt = torch.optim.SGD(model.bottoms[0].parameters(), lr=0.1)
    h = bottom_forward(model.bottoms[0], torch.randn(4, 3))
    before = [p.clone() for p in model.bottoms[0].parameters()]
    grad = torch.ones(4, 5) if bad == "shape" else torch.full_like(h, float("nan"))
    with pytest.raises(ValueError, match="cut-layer gradient"):
        bottom_step(opt, h, grad)
    for a, b in zip(before, model.bottoms[0].parameters(), strict=True):
        assert torch.equal(a, b)


def test_top_step_returns_the_gradient_at_each_embedding():
    model = split_model([3, 2], 2, embedding=4, seed=0)
    x = [torch.randn(6, 3), torch.randn(6, 2)]
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    hs = [bottom_forward(b, xi) for b, xi in zip(model.bottoms, x, strict=True)]
    leaves = [h.detach().requires_grad_() for h in hs]
    expected = torch.autograd.grad(F.cross_entropy(model.top(torch.cat(leaves, 1)), y), leaves)
    _, grads = top_step(model.top, torch.optim.SGD(model.top.parameters(), lr=0.1), hs, y)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e)
