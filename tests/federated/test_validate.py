"""Malformed or implausible updates are rejected with a reason, never averaged in."""

from __future__ import annotations

import torch

from unseen.federated import screen_updates
from unseen.runtime import wire


def _honest(n: int, size: int = 100) -> dict[int, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {i: torch.randn(size, generator=g) for i in range(n)}


def test_nan_wrong_shape_and_huge_norm_are_rejected():
    updates: dict[int, object] = _honest(7)
    updates[7] = torch.full((100,), float("nan"))
    updates[8] = torch.zeros(99)
    updates[9] = _honest(1)[0] * 1000
    accepted, rejected = screen_updates(updates, 100, round_index=3, max_norm_ratio=100)
    assert accepted == list(range(7))
    reasons = {r.client: r.reason for r in rejected}
    assert set(reasons) == {7, 8, 9}
    assert "non-finite" in reasons[7] and "shape (99,)" in reasons[8] and "median" in reasons[9]
    assert all(r.round == 3 for r in rejected)


def test_absolute_norm_bound_and_dtype():
    updates: dict[int, object] = {0: torch.ones(4), 1: torch.ones(4) * 10, 2: torch.ones(4, dtype=torch.float64)}
    accepted, rejected = screen_updates(updates, 4, 1, max_norm=5.0)
    assert accepted == [0]
    assert {r.client for r in rejected} == {1, 2}


def test_undecodable_payload_is_rejected():
    try:
        bad: object = wire.decode(b"\x93NUMPY garbage")
    except wire.WireError as exc:
        bad = exc
    accepted, rejected = screen_updates({0: bad, 1: torch.ones(3)}, 3, 1)
    assert accepted == [1] and "malformed payload" in rejected[0].reason


def test_honest_round_is_untouched():
    accepted, rejected = screen_updates(_honest(10), 100, 1, max_norm_ratio=100)
    assert accepted == list(range(10)) and rejected == []
