"""Label leakage in split learning: what the gradients a party receives say about the labels it lacks.

In a SplitNN the label party sends every other party the gradient of the loss with respect to that
party's embedding of each person. For cross-entropy, that gradient is the top model's Jacobian times
(predicted probabilities - one-hot label), so it depends on the label. Li et al. ("Label Leakage and
Protection in Two-party Split Learning", ICLR 2022) give two scores a passive party can compute:

- the **norm score** ``||g_i||``: when positives are the minority class, the model is less sure of them,
  so their gradients are larger. Needs no label at all.
- the **cosine score** ``cos(g_i, g_ref)`` with the gradient of one person known to be positive in the
  same batch: for binary cross-entropy, the gradients of the two classes point in opposite directions.

Both return scores where higher means "more likely positive"; :func:`unseen.audit.audit_scores` turns
them into an ROC curve and AUC (positives as "members"). Its empirical epsilon is **not** a lower bound
on label DP here: the scores also reflect the features, which predict the labels whatever the
mechanism. A valid audit scores *label canaries*, people whose labels were drawn at random, independent
of their features (``audit.canaries`` in vertical runs; Steinke et al. 2023's one-run audit).
"""

from __future__ import annotations

import numpy as np

THREAT_MODEL = ("A passive party of split learning, following the protocol, scores each of its people from the "
                "cut-layer gradients it received in the last epoch (norm score: no labels known; cosine score: "
                "one positive known per batch; Li et al. 2022). 'Members' are the positives.")


def norm_scores(gradients: np.ndarray) -> np.ndarray:
    """Each row's L2 norm: the norm attack's score."""
    return np.linalg.norm(np.asarray(gradients, dtype=np.float64), axis=1)


def cosine_scores(gradients: np.ndarray, batches: np.ndarray, labels: np.ndarray,
                  rng: np.random.Generator, knowable: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The cosine attack, with the attacker knowing one positive person per batch (chosen at random
    among the ``knowable`` people, default everyone).

    Returns (scores, scored): the cosine similarity of each gradient with the known positive's gradient
    of its batch, and a mask of the people scored (not the known ones, and only in batches that have a
    knowable positive). ``labels`` only choose the known positive; the scores use gradients alone.
    """
    g = np.asarray(gradients, dtype=np.float64)
    unit = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-30)
    scores = np.zeros(len(g))
    scored = np.zeros(len(g), dtype=bool)
    for b in np.unique(batches):
        members = np.flatnonzero(batches == b)
        positives = members[(labels[members] == 1) & (True if knowable is None else knowable[members])]
        if len(positives) == 0:
            continue
        known = rng.choice(positives)
        others = members[members != known]
        scores[others] = unit[others] @ unit[known]
        scored[others] = True
    return scores, scored


__all__ = ["THREAT_MODEL", "cosine_scores", "norm_scores"]
