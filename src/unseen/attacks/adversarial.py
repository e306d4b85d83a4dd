"""Adversarial examples: FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018) under an L-inf budget.

Budgets are in pixel units (images in [0, 1]); for inputs standardized as ``(x - mean) / std`` pass
``mean`` and ``std`` and the attack works in pixel space, clamping to valid images.

Threat model: the attacker has the model's weights (white box) and perturbs a test input within an
L-inf ball of radius ``eps`` to change the prediction. Robustness, not privacy: it shows how brittle
a model is, which matters when its outputs drive decisions.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from unseen.federated.params import set_flat

THREAT_MODEL = ("White box: the attacker knows the weights and changes each test input by at most eps per "
                "pixel (L-inf) to flip the prediction.")


def _loss_grad(model: nn.Module, x_pixels: torch.Tensor, y: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    x_pixels = x_pixels.detach().requires_grad_(True)
    loss = F.cross_entropy(model((x_pixels - mean) / std), y)
    (grad,) = torch.autograd.grad(loss, x_pixels)
    return grad


def pgd(model: nn.Module, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: float, *,
        steps: int = 40, step_size: float | None = None, random_start: bool = True, mean: float = 0.0,
        std: float = 1.0, bounds: tuple[float, float] | None = (0.0, 1.0),
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Adversarial inputs (in the model's input scale) within ``eps`` of ``x`` in pixel L-inf distance.

    ``steps=1`` with ``random_start=False`` and ``step_size=eps`` is FGSM. ``bounds`` clamps pixels to
    valid values (None for features with no natural range).
    """
    lo, hi = bounds if bounds is not None else (-torch.inf, torch.inf)
    set_flat(model, params)
    model.eval()
    step_size = step_size if step_size is not None else 2.5 * eps / steps
    pixels = x * std + mean
    adv = pixels.clone()
    if random_start:
        noise = torch.rand(pixels.shape, generator=generator).to(x.device) * 2 - 1
        adv = (adv + eps * noise).clamp(lo, hi)
    for _ in range(steps):
        adv = adv + step_size * _loss_grad(model, adv, y, mean, std).sign()
        adv = torch.min(torch.max(adv, pixels - eps), pixels + eps).clamp(lo, hi)
    return ((adv - mean) / std).detach()


def fgsm(model: nn.Module, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: float, *,
         mean: float = 0.0, std: float = 1.0, bounds: tuple[float, float] | None = (0.0, 1.0)) -> torch.Tensor:
    """One signed-gradient step of size ``eps``."""
    return pgd(model, params, x, y, eps, steps=1, step_size=eps, random_start=False, mean=mean, std=std,
               bounds=bounds)


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(1) == y).float().mean())


def robustness_curve(model: nn.Module, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                     budgets: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3), *, attack: str = "pgd",
                     steps: int = 40, mean: float = 0.0, std: float = 1.0, batch_size: int = 500,
                     bounds: tuple[float, float] | None = (0.0, 1.0), seed: int = 0) -> list[dict[str, float]]:
    """Accuracy under attack at each L-inf budget: the robustness curve for the report."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for eps in budgets:
        correct = 0.0
        for start in range(0, len(y), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            if eps > 0:
                xb = (fgsm(model, params, xb, yb, eps, mean=mean, std=std, bounds=bounds) if attack == "fgsm" else
                      pgd(model, params, xb, yb, eps, steps=steps, mean=mean, std=std, bounds=bounds,
                          generator=gen))
            set_flat(model, params)
            model.eval()
            correct += _accuracy(model, xb, yb) * len(yb)
        out.append({"eps": eps, "accuracy": correct / len(y)})
    return out


__all__ = ["THREAT_MODEL", "fgsm", "pgd", "robustness_curve"]
