"""The auditor: member and non-member scores in, ROC, TPR at low FPR and an epsilon lower bound out.

Every attack in unseen produces scores (higher = "more likely a member"); this module is the one
place that turns them into metrics, so attacks are compared on the same footing. Everything is
computed in float64 (float32 losses that round to exactly 0 would merge distinct thresholds).

The empirical epsilon is a *lower bound* with a stated confidence: for a threshold, the attack's
true positive rate and false positive rate bound epsilon through (eps, delta)-DP's hypothesis-test
characterisation, ``TPR <= e^eps * FPR + delta`` (and the same for the complementary rates). Using
Clopper-Pearson intervals (lower on TPR, upper on FPR) makes the bound hold with the given
confidence; a Bonferroni correction over the thresholds tried keeps it valid when the best
threshold is picked after looking (Jagielski et al. 2020; Nasr et al. 2021).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats


def clopper_pearson(successes: int, trials: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact two-sided (1 - alpha) confidence interval for a binomial proportion."""
    if trials == 0:
        return 0.0, 1.0
    lo = 0.0 if successes == 0 else float(stats.beta.ppf(alpha / 2, successes, trials - successes + 1))
    hi = 1.0 if successes == trials else float(stats.beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return lo, hi


def roc_curve(in_scores: np.ndarray, out_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FPR, TPR and thresholds for "member if score >= threshold", from the strictest threshold down."""
    scores_in = np.asarray(in_scores, dtype=np.float64)
    scores_out = np.asarray(out_scores, dtype=np.float64)
    thresholds = np.unique(np.concatenate([scores_in, scores_out]))[::-1]
    tp = len(scores_in) - np.searchsorted(np.sort(scores_in), thresholds, side="left")
    fp = len(scores_out) - np.searchsorted(np.sort(scores_out), thresholds, side="left")
    fpr = np.concatenate([[0.0], fp / len(scores_out)])
    tpr = np.concatenate([[0.0], tp / len(scores_in)])
    return fpr, tpr, np.concatenate([[np.inf], thresholds])


@dataclass(frozen=True)
class AuditResult:
    """What an audit found; ``to_dict`` goes to results.json."""

    n_members: int
    n_nonmembers: int
    auc: float
    tpr_at_fpr: dict[float, dict[str, float]]  # fpr -> {tpr, lower, upper}
    epsilon_lower_bound: float
    confidence: float
    delta: float
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, object]:
        return {"n_members": self.n_members, "n_nonmembers": self.n_nonmembers, "auc": self.auc,
                "tpr_at_fpr": {str(k): v for k, v in self.tpr_at_fpr.items()},
                "epsilon_lower_bound": self.epsilon_lower_bound, "confidence": self.confidence, "delta": self.delta}


def empirical_epsilon(
    in_scores: np.ndarray, out_scores: np.ndarray, *, delta: float = 0.0, confidence: float = 0.95,
    max_thresholds: int = 1000,
) -> float:
    """A lower bound on epsilon, holding with probability ``confidence`` (0 if nothing can be shown)."""
    fpr, tpr, _ = roc_curve(in_scores, out_scores)
    n_in, n_out = len(in_scores), len(out_scores)
    idx = np.unique(np.linspace(1, len(fpr) - 1, min(max_thresholds, len(fpr) - 1)).astype(int))
    # Per threshold two one-sided bounds must hold (TPR from below, FPR from above; the complementary
    # rates reuse the same intervals). Bonferroni over 2 x thresholds; a two-sided CP interval at
    # level alpha gives one-sided bounds at alpha / 2.
    alpha = (1 - confidence) / max(len(idx), 1)
    best = 0.0
    for i in idx:
        tp, fp = round(tpr[i] * n_in), round(fpr[i] * n_out)
        tpr_lo, _ = clopper_pearson(tp, n_in, alpha)
        _, fpr_hi = clopper_pearson(fp, n_out, alpha)
        tnr_lo, _ = clopper_pearson(n_out - fp, n_out, alpha)
        _, fnr_hi = clopper_pearson(n_in - tp, n_in, alpha)
        for num, den in ((tpr_lo, fpr_hi), (tnr_lo, fnr_hi)):
            if num - delta > 0 and den > 0:
                best = max(best, math.log((num - delta) / den))
    return best


def audit_scores(
    in_scores: np.ndarray, out_scores: np.ndarray, *, fprs: tuple[float, ...] = (0.01, 0.001, 0.0001),
    delta: float = 0.0, confidence: float = 0.95,
) -> AuditResult:
    """ROC, AUC, TPR at each of ``fprs`` (with Clopper-Pearson intervals) and the epsilon lower bound."""
    in_scores = np.asarray(in_scores, dtype=np.float64)
    out_scores = np.asarray(out_scores, dtype=np.float64)
    if len(in_scores) == 0 or len(out_scores) == 0:
        raise ValueError("an audit needs at least one member and one non-member score")
    fpr, tpr, _ = roc_curve(in_scores, out_scores)
    auc = float(np.trapezoid(np.concatenate([tpr, [1.0]]), np.concatenate([fpr, [1.0]])))
    at = {}
    for target in fprs:
        i = int(np.searchsorted(fpr, target, side="right") - 1)  # the best TPR with FPR <= target
        k = round(tpr[i] * len(in_scores))
        lo, hi = clopper_pearson(k, len(in_scores), 1 - confidence)
        at[target] = {"tpr": float(tpr[i]), "lower": lo, "upper": hi,
                      "meaningful": bool(target * len(out_scores) >= 1)}  # below 1/n_out the FPR cannot be measured
    eps = empirical_epsilon(in_scores, out_scores, delta=delta, confidence=confidence)
    return AuditResult(len(in_scores), len(out_scores), auc, at, eps, confidence, delta, fpr, tpr)
