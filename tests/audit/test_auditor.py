"""The auditor against cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from unseen.audit import audit_scores, clopper_pearson, empirical_epsilon, roc_curve


def test_clopper_pearson_matches_known_values():
    lo, hi = clopper_pearson(5, 10, 0.05)
    assert lo == pytest.approx(0.187086, abs=1e-5) and hi == pytest.approx(0.812914, abs=1e-5)
    assert clopper_pearson(0, 10, 0.05)[0] == 0.0 and clopper_pearson(10, 10, 0.05)[1] == 1.0


def test_roc_and_auc_match_scikit_learn():
    rng = np.random.default_rng(0)
    inside, outside = rng.normal(1, 1, 500), rng.normal(0, 1, 700)
    result = audit_scores(inside, outside)
    labels = np.r_[np.ones(500), np.zeros(700)]
    assert result.auc == pytest.approx(roc_auc_score(labels, np.r_[inside, outside]), abs=1e-9)
    fpr, tpr, _ = roc_curve(inside, outside)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1 and np.all(np.diff(fpr) >= 0)


def test_float32_zero_losses_do_not_merge_thresholds():
    inside = -np.array([0.0, 0.0, 1e-9, 2e-9], dtype=np.float64)
    outside = -np.array([1e-9, 3.0, 4.0, 5.0], dtype=np.float64)
    assert audit_scores(inside, outside).auc > 0.8


def test_random_guessing_gives_auc_half_and_no_epsilon():
    rng = np.random.default_rng(1)
    result = audit_scores(rng.normal(size=5000), rng.normal(size=5000))
    assert result.auc == pytest.approx(0.5, abs=0.02)
    assert result.epsilon_lower_bound < 0.2


def test_perfect_attack_epsilon_is_limited_by_sample_size():
    # Perfect separation of n vs n samples proves at most about log(n) at 95%: the bound is honest about counts.
    inside, outside = np.ones(1000), np.zeros(1000)
    eps = empirical_epsilon(inside, outside)
    assert 4.0 < eps < math.log(1000)
    assert empirical_epsilon(np.ones(100), np.zeros(100)) < eps


def test_bound_respects_a_known_mechanism():
    # Randomized response with eps = 1: members answer 1 with p = e/(1+e), non-members with 1/(1+e).
    rng = np.random.default_rng(2)
    p = math.e / (1 + math.e)
    inside = (rng.random(20000) < p).astype(float)
    outside = (rng.random(20000) < 1 - p).astype(float)
    eps_hat = empirical_epsilon(inside, outside)
    assert 0.8 < eps_hat <= 1.0  # close to, and never above, the true epsilon


def test_tpr_at_low_fpr_reports_intervals_and_measurability():
    rng = np.random.default_rng(3)
    result = audit_scores(rng.normal(2, 1, 1000), rng.normal(0, 1, 1000))
    at1 = result.tpr_at_fpr[0.01]
    assert at1["lower"] <= at1["tpr"] <= at1["upper"] and at1["meaningful"]
    assert not result.tpr_at_fpr[0.0001]["meaningful"]  # 1e-4 x 1000 non-members < 1
    with pytest.raises(ValueError):
        audit_scores(np.array([]), np.array([1.0]))


def test_loss_attack_in_a_run(tmp_path):
    from unseen.experiment import parse_spec, run

    # An MLP trained hard on 2 clients of digits: the loss attack finds some signal, and says how much.
    spec = parse_spec({"data": {"name": "digits"}, "model": {"name": "mlp"}, "train": {"epochs": 20, "lr": 0.2},
                       "federated": {"clients": 2, "rounds": 10}, "audit": {"attacks": ["loss"], "max_records": 400}})
    audit = run(spec, output_dir=tmp_path).results["audit"]["loss"]
    assert audit["n_members"] == audit["n_nonmembers"] == 400
    assert audit["auc"] > 0.5 and audit["epsilon_lower_bound"] >= 0
    assert "loss" in audit["threat_model"] and len(audit["roc"]["fpr"]) == len(audit["roc"]["tpr"])
