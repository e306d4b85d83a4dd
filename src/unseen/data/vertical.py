"""Vertical partitions: the same people, different columns per party, each party holding its own subset.

``party_columns`` maps each party's source columns (``age``, ``occupation``, ...) to the columns of the
encoded feature matrix (a categorical column becomes several one-hot columns ``occupation_Sales``, ...).
``party_records`` simulates who holds whom: each party holds each person with probability ``overlap``,
under an id, in its own row order, so the parties must align their tables (private set intersection)
before they can learn together.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from unseen.errors import DataError


def party_columns(feature_names: Sequence[str], parties: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """The encoded feature indices of each party's source columns."""
    def encoded(column: str) -> list[int]:
        return [i for i, name in enumerate(feature_names) if name == column or name.startswith(column + "_")]

    taken: dict[int, int] = {}
    out = []
    for p, columns in enumerate(parties):
        if not columns:
            raise DataError(f"vertical.parties[{p}] holds no columns: give it at least one")
        found = []
        for column in columns:
            indices = encoded(column)
            if not indices:
                sources = sorted({name.split("_")[0] for name in feature_names})
                raise DataError(f"vertical.parties[{p}]: no column {column!r} in this dataset; its columns are "
                                f"{', '.join(sources)}")
            for i in indices:
                if i in taken:
                    raise DataError(f"vertical.parties: column {column!r} is given to parties {taken[i]} and {p}; "
                                    "each column belongs to one party")
                taken[i] = p
            found += indices
        out.append(np.asarray(sorted(found), dtype=np.int64))
    return out


def party_records(n: int, parties: int, overlap: float, seed: int) -> tuple[list[np.ndarray], list[list[str]]]:
    """Which of ``n`` people each party holds (row indices into the full table, in the party's own
    shuffled order) and the ids it knows them by."""
    rng = np.random.default_rng(seed)
    rows, ids = [], []
    for _ in range(parties):
        held = np.flatnonzero(rng.random(n) < overlap) if overlap < 1 else np.arange(n)
        held = rng.permutation(held)
        rows.append(held)
        ids.append([f"person-{i:07d}" for i in held])
    return rows, ids


__all__ = ["party_columns", "party_records"]
