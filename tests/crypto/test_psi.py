"""Private set intersection (openmined-psi): the exact intersection, and record alignment across parties."""

from __future__ import annotations

import numpy as np
import pytest

from unseen.crypto.psi import align, private_intersection


def test_the_client_learns_exactly_the_common_items():
    rng = np.random.default_rng(0)
    client = [f"person-{i}" for i in rng.choice(5000, 400, replace=False)]
    server = [f"person-{i}" for i in rng.choice(5000, 700, replace=False)]
    found = private_intersection(client, server)
    assert {client[i] for i in found.client_indices} == set(client) & set(server)
    assert len(found.client_indices) > 20  # the sets do overlap
    # Every item crosses encrypted both ways: dozens of bytes each, not the plain ids.
    assert found.bytes_to_server > 30 * len(client)
    assert found.bytes_to_client > 30 * (len(client) + len(server))


def test_disjoint_sets_intersect_in_nothing():
    assert len(private_intersection(["a", "b"], ["c", "d"]).client_indices) == 0


def test_align_gives_every_party_its_rows_of_the_same_people_in_the_same_order():
    rng = np.random.default_rng(1)
    people = [f"id{i}" for i in range(300)]
    parties = [list(rng.permutation([p for p in people if rng.random() < 0.8])) for _ in range(3)]
    a = align(parties)
    common = set(parties[0]) & set(parties[1]) & set(parties[2])
    assert set(a.ids) == common and len(a.ids) == len(common)
    for ids, rows in zip(parties, a.rows, strict=True):
        assert [ids[r] for r in rows] == a.ids
    assert a.bytes > 0


def test_align_refuses_repeated_ids():
    with pytest.raises(ValueError, match="party 1 lists an id more than once"):
        align([["a", "b"], ["a", "a"]])
