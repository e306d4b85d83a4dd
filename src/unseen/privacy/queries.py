"""Differentially private statistics on a table, on OpenDP, with a budget ledger.

A :class:`QuerySession` holds one table and an epsilon budget. Each query (count, sum, mean of an
integer column with declared bounds; histograms and group-by counts over declared categories;
quantiles over declared candidates) is an OpenDP measurement: clamp, aggregate, discrete Laplace
noise (or report-noisy-max for quantiles); OpenDP's privacy map gives its epsilon (no hand-written sampler). The session composes the
queries sequentially (pure DP: epsilons add up) and refuses a query that would exceed the budget.
Every answer carries its guarantee and a confidence interval from OpenDP's accuracy function.
Privacy unit: one record, or with ``person`` and ``max_rows`` one person whose rows are capped at
``max_rows`` (every privacy map is then taken at that distance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from unseen.errors import UnseenError
from unseen.privacy.accounting import GaussianLedger
from unseen.privacy.guarantee import PrivacyGuarantee

THREAT_MODEL = ("Anyone who sees the answers learns at most epsilon-bounded information about any one "
                "record; the session holder sees the table.")


class BudgetExceeded(UnseenError):
    """A query would spend more than what is left of the session's budget."""


@dataclass(frozen=True)
class DPAnswer:
    query: str
    value: Any  # a number, or {category: count} for a histogram
    interval: tuple[float, float]
    confidence: float
    guarantee: PrivacyGuarantee


