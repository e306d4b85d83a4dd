"""Vectorized client updates: many clients' local SGD as one batched computation (``torch.func``).

``local_updates`` gives, for each client, what :func:`unseen.federated.client.local_update` would give
with the same generator: the same permutations in the same order, the same batches (the last batch of
an epoch may be short), the same SGD with momentum, weight decay and FedProx term. The clients'
parameters are stacked and one call per step computes every client's gradient: ``nn.Sequential`` models
of common layers run stacked (:mod:`unseen.federated.stacked`: grouped channels-last convolutions,
batched matrix products, one backward pass), other models through ``vmap(grad(...))``.
Clients with fewer samples take fewer steps: their padded batches carry zero weight and their
parameters and momentum are left untouched once their own schedule ends. Results equal the sequential
path within float tolerance (summation order differs), so this is a speed setting, never a privacy one.

Whether it is faster depends on the model: on a CPU, small dense models (logistic regression, small
MLPs), whose steps are mostly overhead, gain 3-8x, and LeNet stacked about 2x; large MLPs and wide
convolutions (32-64 channels) gain nothing or lose, because their steps are already compute-bound.
``docs/performance.md`` has the measurements.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap
from torch.nn import functional as F

from unseen.federated.client import ClientResult, LocalTraining
from unseen.federated.params import unflatten
from unseen.federated.stacked import stacked_forward, why_not_stacked

# Layers whose training-time behaviour vmap would change (random masks per call, running statistics).
_STATEFUL = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.GroupNorm, nn.LSTM, nn.GRU)


def why_not_vectorizable(model: nn.Module) -> str | None:
    """Why ``model`` cannot be trained vectorized (then clients train one by one), or None if it can."""
    for name, module in model.named_modules():
        if isinstance(module, _STATEFUL):
            return f"layer {name or 'model'} ({type(module).__name__}) has per-call randomness or running statistics"
    buffers = [name for name, _ in model.named_buffers()]
    if buffers:
        return f"the model has buffers ({', '.join(buffers[:3])}) that each client would update"
    return None


# Measured on 2 CPU cores (benchmarks/fl_simulation.py, vectorize sweep): models under about 100k
# parameters train 2-8x faster vectorized (dense ones, and stacked convolutions such as LeNet's); larger
# ones gain little or lose, and convolutions through vmap lose.
CPU_PARAMETER_LIMIT = 100_000


def why_not_vectorized(config: LocalTraining) -> str | None:
    """Training settings the vectorized path does not reproduce (then clients train one by one)."""
    if config.optimizer != "sgd":
        return f"train.optimizer = {config.optimizer!r} (vectorized training implements SGD with momentum)"
    if config.sam_rho:
        return f"train.sam_rho = {config.sam_rho:g} (vectorized training takes plain SGD steps, not SAM's)"
    if config.augment != "none":
        return f"train.augment = {config.augment!r} draws per-batch randomness the vectorized path does not replay"
    return None


def vectorizing_pays(model: nn.Module, device: torch.device, sample_shape: Sequence[int]) -> bool:
    """Whether vectorized training is expected to be faster than one client at a time here."""
    if device.type == "cuda":
        return True  # one large kernel instead of many small launches
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    if has_conv and why_not_stacked(model, sample_shape) is not None:
        return False  # vmap's channels-first grouped convolutions are slower than one client's
    return sum(p.numel() for p in model.parameters()) < CPU_PARAMETER_LIMIT


def _schedules(ns: Sequence[int], config: LocalTraining, generators: Sequence[torch.Generator]) -> list[list[torch.Tensor]]:
    """Each client's batches of local indices, drawn exactly as the sequential loop draws them."""
    out = []
    for n, gen in zip(ns, generators, strict=True):
        batches = []
        for _ in range(config.epochs):
            order = torch.randperm(n, generator=gen)
            batches += [order[s : s + config.batch_size] for s in range(0, n, config.batch_size)]
        out.append(batches)
    return out


GradientFunction = Callable[[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor],
                            tuple[dict[str, torch.Tensor], torch.Tensor]]


