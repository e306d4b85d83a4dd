"""Label differential privacy by randomized response (Warner 1965; for deep learning, Ghazi et al. 2021).

Each training label is kept with probability ``e^eps / (e^eps + K - 1)`` and otherwise replaced by one
of the other ``K - 1`` classes uniformly at random, independently per person. For any two labels a
person might have, the probability of any randomized label differs by at most a factor ``e^eps``, so
the randomized labels are ``(eps, 0)``-DP per label, and so is everything computed from them and from
the features alone (post-processing): in split learning, the cut-layer gradients the passive parties
receive and every party's trained model. It protects labels only; features, embeddings and set
membership are not covered.

No accountant is needed: one use of the mechanism per label, with an exact, closed-form epsilon.
"""

from __future__ import annotations

import math

import numpy as np

from unseen.privacy.guarantee import PrivacyGuarantee
from unseen.privacy.noise import _secure_uniform

THREAT_MODEL = ("The label party randomizes every training label once (randomized response) before training; "
                "whoever sees anything computed from the randomized labels (the passive parties' cut-layer "
                "gradients, the trained models) learns about any one person's true label no more than "
                "(epsilon, 0)-DP allows. Covers labels only: not the parties' columns, the embeddings or who is "
                "in the intersection.")


def keep_probability(epsilon: float, n_classes: int) -> float:
    """The probability that randomized response reports the true label."""
    return 1.0 / (1.0 + (n_classes - 1) * math.exp(-epsilon))


def randomized_response(labels: np.ndarray, n_classes: int, epsilon: float, *,
                        rng: np.random.Generator | None = None, secure: bool = False) -> np.ndarray:
    """Every label kept with :func:`keep_probability`, else one of the other classes uniformly.

    Uniforms from the OS CSPRNG when ``secure``, else from ``rng`` (reproducible simulation).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if n_classes < 2 or labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1} with at least two classes")
    n = len(labels)
    if secure:
        u, v = _secure_uniform(n), _secure_uniform(n)  # in (0, 1]
        u, v = 1.0 - u, 1.0 - v  # in [0, 1)
    else:
        if rng is None:
            raise ValueError("randomized_response needs rng, or secure=True")
        u, v = rng.random(n), rng.random(n)
    shift = 1 + np.minimum((v * (n_classes - 1)).astype(np.int64), n_classes - 2)  # 1 .. K-1, uniform
    return np.where(u < keep_probability(epsilon, n_classes), labels, (labels + shift) % n_classes)


def label_dp_guarantee(epsilon: float, n_classes: int, noise_source: str) -> PrivacyGuarantee:
    """The guarantee of one randomized response per label."""
    return PrivacyGuarantee(
        mechanism="randomized_response", unit="label", epsilon=float(epsilon), delta=0.0, steps=1,
        accountant=f"exact: randomized response over {n_classes} classes keeps a label with probability "
                   f"{keep_probability(epsilon, n_classes):.4f}",
        threat_model=THREAT_MODEL, noise_source=noise_source)


__all__ = ["THREAT_MODEL", "keep_probability", "label_dp_guarantee", "randomized_response"]