@dataclass
class QuerySession:
    """Queries on one table under one budget.

    ``prior`` is a guarantee already spent on the same people, e.g. a model trained on this table with
    DP: it is charged up front, so statistics and the model share the budget (basic composition:
    epsilons add, the prior's delta stays).
    """

    frame: pd.DataFrame
    epsilon: float
    confidence: float = 0.95
    answers: list[DPAnswer] = field(default_factory=list)
    prior: PrivacyGuarantee | None = None
    person: str | None = None  # column identifying a person who may own several rows
    max_rows: int = 1  # rows kept per person (the contribution limit); the guarantee is per person
    # The same ledger type that accounts training: every answer is recorded as a pure-DP release.
    ledger: GaussianLedger = field(default_factory=GaussianLedger)

    def __post_init__(self) -> None:
        if self.person is not None:
            if self.person not in self.frame.columns:
                raise UnseenError(f"person column {self.person!r} is not in the table; its columns are "
                                  f"{list(self.frame.columns)}.")
            if self.max_rows < 1:
                raise UnseenError(f"max_rows must be >= 1, got {self.max_rows}.")
            # Keep at most max_rows rows per person, chosen at random (never by value): one person then
            # changes the table by at most max_rows rows, and every privacy map is taken at that distance.
            shuffled = self.frame.sample(frac=1.0, random_state=np.random.default_rng(0).integers(2**31))
            self.frame = shuffled.groupby(self.person, sort=False).head(self.max_rows)
        elif self.max_rows != 1:
            raise UnseenError("max_rows needs person = the column that identifies a person")
        if not self.epsilon > 0:
            raise UnseenError(f"the session budget epsilon must be > 0, got {self.epsilon}.")
        if self.prior is not None:
            if not self.prior.is_formal:
                raise UnseenError("the prior release makes no formal guarantee (no DP): it may already have given "
                                  "away everything, so no budget can include it. Train with DP first.")
            if self.prior.epsilon > self.epsilon:  # type: ignore[operator]
                raise BudgetExceeded(f"the prior release already spent epsilon {self.prior.epsilon:.4g}, more than "
                                     f"this budget of {self.epsilon:g}: nothing is left for queries.")
            self.ledger.record_pure(float(self.prior.epsilon))  # type: ignore[arg-type]

    @property
    def spent(self) -> float:
        """Epsilon spent so far, the prior release included (from the ledger)."""
        return self.ledger.epsilon(self.prior.delta if self.prior is not None else 1e-12)

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

    @property
    def unit(self) -> str:
        return "record" if self.person is None else "user"

    def _release(self, query: str, values: list, chain_fn, sensitivity: float, epsilon: float,  # type: ignore[no-untyped-def]
                 kind: type = int) -> tuple[Any, float]:
        """Run an OpenDP aggregate-then-Laplace chain over values of type ``kind`` (int, float or str);
        its privacy map, at the contribution limit, is the charge. Float aggregates get the continuous
        Laplace, everything else (counts, integer sums) the discrete one."""
        import opendp.prelude as dp

        dp.enable_features("contrib")
        atom = dp.atom_domain(T=float, nan=False) if kind is float else dp.atom_domain(T=kind)
        space = (dp.vector_domain(atom), dp.symmetric_distance())

        def build(scale: float):  # type: ignore[no-untyped-def]
            return chain_fn(dp, space) >> dp.m.then_laplace(scale=scale)

        scale = sensitivity * self.max_rows / epsilon
        measurement = build(scale)
        spent = float(measurement.map(self.max_rows))  # one person (up to max_rows rows) added or removed
        if spent > epsilon:  # float sums carry OpenDP's rounding slack: widen the noise until it fits
            scale *= spent / epsilon * (1 + 1e-9)
            measurement = build(scale)
            spent = float(measurement.map(self.max_rows))
        self._charge(spent, query)
        value = measurement(values)
        alpha = 1 - self.confidence
        accuracy = float(dp.laplacian_scale_to_accuracy(scale, alpha) if kind is float
                         else dp.discrete_laplacian_scale_to_accuracy(scale, alpha))
        self.ledger.record_pure(spent)
        if isinstance(value, list):  # a vector of counts (histogram)
            return value, accuracy
        return (float(value) if kind is float else int(value)), accuracy

    def _answer(self, query: str, value: Any, interval: tuple[float, float], epsilon: float) -> DPAnswer:
        guarantee = PrivacyGuarantee(mechanism="discrete Laplace (OpenDP)", unit=self.unit, epsilon=epsilon, delta=0.0,  # type: ignore[arg-type]
                                     steps=1, accountant="OpenDP privacy map; sequential composition in the session",
                                     threat_model=THREAT_MODEL, noise_source="OpenDP (its own CSPRNG)", scope=query)
        answer = DPAnswer(query, value, interval, self.confidence, guarantee)
        self.answers.append(answer)
        return answer

    def _column(self, column: str) -> tuple[list, type]:
        """The column's non-missing values, as ints if they all are whole numbers, else as floats."""
        if column not in self.frame.columns:
            raise UnseenError(f"column {column!r} is not in the table; its columns are {list(self.frame.columns)}.")
        values = self.frame[column].dropna()
        if not pd.api.types.is_numeric_dtype(values):
            raise UnseenError(f"column {column!r} is not numeric; sums and means take numeric columns.")
        if pd.api.types.is_integer_dtype(values) or np.all(np.mod(values, 1) == 0):
            return [int(v) for v in values], int
        return [float(v) for v in values if np.isfinite(v)], float

    def count(self, epsilon: float, where: pd.Series | None = None) -> DPAnswer:
        """Number of rows (matching ``where``, a boolean mask); sensitivity 1."""
        rows = self.frame if where is None else self.frame[where]
        value, acc = self._release("count", [0] * len(rows), lambda dp, s: dp.t.make_count(*s), 1, epsilon)
        return self._answer("count", value, (value - acc, value + acc), epsilon)

    def sum(self, column: str, bounds: tuple[float, float], epsilon: float) -> DPAnswer:
        """Sum of ``column`` with each value clamped to ``bounds``; sensitivity max(|lo|, |hi|) per row.

        Integer columns use the discrete Laplace; float columns the Laplace with OpenDP's accounting of
        floating-point rounding (its charge can exceed the nominal epsilon by a hair, so the noise is
        widened until it fits)."""
        values, kind = self._column(column)
        lo, hi = (int(bounds[0]), int(bounds[1])) if kind is int else (float(bounds[0]), float(bounds[1]))
        if kind is int and (lo != bounds[0] or hi != bounds[1]):
            values, kind, lo, hi = [float(v) for v in values], float, float(bounds[0]), float(bounds[1])
        if lo > hi:
            raise UnseenError(f"sum of {column!r}: bounds {bounds} must be (low, high) with low <= high.")
        sensitivity = max(abs(lo), abs(hi))
        value, acc = self._release(
            f"sum({column})", values,
            lambda dp, s: dp.t.make_clamp(*s, bounds=(lo, hi)) >> dp.t.then_sum(), sensitivity, epsilon, kind)
        return self._answer(f"sum({column})", value, (value - acc, value + acc), epsilon)

    def mean(self, column: str, bounds: tuple[float, float], epsilon: float) -> DPAnswer:
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

    def variance(self, column: str, bounds: tuple[float, float], epsilon: float) -> DPAnswer:
        """Variance as E[x^2] - E[x]^2 from three DP releases (sum, sum of squares, count; a third of the
        epsilon each). The interval combines the three intervals' extremes, so it holds at
        ``3 * confidence - 2`` or better."""
        query = f"variance({column})"
        self._charge(epsilon, query)
        values, _ = self._column(column)
        lo, hi = float(bounds[0]), float(bounds[1])
        if lo > hi:
            raise UnseenError(f"{query}: bounds {bounds} must be (low, high) with low <= high.")
        clipped = np.clip(np.asarray(values, dtype=np.float64), lo, hi)
        sq_hi = max(lo * lo, hi * hi)
        sq_lo = 0.0 if lo <= 0 <= hi else min(lo * lo, hi * hi)
        part = epsilon / 3
        s, s_acc = self._release(f"sum({column})", clipped.tolist(),
                                 lambda dp, sp: dp.t.make_clamp(*sp, bounds=(lo, hi)) >> dp.t.then_sum(),
                                 max(abs(lo), abs(hi)), part, float)
        q, q_acc = self._release(f"sum({column}^2)", (clipped**2).tolist(),
                                 lambda dp, sp: dp.t.make_clamp(*sp, bounds=(sq_lo, sq_hi)) >> dp.t.then_sum(),
                                 sq_hi, part, float)
        n, n_acc = self._release("count", [0] * len(values), lambda dp, sp: dp.t.make_count(*sp), 1, part)
        cap = ((hi - lo) / 2) ** 2  # the largest variance values in [lo, hi] can have

        def var(s_: float, q_: float, n_: float) -> float:
            n_ = max(n_, 1.0)
            return float(np.clip(q_ / n_ - (s_ / n_) ** 2, 0.0, cap))

        corners = [var(s + a, q + b, n + c) for a in (-s_acc, s_acc) for b in (-q_acc, q_acc) for c in (-n_acc, n_acc)]
        return self._answer(query, var(s, q, n), (min(corners), max(corners)), epsilon)

    def histogram(self, columns: str | list[str], categories: list, epsilon: float) -> DPAnswer:
        """Counts per category (group-by) of one column or of a combination of columns, with the
        categories declared up front (declaring them from the data would leak which ones occur).

        Each record falls in one bin (or the extra "other" bin), so one record changes the vector by 1
        in L1: parallel composition, one epsilon for all bins. ``value`` is the dict of noisy counts.
        """
        cols = [columns] if isinstance(columns, str) else list(columns)
        for c in cols:
            if c not in self.frame.columns:
                raise UnseenError(f"column {c!r} is not in the table; its columns are {list(self.frame.columns)}.")
        query = f"histogram({', '.join(cols)})"
        keys = ["|".join(map(str, k)) if isinstance(k, tuple | list) else str(k) for k in categories]
        if len(set(keys)) != len(keys):
            raise UnseenError(f"{query}: categories must be distinct")
        rows = self.frame[cols].astype(str).agg("|".join, axis=1).tolist()
        noisy, acc = self._release(
            query, rows, lambda dp, s: dp.t.make_count_by_categories(*s, categories=keys, MO=dp.L1Distance[int]),
            1, epsilon, str)
        counts = {k: int(v) for k, v in zip([*keys, "(other)"], noisy, strict=True)}
        return self._answer(query, counts, (-acc, acc), epsilon)  # the interval is the error of each bin

    def quantile(self, column: str, q: float, candidates: list[float], epsilon: float) -> DPAnswer:
        """The ``q``-quantile of ``column`` among declared ``candidates`` (OpenDP's quantile score with
        report-noisy-max). The interval is the candidates around the answer, not a probability statement."""
        import opendp.prelude as dp

        if column not in self.frame.columns:
            raise UnseenError(f"column {column!r} is not in the table; its columns are {list(self.frame.columns)}.")
        if not 0 < q < 1 or len(candidates) < 2:
            raise UnseenError(f"quantile({column}): q must be in (0, 1) and there must be at least 2 candidates")
        query = f"quantile({column}, {q:g})"
        dp.enable_features("contrib")
        values = [float(v) for v in self.frame[column].dropna()]
        cands = sorted(float(c) for c in candidates)

        def build(scale: float):  # type: ignore[no-untyped-def]
            return dp.t.make_quantile_score_candidates(
                dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.symmetric_distance(), candidates=cands,
                alpha=q) >> dp.m.then_noisy_max(dp.max_divergence(), scale=scale, negate=True)

        scale = float(build(1.0).map(self.max_rows)) / epsilon  # the loss is proportional to 1 / scale
        measurement = build(scale)
        spent = float(measurement.map(self.max_rows))
        self._charge(spent, query)
        index = int(measurement(values))
        self.ledger.record_pure(spent)
        lo, hi = cands[max(index - 1, 0)], cands[min(index + 1, len(cands) - 1)]
        return self._answer(query, cands[index], (lo, hi), spent)

    def guarantee(self) -> PrivacyGuarantee:
        """The whole session's guarantee: the sum of the epsilons spent (pure DP composes additively),
        including the prior release if there is one."""
        mechanism = f"{len(self.answers)} OpenDP queries, sequential composition"
        if self.prior is not None:
            mechanism += f", after {self.prior.mechanism} (epsilon {self.prior.epsilon:.4g})"
        return PrivacyGuarantee(mechanism=mechanism, unit=self.unit, epsilon=self.spent,  # type: ignore[arg-type]
                                delta=self.prior.delta if self.prior is not None else 0.0,
                                steps=len(self.answers), accountant="basic composition", threat_model=THREAT_MODEL)
