"""Client update: local SGD (or AdamW) epochs from the global model, with an optional FedProx proximal term
and optional sharpness-aware minimization.

``local_update`` is the whole client algorithm. It uses ``model`` only as a workspace (its weights
are overwritten), draws batch order from the generator it is given and returns the weight delta.
Central training calls it once per epoch and carries the optimizer's state (momentum, Adam moments)
from one epoch to the next, as a plain training loop does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from unseen.federated.params import get_flat, set_flat


@dataclass(frozen=True)
class LocalTraining:
    """How a client trains: epochs over its data, batch size, optimizer settings, FedProx ``prox_mu``.

    ``optimizer`` is ``sgd`` (with ``momentum``) or ``adamw``; ``augment = "shift"`` translates each
    batch of images by up to 2 pixels (drawn from the client's generator); ``sam_rho > 0`` turns on
    sharpness-aware minimization with that radius.
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    prox_mu: float = 0.0
    optimizer: str = "sgd"
    augment: str = "none"
    sam_rho: float = 0.0


def cosine_factor(index: int, total: int) -> float:
    """The learning-rate multiplier of cosine decay at round or epoch ``index`` (1-based) of ``total``."""
    return 0.5 * (1 + math.cos(math.pi * (index - 1) / max(total, 1)))


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


# An optimizer's state as flat tensors, carried between calls by central training.
OptimizerState = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ClientResult:
    delta: torch.Tensor  # local weights minus the global weights it started from
    num_samples: int
    mean_loss: float
    steps: int
    optimizer_state: OptimizerState | None = None  # only when asked for (central training)


def export_optimizer_state(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> OptimizerState:
    """The optimizer's state as flat tensors: per-parameter state (``param/momentum_buffer``,
    ``param/exp_avg``, ...) concatenated in parameter order, scalar state (``scalar/step``) once."""
    states = [optimizer.state.get(p, {}) for p in params]
    out: OptimizerState = {}
    for key in sorted(set().union(*(s.keys() for s in states))):
        if not all(key in s and torch.is_tensor(s[key]) for s in states):
            continue  # state some parameters lack: nothing consistent to carry
        values = [s[key] for s in states]
        if all(v.shape == p.shape for v, p in zip(values, params, strict=True)):
            out[f"param/{key}"] = torch.cat([v.detach().reshape(-1) for v in values]).cpu()
        elif all(v.numel() == 1 for v in values):
            out[f"scalar/{key}"] = values[0].detach().clone().cpu()
    return out


def import_optimizer_state(optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
                           state: OptimizerState | None) -> None:
    """Load what :func:`export_optimizer_state` exported into a fresh optimizer over ``params``
    (nothing to load for ``None`` or ``{}``: the optimizer starts afresh)."""
    if not state:
        return
    offset = 0
    for p in params:
        own: dict[str, torch.Tensor] = {}
        for name, value in state.items():
            kind, key = name.split("/", 1)
            if kind == "param":
                own[key] = value[offset : offset + p.numel()].view_as(p).to(p.device, p.dtype).clone()
            else:
                own[key] = value.clone()  # e.g. Adam's step count, which torch keeps on the CPU
        optimizer.state[p] = own
        offset += p.numel()


def local_update(
    model: nn.Module,
    global_params: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    config: LocalTraining,
    generator: torch.Generator,
    optimizer_state: OptimizerState | None = None,
) -> ClientResult:
    """Train from ``global_params`` on ``(x, y)`` and return the update.

    With ``prox_mu > 0`` the loss gains (mu / 2) * ||w - w_global||^2 (FedProx, Li et al. 2020),
    which keeps local models near the global one on heterogeneous data. With ``sam_rho > 0`` each
    step is SAM's (Foret et al. 2021): the optimizer steps with the gradient taken at
    w + rho * g / ||g||, g the batch gradient at w. Given ``optimizer_state``
    (``{}`` at the start), the optimizer resumes from it and the result carries the new state.
    """
    set_flat(model, global_params)
    model.train()
    anchor = [p.detach().clone() for p in model.parameters()] if config.prox_mu > 0 else None
    params = list(model.parameters())
    optimizer = make_optimizer(params, config)
    import_optimizer_state(optimizer, params, optimizer_state)
    n = len(y)
    total_loss, steps = 0.0, 0
    for _ in range(config.epochs):
        # The permutation is drawn on the CPU so that CPU and CUDA runs see the same batches.
        order = torch.randperm(n, generator=generator).to(x.device)
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            xb, yb = augment(x[idx], config.augment, generator), y[idx]
            data_loss, loss = _losses(model, xb, yb, anchor, config.prox_mu)
            total_loss += float(data_loss.detach())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.sam_rho > 0:
                _sam_gradient(params, partial(_losses, model, xb, yb, anchor, config.prox_mu), config.sam_rho)
            optimizer.step()
            steps += 1
    delta = get_flat(model) - global_params.to(x.device)
    carried = export_optimizer_state(optimizer, params) if optimizer_state is not None else None
    return ClientResult(delta.cpu(), n, total_loss / max(steps, 1), steps, carried)


def _losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, anchor: list[torch.Tensor] | None,
            prox_mu: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's cross-entropy, and the loss to minimize (with FedProx's term when ``anchor`` is given)."""
    loss = F.cross_entropy(model(x), y)
    if anchor is None:
        return loss, loss
    prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True))
    return loss, loss + 0.5 * prox_mu * prox


def _sam_gradient(params: list[torch.Tensor], losses: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                  rho: float) -> None:
    """Replace the gradients in ``params`` (taken at w) by the gradient of the objective (the second of
    ``losses()``) at w + rho * g / ||g||."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).float()
    if not torch.isfinite(norm) or norm == 0:
        return  # nothing to ascend along: a plain step
    ascent = [rho * g / norm for g in grads]
    with torch.no_grad():
        for p, e in zip(params, ascent, strict=True):
            p.add_(e)
    for p in params:
        p.grad = None
    losses()[1].backward()
    with torch.no_grad():
        for p, e in zip(params, ascent, strict=True):
            p.sub_(e)


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
