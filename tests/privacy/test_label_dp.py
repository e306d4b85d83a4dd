"""Randomized response for label DP: the keep rate, uniform flips, the exact epsilon, the guarantee."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unseen.privacy.label_dp import keep_probability, label_dp_guarantee, randomized_response


@pytest.mark.parametrize("k, eps", [(2, 1.0), (10, 2.0), (3, 0.1)])
def test_labels_are_kept_at_the_exact_rate_and_flipped_uniformly(k, eps):
    n = 200_000
    rng = np.random.default_rng(0)
    y = rng.integers(0, k, n)
    out = randomized_response(y, k, eps, rng=np.random.default_rng(1))
    p = keep_probability(eps, k)
    assert p == pytest.approx(math.exp(eps) / (math.exp(eps) + k - 1))
    kept = (out == y).mean()
    assert abs(kept - p) < 4 * math.sqrt(p * (1 - p) / n)
    # Among flips, each other class equally likely: the offset (out - y) mod k is uniform on 1..k-1.
    offsets = ((out - y) % k)[out != y]
    counts = np.bincount(offsets, minlength=k)[1:]
    expected = len(offsets) / (k - 1)
    assert np.all(np.abs(counts - expected) < 5 * math.sqrt(expected))
    assert counts.min() > 0


def test_the_output_distribution_moves_by_at_most_e_to_the_epsilon():
    # P(out = j | y = a) / P(out = j | y = b) over all a, b, j: at most e^eps, and e^eps is reached.
    k, eps = 4, 0.7
    p = keep_probability(eps, k)
    q = (1 - p) / (k - 1)
    matrix = np.full((k, k), q) + np.eye(k) * (p - q)
    np.testing.assert_allclose(matrix.sum(1), 1.0)
    ratios = matrix[:, None, :] / matrix[None, :, :]
    assert ratios.max() == pytest.approx(math.exp(eps))
    # The sampler follows that matrix (empirical transition frequencies, n = 400k).
    y = np.repeat(np.arange(k), 100_000)
    out = randomized_response(y, k, eps, rng=np.random.default_rng(2))
    empirical = np.array([np.bincount(out[y == a], minlength=k) / 100_000 for a in range(k)])
    np.testing.assert_allclose(empirical, matrix, atol=0.006)


def test_the_csprng_path_keeps_at_the_same_rate():
    y = np.zeros(100_000, dtype=np.int64)
    out = randomized_response(y, 2, 1.0, secure=True)
    assert abs((out == 0).mean() - keep_probability(1.0, 2)) < 0.006


def test_bad_labels_and_a_missing_generator_are_refused():
    with pytest.raises(ValueError, match="0..1"):
        randomized_response(np.array([0, 2]), 2, 1.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs rng"):
        randomized_response(np.array([0, 1]), 2, 1.0)


def test_the_guarantee_is_pure_epsilon_per_label():
    g = label_dp_guarantee(2.0, 2, "OS CSPRNG")
    assert (g.mechanism, g.unit, g.epsilon, g.delta, g.steps) == ("randomized_response", "label", 2.0, 0.0, 1)
    assert "labels only" in g.threat_model and "0.8808" in g.accountant
