"""Vertical federated learning with a split neural network (SplitNN; Vepakomma et al. 2018).

The parties hold different columns of the same people; party 0 (the label party) also holds the labels.
Each party runs a bottom model on its own columns and sends the output, its embedding at the cut layer,
to the label party. The label party's top model maps the concatenated embeddings to class scores,
computes the loss and sends every party the gradient of the loss with respect to its embedding; each
party backpropagates that gradient through its bottom model. Columns and labels never leave their
party; embeddings go one way and cut-layer gradients the other.

Split training computes exactly what training the joined model in one place computes (the same
function, the same gradients, so the same weights; ``tests/federated/test_vertical.py``). That is also
why it gives no formal privacy: the embeddings describe each person's columns, and the gradients a
party receives reveal the labels (``unseen.attacks.label_leakage`` measures how well).

These functions are the parties' computations; ``unseen.runtime.vertical`` moves their messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


def _mlp(sizes: Sequence[int], last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@dataclass
class SplitModel:
    """One bottom model per party (its columns -> its embedding) and the label party's top model."""

    bottoms: list[nn.Sequential]
    top: nn.Sequential

    def __call__(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The joined model: every party's embedding, concatenated, through the top model."""
        return self.top(torch.cat([bottom(x) for bottom, x in zip(self.bottoms, xs, strict=True)], dim=1))

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for m in (*self.bottoms, self.top) for p in m.parameters()]

    def train(self, mode: bool = True) -> None:
        for m in (*self.bottoms, self.top):
            m.train(mode)


def split_model(input_dims: Sequence[int], n_classes: int, *, embedding: int = 16,
                bottom_hidden: Sequence[int] = (32,), top_hidden: Sequence[int] = (32,), seed: int = 0) -> SplitModel:
    """MLP bottoms (``input_dims[p]`` -> ``bottom_hidden`` -> ``embedding``, ReLU at the cut) and an MLP top."""
    with torch.random.fork_rng(devices=[]):  # the initialisation depends on seed only
        torch.manual_seed(seed)
        bottoms = [_mlp([d, *bottom_hidden, embedding], last_activation=True) for d in input_dims]
        top = _mlp([embedding * len(input_dims), *top_hidden, n_classes], last_activation=False)
    return SplitModel(bottoms, top)


def bottom_forward(bottom: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A party's embedding of its batch (the graph is kept for :func:`bottom_step`)."""
    return bottom(x)


def top_step(top: nn.Module, optimizer: torch.optim.Optimizer, embeddings: Sequence[torch.Tensor],
             y: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
    """The label party's step: loss on the received embeddings, update of the top model, and the
    gradient of the (mean) loss with respect to each party's embedding, to send back."""
    received = [h.detach().requires_grad_() for h in embeddings]
    loss = F.cross_entropy(top(torch.cat(received, dim=1)), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach()), [h.grad for h in received]  # type: ignore[misc]


def bottom_step(optimizer: torch.optim.Optimizer, embedding: torch.Tensor, gradient: torch.Tensor) -> None:
    """A party's step: backpropagate the received cut-layer gradient through its bottom model."""
    if gradient.shape != embedding.shape or not torch.isfinite(gradient).all():
        raise ValueError(f"cut-layer gradient of shape {tuple(gradient.shape)} (finite: "
                         f"{bool(torch.isfinite(gradient).all())}) does not match the embedding {tuple(embedding.shape)}")
    optimizer.zero_grad()
    embedding.backward(gradient.to(embedding.dtype))
    optimizer.step()


@torch.no_grad()
def evaluate_split(model: SplitModel, xs: Sequence[torch.Tensor], y: torch.Tensor,
                   batch_size: int = 4096) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of the joined model."""
    model.train(False)
    loss, correct = 0.0, 0
    for s in range(0, len(y), batch_size):
        logits = model([x[s : s + batch_size] for x in xs])
        loss += float(F.cross_entropy(logits, y[s : s + batch_size], reduction="sum"))
        correct += int((logits.argmax(1) == y[s : s + batch_size]).sum())
    model.train(True)
    return loss / max(len(y), 1), correct / max(len(y), 1)


__all__ = ["SplitModel", "bottom_forward", "bottom_step", "evaluate_split", "split_model", "top_step"]
