"""Simulated malicious clients, for testing defences: they corrupt the update they send.

Used only when a spec asks for it (``[federated.adversary]``); clients ``0 .. count-1`` misbehave.
"""

from __future__ import annotations

import torch

KINDS = ("scale", "nan", "wrong_shape", "noise")


def corrupt(update: torch.Tensor, kind: str, factor: float, generator: torch.Generator) -> torch.Tensor:
    """Return what a malicious client sends instead of ``update``.

    ``scale`` multiplies by ``factor`` (negative flips the sign, a model-poisoning classic);
    ``nan`` poisons one entry; ``wrong_shape`` drops the last entry; ``noise`` sends Gaussian noise
    with standard deviation ``factor``.
    """
    if kind == "scale":
        return update * factor
    if kind == "nan":
        out = update.clone()
        out[0] = float("nan")
        return out
    if kind == "wrong_shape":
        return update[:-1].clone()
    if kind == "noise":
        return torch.randn(update.shape, generator=generator) * factor
    raise ValueError(f"unknown adversary kind {kind!r}; use one of {', '.join(KINDS)}")
