"""One-run canary audits: the statistics on known answers, a leak found, DP runs within their epsilon."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unseen.audit.canary import (
    CanaryAudit,
    PrivacyViolation,
    canary_audit,
    check_against,
    epsilon_lower_bound,
    one_run_audit,
    p_value,
)
from unseen.audit.membership import Recipe
from unseen.data import load
from unseen.federated.client import LocalTraining
from unseen.privacy import calibrate_noise
from unseen.privacy.dpsgd import DPSGD, steps_per_epoch


def test_p_value_is_the_binomial_tail_without_delta_and_grows_with_delta():
    assert p_value(100, 20, 15, 0.0, 0.0) == pytest.approx(0.020694732666015625)  # P[Bin(20, .5) >= 15]
    assert p_value(100, 20, 15, 0.0, 1e-3) > p_value(100, 20, 15, 0.0, 0.0)


def test_all_correct_guesses_give_the_closed_form_bound():
    # r correct out of r: q^r = alpha at the bound, so eps = log(q / (1 - q)) with q = alpha^(1/r).
    q = 0.05 ** (1 / 100)
    assert epsilon_lower_bound(100, 100, 100, 0.0, 0.05) == pytest.approx(math.log(q / (1 - q)), rel=1e-6)
    assert epsilon_lower_bound(100, 100, 50, 0.0, 0.05) == 0.0  # chance-level guessing shows nothing


def test_perfect_separation_is_found_and_random_scores_are_not():
    rng = np.random.default_rng(0)
    included = rng.random(1000) < 0.5
    strong = one_run_audit(included + rng.normal(0, 0.1, 1000), included)
    weak = one_run_audit(rng.normal(0, 1, 1000), included)
    assert strong.epsilon_lower_bound > 2 and weak.epsilon_lower_bound < 0.5


def test_a_bound_above_the_formal_epsilon_fails_loudly():
    audit = CanaryAudit(100, 50, 20, 20, 3.0, 0.95, 1e-5, formal_epsilon=1.0)
    assert audit.violation and audit.to_dict()["violation"]
    with pytest.raises(PrivacyViolation, match="above the formal epsilon 1"):
        check_against(audit)
    check_against(CanaryAudit(100, 50, 20, 20, 0.5, 0.95, 1e-5, formal_epsilon=1.0))


def _digits():
    ds = load("digits")
    return ds, torch.from_numpy(ds.train.x), torch.from_numpy(ds.train.y)


def test_mislabelled_canaries_expose_a_non_private_model():
    ds, x, y = _digits()
    recipe = Recipe("mlp", ds.input_shape, ds.n_classes, LocalTraining(epochs=40, batch_size=32, lr=0.1), (128,))
    audit, _ = canary_audit(recipe, x, y, 200, seed=0)
    assert audit.epsilon_lower_bound > 0.5 and audit.correct > audit.guesses * 0.8


@pytest.mark.parametrize("epsilon", [1.0, 4.0])
def test_dp_sgd_stays_within_its_formal_epsilon_under_the_canary_audit(epsilon):
    ds, x, y = _digits()
    epochs, batch = 10, 64
    q = batch / (len(y))
    delta = 1e-4
    z = calibrate_noise(epsilon, delta, q, epochs * steps_per_epoch(q))
    recipe = Recipe("mlp", ds.input_shape, ds.n_classes, LocalTraining(epochs=epochs, batch_size=batch, lr=0.5),
                    (128,), dp=DPSGD(z, 1.0, q))
    audit, _ = canary_audit(recipe, x, y, 200, seed=1, delta=delta, formal_epsilon=epsilon)
    assert not audit.violation and audit.epsilon_lower_bound <= epsilon
    check_against(audit)


def _run_spec(**privacy) -> dict:
    return {"data": {"name": "digits"}, "model": {"name": "mlp", "hidden": [128]},
            "train": {"lr": 0.1, "epochs": 5}, "federated": {"clients": 4, "rounds": 8},
            "audit": {"canaries": 200}, "privacy": privacy}


def test_canaries_in_a_federated_run_expose_it_and_the_report_says_so(tmp_path):
    from unseen.experiment import parse_spec, run

    r = run(parse_spec(_run_spec()), output_dir=tmp_path).results
    canary = r["audit"]["canary"]
    assert canary["canaries"] == 200 and 70 < canary["included"] < 130
    assert canary["epsilon_lower_bound"] > 0.5 and canary["formal_epsilon"] is None and not canary["violation"]
    assert r["status"] == "completed"
    assert sum(r["dataset"]["client_sizes"]) == r["dataset"]["train_samples"] - 200  # canaries left their clients


def test_a_dp_fedavg_run_passes_its_canary_audit(tmp_path):
    from unseen.experiment import parse_spec, run

    r = run(parse_spec(_run_spec(mechanism="dp_fedavg", epsilon=4.0, clip=0.5)), output_dir=tmp_path).results
    canary, (g,) = r["audit"]["canary"], r["privacy"]["guarantees"]
    assert canary["formal_epsilon"] == pytest.approx(g["epsilon"]) and canary["delta"] == g["delta"]
    assert canary["epsilon_lower_bound"] <= g["epsilon"] and not canary["violation"]
    assert r["status"] == "completed"