def _gradient_function(model: nn.Module, sample_shape: tuple[int, ...]) -> GradientFunction:
    """(stacked params, x [K, B, ...], y [K, B], weights [K, B]) -> (each client's gradient, each loss).

    A client's loss is its weighted mean cross-entropy (padding rows have weight 0). Sequential models of
    supported layers run stacked (:mod:`unseen.federated.stacked`), others through ``vmap``.
    """
    if why_not_stacked(model, sample_shape) is None:
        names = [name for name, _ in model.named_parameters()]

        def stacked(params, x, y, w):
            leaves = {n: params[n].detach().requires_grad_() for n in names}
            logits = stacked_forward(model, leaves, x)
            per_sample = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(w)
            losses = (per_sample * w).sum(1) / w.sum(1).clamp_min(1.0)
            # Client k's loss depends on client k's parameters only: the gradient of the sum is each one's.
            grads = torch.autograd.grad(losses.sum(), [leaves[n] for n in names])
            return dict(zip(names, grads, strict=True)), losses.detach()

        return stacked

    def loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        per_sample = F.cross_entropy(functional_call(model, p, (x,)), y, reduction="none")
        return (per_sample * w).sum() / w.sum().clamp_min(1.0)

    return vmap(grad_and_value(loss))


def local_updates(
    model: nn.Module,
    global_params: torch.Tensor,
    data: Sequence[tuple[torch.Tensor, torch.Tensor]],
    config: LocalTraining,
    generators: Sequence[torch.Generator],
    chunk: int = 16,
) -> list[ClientResult]:
    """Train every client of ``data`` from ``global_params``, ``chunk`` clients per batched call."""
    results: list[ClientResult] = []
    for start in range(0, len(data), chunk):
        part = slice(start, start + chunk)
        results += _train_chunk(model, global_params, data[part], config, generators[part])
    return results


def _train_chunk(
    model: nn.Module,
    global_params: torch.Tensor,
    data: Sequence[tuple[torch.Tensor, torch.Tensor]],
    config: LocalTraining,
    generators: Sequence[torch.Generator],
) -> list[ClientResult]:
    k = len(data)
    device = data[0][0].device
    names = [name for name, _ in model.named_parameters()]
    start = global_params.to(device)
    params = {n: piece.unsqueeze(0).repeat(k, *[1] * piece.dim()).contiguous()
              for n, piece in zip(names, unflatten(model, start), strict=True)}
    anchor = {n: p.clone() for n, p in params.items()} if config.prox_mu > 0 else None
    momentum = {n: torch.zeros_like(p) for n, p in params.items()} if config.momentum > 0 else None

    ns = [len(y) for _, y in data]
    schedules = _schedules(ns, config, generators)
    steps = [len(s) for s in schedules]
    # One pool of the chunk's samples plus a zero row that pads short batches (weight 0).
    offsets = torch.tensor([0, *ns]).cumsum(0)[:-1].tolist()
    x0 = data[0][0]
    pool_x = torch.cat([x for x, _ in data] + [torch.zeros((1, *x0.shape[1:]), dtype=x0.dtype, device=device)])
    pool_y = torch.cat([y for _, y in data] + [torch.zeros(1, dtype=data[0][1].dtype, device=device)])
    pad = len(pool_y) - 1

    step_grads = _gradient_function(model, tuple(x0.shape[1:]))
    total_loss = torch.zeros(k, dtype=torch.float64)
    model.train()
    for t in range(max(steps, default=0)):
        index = torch.full((k, config.batch_size), pad, dtype=torch.long)
        weight = torch.zeros((k, config.batch_size))
        for i, batches in enumerate(schedules):
            if t < len(batches):
                b = batches[t]
                index[i, : len(b)] = b + offsets[i]
                weight[i, : len(b)] = 1.0
        active = torch.tensor([t < s for s in steps], device=device)
        index, weight = index.to(device), weight.to(device)
        grads, values = step_grads(params, pool_x[index], pool_y[index], weight)
        total_loss += torch.where(active.cpu(), values.detach().double().cpu(), 0.0)
        with torch.no_grad():
            for n in names:
                g = grads[n]
                live = active.view(-1, *[1] * (g.dim() - 1))
                if anchor is not None:  # d/dw of (mu / 2) * ||w - w_global||^2
                    g = g + config.prox_mu * (params[n] - anchor[n])
                if config.weight_decay:
                    g = g + config.weight_decay * params[n]
                if momentum is not None:  # torch.optim.SGD: buf = g on the first step, then mu * buf + g
                    buf = g if t == 0 else config.momentum * momentum[n] + g
                    momentum[n] = torch.where(live, buf, momentum[n])
                    g = momentum[n]
                params[n] -= config.lr * torch.where(live, g, torch.zeros_like(g))

    flat = torch.cat([params[n].reshape(k, -1) for n in names], dim=1)
    deltas = (flat - start).cpu()
    return [ClientResult(deltas[i].clone(), ns[i], float(total_loss[i]) / max(steps[i], 1), steps[i])
            for i in range(k)]


__all__ = ["CPU_PARAMETER_LIMIT", "local_updates", "vectorizing_pays", "why_not_vectorizable", "why_not_vectorized"]
