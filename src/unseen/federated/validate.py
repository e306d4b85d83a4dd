"""Screening of incoming client updates: malformed or implausible ones are rejected, never averaged in.

A decoded update is accepted only if it is a float32 vector of the model's size, every entry is
finite, and its L2 norm is within the configured bounds: an absolute ``max_norm`` and/or a bound
relative to the median norm of the round (``max_norm_ratio``), which catches a client sending a
1000x update without the operator having to know the scale of honest updates in advance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Rejection:
    """One update the server refused, and why (lands in results.json)."""

    round: int
    client: int
    reason: str


def check_update(update: object, expected_size: int) -> str | None:
    """Structural checks on one update; returns the reason it is malformed, or None if it is fine."""
    if isinstance(update, Exception):  # the payload did not even decode
        return str(update)
    if not isinstance(update, torch.Tensor):
        return f"payload is {type(update).__name__}, not a tensor"
    if update.dtype != torch.float32:
        return f"dtype {update.dtype}, expected torch.float32"
    if update.dim() != 1 or update.numel() != expected_size:
        return f"shape {tuple(update.shape)}, expected ({expected_size},)"
    bad = int((~torch.isfinite(update)).sum())
    if bad:
        return f"{bad} non-finite values (NaN or inf)"
    return None


def screen_updates(
    updates: dict[int, object],
    expected_size: int,
    round_index: int,
    *,
    max_norm: float | None = None,
    max_norm_ratio: float | None = None,
) -> tuple[list[int], list[Rejection]]:
    """Split client updates into accepted client ids and rejections.

    The relative bound uses the median norm of the structurally valid updates of this round and
    needs at least 3 of them (with fewer, a median says nothing about what is normal).
    """
    rejections: list[Rejection] = []
    valid: dict[int, float] = {}
    for client, update in updates.items():
        reason = check_update(update, expected_size)
        if reason is not None:
            rejections.append(Rejection(round_index, client, reason))
            continue
        valid[client] = float(torch.linalg.vector_norm(update.double()))  # type: ignore[arg-type]
    median = float(np.median(list(valid.values()))) if len(valid) >= 3 else None
    accepted = []
    for client, norm in valid.items():
        if max_norm is not None and norm > max_norm:
            rejections.append(Rejection(round_index, client, f"L2 norm {norm:.4g} exceeds max_update_norm {max_norm:.4g}"))
        elif max_norm_ratio is not None and median is not None and median > 0 and norm > max_norm_ratio * median:
            rejections.append(Rejection(
                round_index, client,
                f"L2 norm {norm:.4g} is {norm / median:.3g}x the round's median {median:.4g} "
                f"(max_norm_ratio {max_norm_ratio:g})"))
        else:
            accepted.append(client)
    return accepted, rejections
