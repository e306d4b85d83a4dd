"""Reconstruction from aggregate answers (Dinur & Nissim 2003): "no privacy without noise".

Someone publishes exact counts over many subsets of a table ("how many people in this group have
the attribute?"). With about n log n such answers, least squares recovers nearly every row's hidden
bit. The same attack on answers protected by differential privacy (OpenDP's Laplace mechanism,
calibrated to the whole query set's sensitivity) recovers about as much as guessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

THREAT_MODEL = ("The attacker knows which rows each published count covers (e.g. from public group "
                "definitions) and solves for every row's hidden binary attribute.")


def random_subset_queries(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` random subsets of ``n`` rows (each row in each subset with probability 1/2), as a 0/1 matrix."""
    return (rng.random((m, n)) < 0.5).astype(np.int64)


def groupby_queries(frame: pd.DataFrame, groupings: list[list[str]]) -> tuple[np.ndarray, list[str]]:
    """The subsets behind published group-by tables: one 0/1 row per cell of each grouping.

    Like the seeds' sales example (sales by county, by line of business, and in total): each table
    is a set of counts over cells of public columns; overlapping tables pin rows down. Returns the
    query matrix and a label per cell.
    """
    rows, labels = [], []
    for columns in groupings:
        keys = frame[columns].astype(str).agg("|".join, axis=1).to_numpy()
        for value in sorted(set(keys)):
            rows.append((keys == value).astype(np.int64))
            labels.append(f"{'+'.join(columns)}={value}")
    return np.array(rows), labels


def exact_answers(queries: np.ndarray, secret: np.ndarray) -> np.ndarray:
    return queries @ secret.astype(np.int64)


def dp_answers(queries: np.ndarray, secret: np.ndarray, epsilon: float) -> np.ndarray:
    """The same counts released under epsilon-DP for the whole query set (OpenDP, discrete Laplace).

    One row changes every count it is in, so the L1 sensitivity of the answer vector is the largest
    number of queries any row belongs to.
    """
    import opendp.prelude as dp

    dp.enable_features("contrib")
    sensitivity = int(queries.sum(axis=0).max())
    space = dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int)
    measurement = space >> dp.m.then_laplace(scale=sensitivity / epsilon)
    spent = measurement.map(sensitivity)
    if spent > epsilon * (1 + 1e-9):
        raise ValueError(f"OpenDP reports epsilon {spent} above the requested {epsilon}")
    return np.asarray(measurement(exact_answers(queries, secret).tolist()), dtype=np.float64)


def reconstruct(queries: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """Least-squares estimate of the hidden bits, rounded (the Dinur-Nissim attack)."""
    estimate, *_ = np.linalg.lstsq(queries.astype(np.float64), answers.astype(np.float64), rcond=None)
    return (estimate > 0.5).astype(np.int64)


@dataclass(frozen=True)
class ReconstructionResult:
    rows: int
    queries: int
    recovered_fraction: float
    baseline_fraction: float  # guessing the majority value for everyone

    def to_dict(self) -> dict[str, float]:
        return {"rows": self.rows, "queries": self.queries, "recovered_fraction": self.recovered_fraction,
                "baseline_fraction": self.baseline_fraction}


def attack(secret: np.ndarray, queries: np.ndarray, answers: np.ndarray) -> ReconstructionResult:
    guess = reconstruct(queries, answers)
    majority = max(secret.mean(), 1 - secret.mean())
    return ReconstructionResult(len(secret), len(queries), float((guess == secret).mean()), float(majority))
