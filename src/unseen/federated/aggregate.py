"""Aggregation rules: combine the accepted client updates of a round into one update.

All rules take a ``(k, d)`` tensor of updates (one row per client) and return a ``(d,)`` tensor.
``mean`` is FedAvg's sample-weighted average; the others tolerate a minority of Byzantine clients:
``median`` and ``trimmed_mean`` per coordinate (Yin et al. 2018), ``krum`` / ``multi_krum``
(Blanchard et al. 2017).
"""

from __future__ import annotations

import torch

RULES = ("mean", "median", "trimmed_mean", "krum", "multi_krum")


def weighted_mean(updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """FedAvg: average weighted by each client's number of samples."""
    w = weights.to(updates.dtype)
    return (w[:, None] * updates).sum(0) / w.sum()


def coordinate_median(updates: torch.Tensor) -> torch.Tensor:
    """Per-coordinate median (the mean of the two middle values when k is even)."""
    # torch.median would return the lower middle value for even k, biasing the update.
    ordered, _ = updates.sort(dim=0)
    k = len(updates)
    return ordered[k // 2] if k % 2 else 0.5 * (ordered[k // 2 - 1] + ordered[k // 2])


def trimmed_mean(updates: torch.Tensor, trim_fraction: float) -> torch.Tensor:
    """Per coordinate, drop the ``trim_fraction`` largest and smallest values and average the rest."""
    k = len(updates)
    cut = int(trim_fraction * k)
    if 2 * cut >= k:
        raise ValueError(f"trim_fraction={trim_fraction} removes all {k} updates; it must be < 0.5")
    ordered, _ = updates.sort(dim=0)
    return ordered[cut : k - cut].mean(0)


def krum_scores(updates: torch.Tensor, byzantine: int) -> torch.Tensor:
    """Krum score of each update: sum of squared distances to its k - f - 2 nearest neighbours."""
    k = len(updates)
    neighbours = k - byzantine - 2
    if k <= 2 * byzantine + 2:  # Blanchard et al.'s condition for Krum's guarantee
        raise ValueError(f"Krum needs more than 2f + 2 updates: got {k} with f = {byzantine}")
    dist = torch.cdist(updates.double(), updates.double()) ** 2
    dist.fill_diagonal_(float("inf"))
    return dist.topk(neighbours, dim=1, largest=False).values.sum(1)


def krum(updates: torch.Tensor, byzantine: int, select: int = 1) -> torch.Tensor:
    """Krum (``select=1``) or multi-Krum: average of the ``select`` updates with the lowest scores."""
    chosen = krum_scores(updates, byzantine).argsort()[:select]
    return updates[chosen].mean(0)


def aggregate(
    rule: str,
    updates: torch.Tensor,
    weights: torch.Tensor,
    *,
    trim_fraction: float = 0.1,
    byzantine: int = 0,
    krum_select: int | None = None,
) -> torch.Tensor:
    """Dispatch to a rule by name. ``byzantine`` is the number of attackers Krum assumes."""
    if rule == "mean":
        return weighted_mean(updates, weights)
    if rule == "median":
        return coordinate_median(updates)
    if rule == "trimmed_mean":
        return trimmed_mean(updates, trim_fraction)
    if rule == "krum":
        return krum(updates, byzantine, 1)
    if rule == "multi_krum":
        select = krum_select if krum_select is not None else max(1, len(updates) - byzantine)
        return krum(updates, byzantine, select)
    raise ValueError(f"unknown aggregation rule {rule!r}; use one of {', '.join(RULES)}")
