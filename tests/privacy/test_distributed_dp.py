"""Distributed DP under secure aggregation: the sampler, the rounding, the accounting and the runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from unseen.crypto.fixed_point import from_modular
from unseen.experiment import parse_spec, run
from unseen.privacy import epsilon_for
from unseen.privacy.distributed_dp import (
    DistributedDP,
    client_encode,
    conditional_round,
    discrete_gaussian,
    plan_distributed,
)
from unseen.runtime.secure import SecureAggregation, distributed_plan, secure_params, secure_sum


def _dg_pmf(sigma: float, support: np.ndarray) -> np.ndarray:
    k = np.arange(-60, 61)
    norm = np.exp(-(k**2) / (2 * sigma**2)).sum()
    return np.exp(-(support**2) / (2 * sigma**2)) / norm


@pytest.mark.parametrize("sigma", [0.7, 1.5, 4.0])
def test_discrete_gaussian_sampler_matches_the_exact_pmf(sigma):
    x = discrete_gaussian(200_000, sigma, np.random.default_rng(1))
    support = np.arange(-int(4 * sigma) - 1, int(4 * sigma) + 2)
    observed = np.array([(x == k).sum() for k in support])
    expected = _dg_pmf(sigma, support) * len(x)
    expected *= observed.sum() / expected.sum()  # compare within the central support
    assert stats.chisquare(observed, expected).pvalue > 1e-4


def test_discrete_gaussian_at_large_sigma_has_the_right_moments():
    x = discrete_gaussian(500_000, 3e6, np.random.default_rng(2))
    assert abs(x.mean()) < 5 * 3e6 / math.sqrt(len(x))
    assert x.std() == pytest.approx(3e6, rel=0.01)


def test_conditional_rounding_is_unbiased_and_within_the_bound():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 30, 400)
    dd = DistributedDP(1.0, float(np.linalg.norm(x)), 400, 5, 5, scale=1.0)
    draws = np.stack([conditional_round(x, dd.sensitivity, rng) for _ in range(2000)])
    assert np.all(np.linalg.norm(draws, axis=1) <= dd.sensitivity)
    assert np.max(np.abs(draws.mean(0) - x)) < 0.1
    assert set(np.unique(draws - np.floor(x))) <= {0, 1}


@pytest.mark.parametrize(("z", "rounds", "clients"), [(0.8, 50, 100), (1.5, 200, 10), (3.0, 20, 30)])
def test_distributed_epsilon_matches_central_gaussian_accounting_for_the_same_total_noise(z, rounds, clients):
    dd, _ = plan_distributed(z, clip=1.0, dim=100_000, clients=clients, min_survivors=clients)
    assert dd.sigma_client * math.sqrt(clients) == pytest.approx(z * dd.sensitivity)  # same total noise
    distributed = epsilon_for(dd.equivalent_noise_multiplier, 1.0, rounds, 1e-5, "rdp")
    central = epsilon_for(z, 1.0, rounds, 1e-5, "rdp")
    assert distributed == pytest.approx(central, rel=1e-6)


def test_too_little_noise_per_client_costs_privacy_through_the_tau_term():
    # With per-client noise well under one integer unit, the sum of discrete Gaussians is not discrete
    # Gaussian: Kairouz et al.'s tau term must raise epsilon above the central figure.
    dd = DistributedDP(noise_multiplier=1.0, clip=1.0, dim=4, clients=50, min_survivors=50, scale=0.05)
    assert dd.sigma_client < 0.5 and dd.tau > 0
    assert dd.equivalent_noise_multiplier < 0.9
    assert epsilon_for(dd.equivalent_noise_multiplier, 1.0, 10, 1e-5, "rdp") > epsilon_for(1.0, 1.0, 10, 1e-5, "rdp")


def test_the_secure_sum_carries_the_calibrated_noise_and_only_that():
    n, dim, clip = 8, 4000, 1.0
    config = SecureAggregation("secagg+", clip, weighted=False, noise_multiplier=1.0, min_survivor_fraction=1.0)
    dd, plan = distributed_plan(config, n, dim)
    rng = np.random.default_rng(4)
    updates = {c: rng.normal(0, 0.01, dim) for c in range(n)}
    encoded = {c: client_encode(updates[c], dd, plan, np.random.default_rng([9, c])) for c in range(n)}
    res = secure_sum(secure_params(config, n, dim, 1, 0), encoded)
    noisy = from_modular(res.total, plan.bits).astype(np.float64)
    noise = noisy - sum(updates.values()) * dd.scale
    # Rounding adds at most n units per coordinate; the rest is the summed discrete Gaussian noise.
    assert noise.std() == pytest.approx(dd.sigma_total, rel=0.05)
    assert abs(noise.mean()) < 5 * dd.sigma_total / math.sqrt(dim)


def _ddp_spec(**privacy) -> dict:
    return {"data": {"name": "digits"}, "model": {"name": "logreg"}, "train": {"lr": 0.5},
            "federated": {"clients": 10, "rounds": 4},
            "privacy": {"mechanism": "dp_fedavg", "noise_at": "clients", "secure_aggregation": "secagg+",
                        "clip": 0.5, "noise_multiplier": 1.2, **privacy}}


def test_a_distributed_dp_run_reports_the_central_equivalent_epsilon(tmp_path):
    r = run(parse_spec(_ddp_spec()), output_dir=tmp_path).results
    (g,) = r["privacy"]["guarantees"]
    assert g["mechanism"].startswith("Distributed DP-FedAvg") and g["steps"] == 4 and g["sampling_rate"] == 1.0
    assert "No party is trusted with the noise" in g["threat_model"] and "at least 9 of 10" in g["threat_model"]
    assert g["epsilon"] == pytest.approx(epsilon_for(1.2, 1.0, 4, g["delta"], "rdp"), rel=1e-6)
    assert r["status"] == "completed" and all(m["secure_aggregation"]["survivors"] == 10 for m in r["rounds"])


def test_a_target_epsilon_is_calibrated_and_spent_under_distributed_noise(tmp_path):
    r = run(parse_spec(_ddp_spec(noise_multiplier=None, epsilon=10.0)), output_dir=tmp_path).results
    (g,) = r["privacy"]["guarantees"]
    assert g["epsilon"] == pytest.approx(10.0, rel=1e-3) and g["epsilon"] <= 10.0 * (1 + 1e-6)


def test_more_dropouts_than_the_noise_allows_abort_the_round(tmp_path):
    raw = _ddp_spec()
    raw["federated"]["dropout"] = 0.2  # 2 of 10 drop; noise is calibrated for 9 survivors
    r = run(parse_spec(raw), output_dir=tmp_path).results
    assert r["status"] == "completed_with_failed_rounds" and len(r["failed_rounds"]) == 4
    assert all("under-noised" in f["reason"] for f in r["failed_rounds"])


def test_distributed_noise_without_secure_aggregation_is_refused():
    raw = _ddp_spec(secure_aggregation="none")
    with pytest.raises(Exception, match="noise_at = 'clients'"):
        parse_spec(raw)
