"""The label-leakage scores (Li et al. 2022) on gradients with the structure split learning gives them."""

from __future__ import annotations

import numpy as np

from unseen.attacks.label_leakage import cosine_scores, norm_scores
from unseen.audit import audit_scores


def _cut_gradients(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Binary cross-entropy gradients at a cut layer: (p - y) times a shared direction plus small noise;
    positives are the minority, so the model is less sure of them (|p - y| larger)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(np.int64)
    p = np.where(y == 1, rng.uniform(0.1, 0.6, n), rng.uniform(0.0, 0.3, n))  # predicted P(positive)
    direction = rng.normal(size=8)
    g = (p - y)[:, None] * (direction + 0.1 * rng.normal(size=(n, 8)))
    return g, y


def test_norm_scores_rank_minority_positives_higher():
    g, y = _cut_gradients(2000, 0)
    s = norm_scores(g)
    np.testing.assert_allclose(s, np.sqrt((g**2).sum(1)))
    assert audit_scores(s[y == 1], s[y == 0]).auc > 0.9


def test_cosine_scores_separate_the_classes_with_one_known_positive_per_batch():
    g, y = _cut_gradients(2000, 1)
    batches = np.arange(2000) // 100
    s, scored = cosine_scores(g, batches, y, np.random.default_rng(0))
    assert scored.sum() == 2000 - 20  # one known positive per batch is not scored
    assert audit_scores(s[scored & (y == 1)], s[scored & (y == 0)]).auc > 0.99
    # A batch without positives gives the attacker no reference: nobody in it is scored.
    y_none = y.copy()
    y_none[batches == 0] = 0
    _, scored_none = cosine_scores(g, batches, y_none, np.random.default_rng(0))
    assert not scored_none[batches == 0].any()
