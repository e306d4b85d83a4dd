"""Client update: local SGD (or AdamW) epochs from the global model, with an optional FedProx proximal term.

``local_update`` is the whole client algorithm. It uses ``model`` only as a workspace (its weights
are overwritten), draws batch order from the generator it is given and returns the weight delta.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from unseen.federated.params import get_flat, set_flat


@dataclass(frozen=True)
class LocalTraining:
    """How a client trains: epochs over its data, batch size, optimizer settings, FedProx ``prox_mu``.

    ``optimizer`` is ``sgd`` (with ``momentum``) or ``adamw``; ``augment = "shift"`` translates each
    batch of images by up to 2 pixels (drawn from the client's generator).
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    prox_mu: float = 0.0
    optimizer: str = "sgd"
    augment: str = "none"


def make_optimizer(params: Iterable[torch.Tensor], config: LocalTraining) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def augment(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """A batch as the client trains on it: ``shift`` rolls images by up to 2 pixels each way."""
    if kind == "shift" and x.dim() == 4:
        dy, dx = torch.randint(-2, 3, (2,), generator=generator).tolist()
        return torch.roll(x, (dy, dx), (2, 3))
    return x


@dataclass(frozen=True)
class ClientResult:
    delta: torch.Tensor  # local weights minus the global weights it started from
    num_samples: int
    mean_loss: float
    steps: int


def local_update(
    model: nn.Module,
    global_params: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    config: LocalTraining,
    generator: torch.Generator,
) -> ClientResult:
    """Train from ``global_params`` on ``(x, y)`` and return the update.

    With ``prox_mu > 0`` the loss gains (mu / 2) * ||w - w_global||^2 (FedProx, Li et al. 2020),
    which keeps local models near the global one on heterogeneous data.
    """
    set_flat(model, global_params)
    model.train()
    anchor = [p.detach().clone() for p in model.parameters()] if config.prox_mu > 0 else None
    optimizer = make_optimizer(model.parameters(), config)
    n = len(y)
    total_loss, steps = 0.0, 0
    for _ in range(config.epochs):
        # The permutation is drawn on the CPU so that CPU and CUDA runs see the same batches.
        order = torch.randperm(n, generator=generator).to(x.device)
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            loss = F.cross_entropy(model(augment(x[idx], config.augment, generator)), y[idx])
            total_loss += float(loss.detach())
            if anchor is not None:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True))
                loss = loss + 0.5 * config.prox_mu * prox
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
    delta = get_flat(model) - global_params.to(x.device)
    return ClientResult(delta.cpu(), n, total_loss / max(steps, 1), steps)


@torch.no_grad()
def evaluate(
    model: nn.Module, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``params`` on ``(x, y)``."""
    set_flat(model, params)
    model.eval()
    if len(y) == 0:
        return float("nan"), float("nan")
    loss, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        loss += float(F.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(1) == target).sum())
    return loss / len(y), correct / len(y)
