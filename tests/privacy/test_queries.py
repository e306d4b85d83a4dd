"""DP queries on OpenDP: intervals that cover, a budget that refuses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from unseen.errors import UnseenError
from unseen.privacy.queries import BudgetExceeded, QuerySession

FRAME = pd.DataFrame({"age": np.random.default_rng(0).integers(18, 90, 500), "score": np.linspace(0, 1, 500)})


@pytest.mark.parametrize("query", ["count", "sum"])
def test_intervals_cover_the_truth_as_often_as_stated(query):
    truth = len(FRAME) if query == "count" else int(FRAME.age.sum())
    hits = 0
    runs = 300
    for _ in range(runs):
        session = QuerySession(FRAME, epsilon=1.0)
        answer = session.count(0.5) if query == "count" else session.sum("age", (0, 100), 0.5)
        hits += answer.interval[0] <= truth <= answer.interval[1]
    coverage = hits / runs
    assert 0.91 <= coverage <= 1.0, coverage  # stated 95%; 300 draws give about +-2.5%


def test_budget_refuses_the_query_that_would_exceed_it():
    session = QuerySession(FRAME, epsilon=1.0)
    session.count(0.6)
    with pytest.raises(BudgetExceeded, match="only 0.4 of the session's 1 is left"):
        session.sum("age", (0, 100), 0.5)
    assert session.spent == pytest.approx(0.6) and len(session.answers) == 1  # the refused query cost nothing
    session.mean("age", (0, 100), 0.4)
    assert session.spent == pytest.approx(1.0)
    g = session.guarantee()
    assert g.epsilon == pytest.approx(1.0) and g.delta == 0.0 and g.unit == "record" and g.steps == 2


def test_answers_carry_their_guarantee_and_mean_intervals_cover():
    session = QuerySession(FRAME, epsilon=4.0)
    mean = session.mean("age", (0, 100), 2.0)
    assert mean.guarantee.epsilon == 2.0 and "OpenDP" in mean.guarantee.mechanism
    assert 0 <= mean.interval[0] <= mean.value <= mean.interval[1] <= 100
    # Covering the truth is a probability, not a certainty: sum and count intervals at 95% each give
    # the mean's interval at least 90%. (A single-draw check of it failed 1 run in ~20.)
    truth = FRAME.age.mean()
    runs = 200
    hits = sum(lo <= truth <= hi for lo, hi in
               (QuerySession(FRAME, epsilon=1.0).mean("age", (0, 100), 0.5).interval for _ in range(runs)))
    assert hits / runs >= 0.85, hits / runs


def test_bad_queries_are_clear_errors():
    session = QuerySession(FRAME, epsilon=1.0)
    with pytest.raises(UnseenError, match="integer"):
        session.sum("score", (0, 1), 0.1)
    with pytest.raises(UnseenError, match="not in the table"):
        session.sum("height", (0, 1), 0.1)
    with pytest.raises(UnseenError, match="must be > 0"):
        QuerySession(FRAME, epsilon=0)
