"""Partitioners: every sample in exactly one client; skew behaves as documented."""

from __future__ import annotations

import numpy as np
import pytest

from unseen.data import label_skew, partition
from unseen.errors import SpecError

LABELS = np.random.default_rng(0).integers(0, 10, 5000)


@pytest.mark.parametrize("method,kw", [("iid", {}), ("dirichlet", {"alpha": 0.3}), ("shards", {"shards_per_client": 2})])
def test_every_sample_exactly_once(method, kw):
    parts = partition(LABELS, 20, method, seed=1, **kw)
    assert len(parts) == 20
    joined = np.concatenate(parts)
    assert len(joined) == len(LABELS) and len(np.unique(joined)) == len(LABELS)
    assert all(len(p) > 0 for p in parts)


def test_seeded():
    a = partition(LABELS, 10, "dirichlet", seed=5, alpha=0.5)
    b = partition(LABELS, 10, "dirichlet", seed=5, alpha=0.5)
    c = partition(LABELS, 10, "dirichlet", seed=6, alpha=0.5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_skew_grows_as_alpha_shrinks():
    skews = [np.mean([label_skew(LABELS, partition(LABELS, 10, "dirichlet", seed=s, alpha=a)) for s in range(3)])
             for a in (100.0, 1.0, 0.1)]
    assert skews[0] < skews[1] < skews[2]
    assert skews[0] < 0.1 and skews[2] > 0.5
    assert label_skew(LABELS, partition(LABELS, 10, "iid", seed=0)) < 0.1


def test_shards_give_few_labels_per_client():
    parts = partition(LABELS, 50, "shards", seed=0, shards_per_client=2)
    assert max(len(np.unique(LABELS[p])) for p in parts) <= 4  # 2 shards, each spans at most 2 labels


def test_natural_keeps_silos():
    groups = np.repeat([0, 1, 2], [10, 20, 30])
    parts = partition(np.zeros(60), 3, "natural", groups=groups)
    assert [len(p) for p in parts] == [10, 20, 30]
    with pytest.raises(SpecError, match="3 natural silos"):
        partition(np.zeros(60), 4, "natural", groups=groups)
    with pytest.raises(SpecError, match="needs a dataset with silos"):
        partition(np.zeros(60), 3, "natural")


def test_errors():
    with pytest.raises(SpecError, match="alpha must be > 0"):
        partition(LABELS, 10, "dirichlet", alpha=0)
    with pytest.raises(SpecError, match="every client"):
        partition(LABELS[:5], 10, "iid")
