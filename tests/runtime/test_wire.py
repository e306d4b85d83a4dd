"""The wire format round-trips tensors exactly and refuses anything that is not a plain array."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch

from unseen.runtime import wire


def test_round_trip_is_exact():
    t = torch.randn(1000)
    payload = wire.encode(t)
    assert torch.equal(wire.decode(payload), t)
    assert 4000 <= len(payload) <= 4000 + 128  # float32 data plus a small header


def test_pickles_are_refused():
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(wire.WireError):
        wire.decode(buffer.getvalue())
    with pytest.raises(wire.WireError):
        wire.decode(pickle.dumps([1, 2, 3]))


def test_truncated_payload():
    with pytest.raises(wire.WireError, match="malformed"):
        wire.decode(wire.encode(torch.ones(100))[:-10])
