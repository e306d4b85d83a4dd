"""Server optimizers: apply the aggregated update to the global model (Reddi et al. 2021).

The aggregated client delta is treated as a pseudo-gradient step. ``sgd`` with lr 1 is plain
FedAvg, and with ``momentum`` FedAvgM (Hsu et al. 2019); ``adam``, ``yogi`` and ``adagrad`` give
FedAdam, FedYogi and FedAdagrad. Under DP-FedAvg the server step only post-processes the noised
aggregate, so none of them changes the privacy guarantee. State is a dict of
tensors so it can be checkpointed and restored exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

OPTIMIZERS = ("sgd", "adam", "yogi", "adagrad")
DEFAULT_LR = {"sgd": 1.0, "adam": 0.01, "yogi": 0.01, "adagrad": 0.01}


@dataclass(frozen=True)
class ServerOptimizer:
    kind: str = "sgd"
    lr: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3  # adaptivity: larger tau, closer to SGD
    momentum: float = 0.0  # sgd only: heavy-ball momentum (FedAvgM)

    def __post_init__(self) -> None:
        if self.kind not in OPTIMIZERS:
            raise ValueError(f"unknown server optimizer {self.kind!r}; use one of {', '.join(OPTIMIZERS)}")
        if self.momentum and self.kind != "sgd":
            raise ValueError(f"server momentum applies to sgd (FedAvgM); {self.kind} has its own first moment (beta1)")


def init_state(opt: ServerOptimizer, params: torch.Tensor) -> dict[str, torch.Tensor]:
    if opt.kind == "sgd":
        return {"m": torch.zeros_like(params)} if opt.momentum else {}
    # Reddi et al. initialise v to tau^2 so the first steps are not huge.
    return {"m": torch.zeros_like(params), "v": torch.full_like(params, opt.tau**2)}


def server_step(
    opt: ServerOptimizer, params: torch.Tensor, delta: torch.Tensor, state: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Return new global parameters and optimizer state (inputs are not modified)."""
    if opt.kind == "sgd":
        if not opt.momentum:
            return params + opt.lr * delta, state
        m = opt.momentum * state["m"] + delta  # torch.optim.SGD's buffer, with the delta as minus the gradient
        return params + opt.lr * m, {"m": m}
    m = opt.beta1 * state["m"] + (1 - opt.beta1) * delta
    d2 = delta * delta
    v = state["v"]
    if opt.kind == "adam":
        v = opt.beta2 * v + (1 - opt.beta2) * d2
    elif opt.kind == "yogi":
        v = v - (1 - opt.beta2) * d2 * torch.sign(v - d2)
    else:  # adagrad
        v = v + d2
    return params + opt.lr * m / (v.sqrt() + opt.tau), {"m": m, "v": v}
