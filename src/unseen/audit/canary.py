"""Auditing DP in one training run with canaries (Steinke, Nasr & Jagielski, NeurIPS 2023).

``m`` canaries (here: training records given a wrong label) are each included in the training set
independently with probability 1/2. After one training run, the auditor scores every canary and
guesses "included" for the ``k_plus`` highest scores and "excluded" for the ``k_minus`` lowest. If
the training is (eps, delta)-DP, the number of correct guesses is stochastically dominated by
Binomial(r, e^eps / (1 + e^eps)) up to a delta term (their Theorem 5.2), which gives a p-value for
every eps; the largest eps rejected at the chosen confidence is the empirical lower bound eps-hat.

A lower bound above the formal epsilon means the training is not as private as claimed: a bug in
the DP implementation or its accounting. :func:`check_against` turns that into a loud failure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats

from unseen.errors import UnseenError

THREAT_MODEL = ("The auditor plants mislabelled canary records, each included with probability 1/2, and "
                "guesses which were included from the final model's loss on them (one training run).")


class PrivacyViolation(UnseenError):
    """The empirical lower bound on epsilon exceeds the formal guarantee: the DP claim is wrong."""


def p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """P[at least ``v`` of ``r`` guesses correct] under (eps, delta)-DP with ``m`` canaries (Thm 5.2)."""
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    q = 1.0 / (1.0 + math.exp(-eps))  # the accuracy of eps-DP randomized response
    tail = float(stats.binom.sf(v - 1, r, q))
    # The delta term: the worst average of P[v - i <= Binomial(r, q) < v] / i over i.
    pmf = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[B = v-1], P[B = v-2], ...
    worst = float(np.max(np.cumsum(pmf) / np.arange(1, v + 1))) if v > 0 else 0.0
    return min(1.0, tail + 2 * m * delta * worst)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, alpha: float = 0.05) -> float:
    """The largest eps whose p-value for ``v`` correct guesses is below ``alpha`` (0 if none is)."""
    if r == 0 or p_value(m, r, v, 0.0, delta) >= alpha:
        return 0.0
    low, high = 0.0, 1.0
    while p_value(m, r, v, high, delta) < alpha:
        low, high = high, 2 * high
        if high > 1e3:
            return math.inf
    for _ in range(50):
        mid = (low + high) / 2
        if p_value(m, r, v, mid, delta) < alpha:
            low = mid
        else:
            high = mid
    return low


@dataclass(frozen=True)
class CanaryAudit:
    canaries: int
    included: int
    guesses: int
    correct: int
    epsilon_lower_bound: float
    confidence: float
    delta: float
    formal_epsilon: float | None = None

    @property
    def violation(self) -> bool:
        return self.formal_epsilon is not None and self.epsilon_lower_bound > self.formal_epsilon

    def to_dict(self) -> dict[str, Any]:
        return {"canaries": self.canaries, "included": self.included, "guesses": self.guesses,
                "correct": self.correct, "epsilon_lower_bound": self.epsilon_lower_bound,
                "confidence": self.confidence, "delta": self.delta, "formal_epsilon": self.formal_epsilon,
                "violation": self.violation, "threat_model": THREAT_MODEL}


def one_run_audit(scores: np.ndarray, included: np.ndarray, *, delta: float = 0.0, confidence: float = 0.95,
                  guess_fractions: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5),
                  formal_epsilon: float | None = None) -> CanaryAudit:
    """eps-hat from canary scores (higher = more likely included) and the truth of their inclusion.

    The auditor guesses on the top and bottom ``f * m / 2`` scores for each ``f`` in
    ``guess_fractions`` and keeps the best bound; the confidence is split over those choices
    (Bonferroni), so the bound stays valid although the best choice is picked after looking.
    """
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included, dtype=bool)
    m = len(scores)
    order = np.argsort(-scores, kind="stable")
    alpha = (1 - confidence) / len(guess_fractions)
    best = (0.0, 0, 0)
    for f in guess_fractions:
        k = max(1, int(f * m / 2))
        top, bottom = order[:k], order[m - k:]
        v = int(included[top].sum() + (~included[bottom]).sum())
        eps = epsilon_lower_bound(m, 2 * k, v, delta, alpha)
        if eps > best[0] or best[1] == 0 or (eps == best[0] and 2 * k > best[1]):  # ties: the most guesses
            best = (eps, 2 * k, v)
    return CanaryAudit(m, int(included.sum()), best[1], best[2], best[0], confidence, delta, formal_epsilon)


def check_against(audit: CanaryAudit) -> None:
    """Raise :class:`PrivacyViolation` if eps-hat exceeds the formal epsilon."""
    if audit.violation:
        raise PrivacyViolation(
            f"privacy audit failed: the canaries show epsilon >= {audit.epsilon_lower_bound:.3g} with "
            f"{audit.confidence:.0%} confidence, above the formal epsilon {audit.formal_epsilon:.3g}. The DP "
            "training or its accounting is wrong: do not trust this run's guarantee; report it as a bug.")


def make_canaries(x: torch.Tensor, y: torch.Tensor, n_classes: int, m: int, seed: int
                  ) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """Pick ``m`` records, give each a random wrong label, and flip a fair coin for each.

    Returns the indices of the chosen records, their wrong labels, and which are included.
    """
    rng = np.random.default_rng([seed, 0xCA7])
    idx = rng.choice(len(y), size=m, replace=False)
    shift = torch.from_numpy(rng.integers(1, n_classes, size=m)).to(y.device)
    wrong = (y[torch.from_numpy(idx).to(y.device)] + shift) % n_classes
    return idx, wrong, rng.random(m) < 0.5


__all__ = ["CanaryAudit", "PrivacyViolation", "THREAT_MODEL", "check_against", "epsilon_lower_bound",
           "make_canaries", "one_run_audit", "p_value"]


def canary_audit(recipe: Any, x: torch.Tensor, y: torch.Tensor, m: int, *, seed: int = 0, delta: float = 0.0,
                 formal_epsilon: float | None = None, confidence: float = 0.95) -> tuple[CanaryAudit, dict[str, Any]]:
    """Plant ``m`` mislabelled canaries in ``(x, y)``, train once with ``recipe``, and audit.

    The score of a canary is how much training lowered the model's loss on it (initial minus final
    loss), which separates included from excluded canaries better than the final loss alone.
    """
    from unseen.attacks.membership import loss_scores
    from unseen.audit.membership import train
    from unseen.federated.params import get_flat
    from unseen.models import init_model

    idx, wrong, included = make_canaries(x, y, recipe.n_classes, m, seed)
    keep = np.ones(len(y), dtype=bool)
    keep[idx] = False
    chosen = torch.from_numpy(idx[included]).to(x.device)
    x_train = torch.cat([x[torch.from_numpy(keep).to(x.device)], x[chosen]])
    y_train = torch.cat([y[torch.from_numpy(keep).to(x.device)], wrong[torch.from_numpy(included).to(x.device)]])
    model, params = train(recipe, x_train, y_train, seed)
    initial = get_flat(init_model(recipe.model, recipe.input_shape, recipe.n_classes, seed=seed,
                                  hidden=recipe.hidden)).to(params.device)
    cx = x[torch.from_numpy(idx).to(x.device)]
    # loss_scores returns -loss: (-final) - (-initial) = initial - final.
    scores = loss_scores(model, params, cx, wrong) - loss_scores(model, initial, cx, wrong)
    audit = one_run_audit(scores, included, delta=delta, confidence=confidence, formal_epsilon=formal_epsilon)
    return audit, {"scores": scores, "included": included, "params": params}


__all__ += ["canary_audit"]
