"""DP queries on OpenDP: intervals that cover, a budget that refuses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import needs
from unseen.errors import UnseenError
from unseen.privacy import epsilon_for
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
    # Stated 95%. Noise comes from OpenDP's CSPRNG and cannot be seeded, so thresholds are binomial
    # tails: at a true 95%, P(coverage < 0.88 in 300 draws) = 5e-7 (0.91 failed about 1 run in 800).
    assert 0.88 <= coverage <= 1.0, coverage


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
    assert hits / runs >= 0.8, hits / runs  # at a true 90%, P(< 0.8 in 200 draws) = 7e-6


def test_bad_queries_are_clear_errors():
    session = QuerySession(FRAME.assign(name="x"), epsilon=1.0)
    with pytest.raises(UnseenError, match="not numeric"):
        session.sum("name", (0, 1), 0.1)
    with pytest.raises(UnseenError, match="not in the table"):
        session.sum("height", (0, 1), 0.1)
    with pytest.raises(UnseenError, match="must be > 0"):
        QuerySession(FRAME, epsilon=0)


def test_histogram_bins_cover_the_truth_at_the_stated_rate_and_cost_one_epsilon():
    import pandas as pd

    from unseen.privacy.queries import QuerySession

    frame = pd.DataFrame({"sex": ["F"] * 300 + ["M"] * 700, "y": [0, 1] * 500})
    hits, trials = 0, 100
    for _ in range(trials):
        session = QuerySession(frame, 1.0)
        a = session.histogram(["sex", "y"], [("F", 0), ("F", 1), ("M", 0), ("M", 1)], 1.0)
        assert session.spent == pytest.approx(1.0)  # parallel composition: one epsilon for all bins
        truth = {"F|0": 150, "F|1": 150, "M|0": 350, "M|1": 350, "(other)": 0}
        hits += sum(abs(a.value[k] - v) <= a.interval[1] for k, v in truth.items())
    assert hits / (5 * trials) >= 0.9  # stated: 95% per bin


def test_quantile_picks_the_right_candidate_when_the_noise_is_small():
    import pandas as pd

    from unseen.privacy.queries import QuerySession

    frame = pd.DataFrame({"hours": [20] * 100 + [40] * 500 + [60] * 100})
    a = QuerySession(frame, 100.0).quantile("hours", 0.5, [10, 20, 30, 40, 50, 60], 50.0)
    assert a.value == 40 and a.interval == (30, 50) and a.guarantee.epsilon == pytest.approx(50.0)


def test_unseen_query_answers_a_spec_and_refuses_what_exceeds_the_budget(tmp_path):
    import json

    from tests.test_cli import unseen

    (tmp_path / "t.csv").write_text("age,sex\n" + "".join(f"{20 + i % 50},{'FM'[i % 2]}\n" for i in range(2000)))
    (tmp_path / "q.toml").write_text(
        'epsilon = 1.0\n[table]\npath = "t.csv"\n'
        '[[query]]\nkind = "mean"\ncolumn = "age"\nbounds = [0, 100]\nepsilon = 0.5\n'
        '[[query]]\nkind = "histogram"\ncolumns = ["sex"]\ncategories = ["F", "M"]\nepsilon = 0.5\n'
        '[[query]]\nkind = "count"\nepsilon = 0.5\n')
    result = json.loads(unseen("query", str(tmp_path / "q.toml"), "--format", "json", "--output",
                               str(tmp_path / "out")).stdout)
    assert json.loads((tmp_path / "out" / "queries.json").read_text())["spent"] == result["spent"]
    page = (tmp_path / "out" / "queries.html").read_text()
    assert 'id="answers"' in page and "refused" in page and "mean(age)" in page
    mean, hist, refused = result["answers"]
    assert abs(mean["value"] - 44.5) < 2 and set(hist["value"]) == {"F", "M", "(other)"}
    assert "needs epsilon 0.5 but only" in refused["refused"] and result["spent"] == pytest.approx(1.0)
    bad = tmp_path / "bad.toml"
    bad.write_text('epsilon = 1.0\n[table]\npath = "t.csv"\n[[query]]\nkind = "median"\nepsilon = 1\n')
    proc = unseen("query", str(bad), check=False)
    assert proc.returncode == 2 and "query.0" in proc.stdout + proc.stderr


@needs("adult")
def test_the_adult_query_example_runs_on_the_real_file():
    import json
    from pathlib import Path

    from tests.test_cli import unseen

    example = Path(__file__).resolve().parents[2] / "examples" / "queries" / "adult.toml"
    result = json.loads(unseen("query", str(example), "--format", "json").stdout)
    count, mean, hist, quantile, refused = result["answers"]
    assert abs(count["value"] - 32561) < 100 and 37 < mean["value"] < 40
    assert hist["value"]["Male|>50K"] > hist["value"]["Female|>50K"] and quantile["value"] == 40
    assert "refused" in refused and result["spent"] == pytest.approx(1.75)


def test_a_model_and_the_statistics_share_one_budget():
    from unseen.errors import UnseenError
    from unseen.privacy.guarantee import PrivacyGuarantee
    from unseen.privacy.queries import BudgetExceeded, QuerySession

    model = PrivacyGuarantee(mechanism="DP-SGD", unit="record", threat_model="t", epsilon=2.0, delta=1e-5)
    frame = pd.DataFrame({"a": np.arange(100)})
    session = QuerySession(frame, 3.0, prior=model)
    with pytest.raises(BudgetExceeded, match="only 1 of the session's 3"):
        session.count(1.5)
    session.count(1.0)
    g = session.guarantee()
    assert g.epsilon == pytest.approx(3.0) and g.delta == 1e-5 and "DP-SGD" in g.mechanism
    with pytest.raises(UnseenError, match="no formal guarantee"):
        QuerySession(frame, 3.0, prior=PrivacyGuarantee.none("no DP", "t"))
    with pytest.raises(BudgetExceeded, match="nothing is left"):
        QuerySession(frame, 1.0, prior=model)


def test_unseen_query_after_a_dp_run_charges_the_run_first(tmp_path):
    import json

    from tests.test_cli import unseen
    from unseen.experiment import parse_spec, run

    run_dir = run(parse_spec({"data": {"name": "digits"}, "model": {"name": "logreg"}, "mode": "central",
                              "train": {"epochs": 2, "lr": 0.5},
                              "privacy": {"mechanism": "dp_sgd", "epsilon": 1.0}}), output_dir=tmp_path).run_dir
    (tmp_path / "t.csv").write_text("x\n" + "".join(f"{i % 10}\n" for i in range(500)))
    (tmp_path / "q.toml").write_text(
        f'epsilon = 2.0\nafter_run = "{run_dir}"\n[table]\npath = "t.csv"\n'
        '[[query]]\nkind = "count"\nepsilon = 0.5\n[[query]]\nkind = "count"\nepsilon = 0.6\n')
    result = json.loads(unseen("query", str(tmp_path / "q.toml"), "--format", "json").stdout)
    assert result["prior_epsilon"] == pytest.approx(1.0, rel=0.01)
    assert "refused" not in result["answers"][0] and "refused" in result["answers"][1]
    assert result["guarantee"]["epsilon"] == pytest.approx(result["prior_epsilon"] + 0.5)


def test_float_sums_cover_the_truth_and_charge_at_most_epsilon():
    truth = float(FRAME.score.sum())  # 250.0
    hits = 0
    for _ in range(200):
        session = QuerySession(FRAME, epsilon=0.5)
        a = session.sum("score", (0.0, 1.0), 0.5)
        assert isinstance(a.value, float) and session.spent <= 0.5
        hits += a.interval[0] <= truth <= a.interval[1]
    assert hits / 200 >= 0.85  # stated 95%; P(< 0.85 in 200 draws) = 2e-8


def test_contribution_limits_bound_each_persons_influence():
    frame = pd.DataFrame({"person": [0] * 50 + list(range(1, 51)), "amount": [100] * 50 + [1] * 50})
    session = QuerySession(frame, epsilon=10.0, person="person", max_rows=2)
    assert len(session.frame) == 52  # person 0 keeps 2 of its 50 rows
    a = session.sum("amount", (0, 100), 5.0)
    assert a.guarantee.unit == "user" and session.spent == pytest.approx(5.0)
    # 2 x 100 + 50 x 1 = 250; without the cap it would be 5,050. Laplace noise of scale 2 x 100 / 5 = 40
    # exceeds 1,000 with probability e^-25 (a bound of 200, e^-5, failed CI once).
    assert abs(a.value - 250) < 1000
    with pytest.raises(UnseenError, match="needs person"):
        QuerySession(frame, epsilon=1.0, max_rows=3)


def test_a_query_spec_can_cap_each_persons_rows():
    from unseen.privacy.query_spec import QuerySpec, run_queries

    frame = pd.DataFrame({"who": [1] * 30 + [2, 3, 4], "x": [1] * 33})
    spec = QuerySpec.model_validate({"epsilon": 50.0, "table": {"path": "-", "person": "who", "max_rows": 1},
                                     "query": [{"kind": "count", "epsilon": 40.0}]})
    result = run_queries(spec, frame)
    assert abs(result["answers"][0]["value"] - 4) <= 1 and result["guarantee"]["unit"] == "user"


def test_variance_is_close_and_its_interval_covers_the_truth():
    truth = float(FRAME.age.var(ddof=0))
    hits, errors = 0, []
    for _ in range(50):
        session = QuerySession(FRAME, epsilon=3.0)
        a = session.variance("age", (18, 90), 3.0)
        assert session.spent <= 3.0 * (1 + 1e-9) and len(session.answers) == 1
        hits += a.interval[0] <= truth <= a.interval[1]
        errors.append(abs(a.value - truth) / truth)
    assert hits / 50 >= 0.85  # stated: at least 3 * 95% - 2 = 85% (measured 99.5% over 400 draws)
    assert np.median(errors) < 0.15  # measured median 0.05 over 400 draws


def test_a_model_trained_after_statistics_gets_what_is_left_of_the_budget(tmp_path):
    from tests.test_cli import unseen
    from unseen.errors import SpecError
    from unseen.experiment import parse_spec, run

    (tmp_path / "t.csv").write_text("x\n" + "".join(f"{i % 10}\n" for i in range(500)))
    (tmp_path / "q.toml").write_text('epsilon = 5.0\n[table]\npath = "t.csv"\n[[query]]\nkind = "count"\nepsilon = 1.0\n')
    unseen("query", str(tmp_path / "q.toml"), "--output", str(tmp_path / "stats"))
    raw = {"data": {"name": "digits"}, "model": {"name": "logreg"}, "mode": "central", "train": {"epochs": 2},
           "privacy": {"mechanism": "dp_sgd", "epsilon": 3.0, "after_queries": str(tmp_path / "stats")}}
    result = run(parse_spec(raw), output_dir=tmp_path / "runs").results
    (g,) = result["privacy"]["guarantees"]  # one ledger: the statistics' epsilon is inside the model's
    assert g["epsilon"] == pytest.approx(3.0, rel=0.01) and g["epsilon"] <= 3.0 * (1 + 1e-6)
    assert "includes DP statistics of epsilon 1" in g["mechanism"] and result["status"] == "completed"
    assert g["epsilon"] - 1.0 == pytest.approx(epsilon_for(g["noise_multiplier"], g["sampling_rate"], g["steps"],
                                                           g["delta"]), rel=1e-6)
    raw["privacy"]["epsilon"] = 1.0
    with pytest.raises(SpecError, match="must be larger"):
        run(parse_spec(raw), output_dir=tmp_path / "runs2")
