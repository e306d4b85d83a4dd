"""Differentially private statistics on a table, on OpenDP, with a budget ledger.

A :class:`QuerySession` holds one table and an epsilon budget. Each query (count, sum, mean of an
integer column with declared bounds) is an OpenDP measurement: clamp, aggregate, discrete Laplace
noise; OpenDP's privacy map gives its epsilon (no hand-written sampler). The session composes the
queries sequentially (pure DP: epsilons add up) and refuses a query that would exceed the budget.
Every answer carries its guarantee and a confidence interval from OpenDP's accuracy function.
Privacy unit: one record (a person contributing one row).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from unseen.errors import UnseenError
from unseen.privacy.guarantee import PrivacyGuarantee

THREAT_MODEL = ("Anyone who sees the answers learns at most epsilon-bounded information about any one "
                "record; the session holder sees the table.")


class BudgetExceeded(UnseenError):
    """A query would spend more than what is left of the session's budget."""


@dataclass(frozen=True)
class DPAnswer:
    query: str
    value: float
    interval: tuple[float, float]
    confidence: float
    guarantee: PrivacyGuarantee


@dataclass
class QuerySession:
    frame: pd.DataFrame
    epsilon: float
    confidence: float = 0.95
    spent: float = 0.0
    answers: list[DPAnswer] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise UnseenError(f"the session budget epsilon must be > 0, got {self.epsilon}.")

    @property
    def remaining(self) -> float:
        return self.epsilon - self.spent

    def _charge(self, epsilon: float, query: str) -> None:
        if not epsilon > 0:
            raise UnseenError(f"{query}: epsilon must be > 0, got {epsilon}.")
        if self.spent + epsilon > self.epsilon * (1 + 1e-12):
            raise BudgetExceeded(
                f"{query} needs epsilon {epsilon:g} but only {self.remaining:.4g} of the session's {self.epsilon:g} "
                f"is left ({len(self.answers)} queries answered). Ask with a smaller epsilon or start a new budget "
                f"(which is a new privacy cost for the same people).")

    def _release(self, query: str, values: list[int], chain_fn, scale: float, epsilon: float) -> tuple[int, float]:  # type: ignore[no-untyped-def]
        import opendp.prelude as dp

        dp.enable_features("contrib")
        space = (dp.vector_domain(dp.atom_domain(T=int)), dp.symmetric_distance())
        measurement = chain_fn(dp, space) >> dp.m.then_laplace(scale=scale)
        spent = float(measurement.map(1))  # one record added or removed
        if spent > epsilon * (1 + 1e-9):
            raise UnseenError(f"{query}: OpenDP charges {spent:g}, more than the requested {epsilon:g}")
        self._charge(spent, query)
        value = int(measurement(values))
        accuracy = float(dp.discrete_laplacian_scale_to_accuracy(scale, 1 - self.confidence))
        self.spent += spent
        return value, accuracy

    def _answer(self, query: str, value: float, interval: tuple[float, float], epsilon: float) -> DPAnswer:
        guarantee = PrivacyGuarantee(mechanism="discrete Laplace (OpenDP)", unit="record", epsilon=epsilon, delta=0.0,
                                     steps=1, accountant="OpenDP privacy map; sequential composition in the session",
                                     threat_model=THREAT_MODEL, noise_source="OpenDP (its own CSPRNG)", scope=query)
        answer = DPAnswer(query, value, interval, self.confidence, guarantee)
        self.answers.append(answer)
        return answer

    def _column(self, column: str) -> list[int]:
        if column not in self.frame.columns:
            raise UnseenError(f"column {column!r} is not in the table; its columns are {list(self.frame.columns)}.")
        values = self.frame[column].dropna()
        if not pd.api.types.is_integer_dtype(values) and not np.all(np.mod(values, 1) == 0):
            raise UnseenError(f"column {column!r} is not integer-valued; DP sums here take integer columns.")
        return [int(v) for v in values]

    def count(self, epsilon: float, where: pd.Series | None = None) -> DPAnswer:
        """Number of rows (matching ``where``, a boolean mask); sensitivity 1."""
        rows = self.frame if where is None else self.frame[where]
        value, acc = self._release("count", [0] * len(rows), lambda dp, s: dp.t.make_count(*s), 1 / epsilon, epsilon)
        return self._answer("count", value, (value - acc, value + acc), epsilon)

    def sum(self, column: str, bounds: tuple[int, int], epsilon: float) -> DPAnswer:
        """Sum of ``column`` with each value clamped to ``bounds``; sensitivity max(|lo|, |hi|)."""
        lo, hi = bounds
        if lo > hi:
            raise UnseenError(f"sum of {column!r}: bounds {bounds} must be (low, high) with low <= high.")
        sensitivity = max(abs(lo), abs(hi))
        value, acc = self._release(
            f"sum({column})", self._column(column),
            lambda dp, s: dp.t.make_clamp(*s, bounds=(lo, hi)) >> dp.t.then_sum(), sensitivity / epsilon, epsilon)
        return self._answer(f"sum({column})", value, (value - acc, value + acc), epsilon)

    def mean(self, column: str, bounds: tuple[int, int], epsilon: float) -> DPAnswer:
        """Mean as a DP sum over a DP count (half the epsilon each); the interval combines both."""
        self._charge(epsilon, f"mean({column})")  # refuse before spending half of it
        total = self.sum(column, bounds, epsilon / 2)
        count = self.count(epsilon / 2, where=self.frame[column].notna())
        self.answers = self.answers[:-2]
        n_lo, n_hi = max(count.interval[0], 1.0), max(count.interval[1], 1.0)
        candidates = [s / n for s in total.interval for n in (n_lo, n_hi)]
        lo, hi = bounds
        interval = (max(lo, min(candidates)), min(hi, max(candidates)))
        value = float(np.clip(total.value / max(count.value, 1), lo, hi))
        # Both parts hold at `confidence`, so the combined interval holds at 2 * confidence - 1 or better.
        answer = self._answer(f"mean({column})", value, interval, epsilon)
        return answer

    def guarantee(self) -> PrivacyGuarantee:
        """The whole session's guarantee: the sum of the epsilons spent (pure DP composes additively)."""
        return PrivacyGuarantee(mechanism=f"{len(self.answers)} OpenDP queries, sequential composition",
                                unit="record", epsilon=self.spent, delta=0.0, steps=len(self.answers),
                                accountant="basic composition", threat_model=THREAT_MODEL)
