"""Vertical partitions: each party's columns of the encoded table, and who holds whom."""

from __future__ import annotations

import numpy as np
import pytest

from unseen.data.vertical import party_columns, party_records
from unseen.errors import DataError

NAMES = ["age", "hours-per-week", "workclass_Private", "workclass_State-gov", "sex_Female", "sex_Male"]


def test_a_categorical_column_brings_all_its_one_hot_columns():
    cols = party_columns(NAMES, [["age", "sex"], ["workclass", "hours-per-week"]])
    assert [list(c) for c in cols] == [[0, 4, 5], [1, 2, 3]]


@pytest.mark.parametrize("parties, message", [
    ([["age"], ["income"]], "no column 'income'"),
    ([["age", "sex"], ["sex"]], "given to parties 0 and 1"),
    ([["age"], []], "holds no columns"),
])
def test_bad_parties_are_refused_with_the_reason(parties, message):
    with pytest.raises(DataError, match=message):
        party_columns(NAMES, parties)


def test_each_party_holds_its_own_subset_in_its_own_order():
    rows, ids = party_records(1000, 3, 0.8, seed=0)
    for r, i in zip(rows, ids, strict=True):
        assert 700 < len(r) < 900 and len(set(r.tolist())) == len(r)
        assert i == [f"person-{k:07d}" for k in r]
    assert not np.array_equal(np.sort(rows[0]), np.sort(rows[1]))  # independent draws
    assert not np.array_equal(rows[0], np.sort(rows[0]))  # shuffled: the parties must align
    full, _ = party_records(50, 2, 1.0, seed=0)
    assert all(sorted(r.tolist()) == list(range(50)) for r in full)
