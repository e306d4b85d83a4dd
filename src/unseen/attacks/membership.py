"""Membership inference: loss threshold (Yeom et al. 2018), LiRA (Carlini et al. 2022), RMIA (Zarifzadeh et al. 2024).

Every attack returns one score per candidate record (higher = "more likely a member"), in float64 so
that records with (near) zero loss keep distinct scores; :mod:`unseen.audit` turns scores into
metrics. The loss attack needs only the model; LiRA and RMIA also use reference models, trained by
:mod:`unseen.audit.membership` on data from the same distribution.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy import stats
from torch import nn
from torch.nn import functional as F

from unseen.federated.params import set_flat

THREAT_MODEL = ("The attacker has the final model's weights and a candidate record with its label, and "
                "guesses membership from the model's loss on it (Yeom et al. 2018).")


@torch.no_grad()
def per_record(model: nn.Module, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
               statistic: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], batch_size: int = 2048) -> np.ndarray:
    """``statistic(logits, labels)`` for every record, batch by batch, with the logits in float64."""
    set_flat(model, params)
    model.eval()
    out = [statistic(model(x[start : start + batch_size]).double(), y[start : start + batch_size]).cpu().numpy()
           for start in range(0, len(y), batch_size)]
    return np.concatenate(out) if out else np.zeros(0)


def _others(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The logits with the true class masked out (-inf)."""
    return logits.scatter(1, labels[:, None], -torch.inf)


def loss_scores(model: nn.Module, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                batch_size: int = 2048) -> np.ndarray:
    """Membership scores (negative per-record cross-entropy; higher = more likely a member)."""
    return per_record(model, params, x, y, lambda z, t: -F.cross_entropy(z, t, reduction="none"), batch_size)


MARGIN_THREAT_MODEL = ("The attacker has the final model and candidate records with labels, and guesses membership "
                       "from the logit margin of the true class over the best other class.")


def margin_scores(model: nn.Module, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                  batch_size: int = 2048) -> np.ndarray:
    """Logit margin ``z_y - max_{j != y} z_j`` per record (higher = more likely a member), in float64."""
    return per_record(model, params, x, y,
                      lambda z, t: z.gather(1, t[:, None])[:, 0] - _others(z, t).max(1).values, batch_size)


# ---------------------------------------------------------------- attacks with reference models
LIRA_THREAT_MODEL = (
    "The attacker has the final model, candidate records with labels, and data from the same distribution to "
    "train reference models on (Carlini et al. 2022); online LiRA also trains references that include each "
    "candidate.")
RMIA_THREAT_MODEL = (
    "The attacker has the final model, candidate records with labels, population records, and a few reference "
    "models trained on population data (Zarifzadeh et al. 2024).")


def true_class_logits(model: nn.Module, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                      batch_size: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Per record: the model's probability of the true label, and its logit-scaled confidence
    ``log p - log(1 - p)`` (LiRA's statistic), both computed stably in float64."""

    def both(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        true = torch.log_softmax(z, dim=1).gather(1, t[:, None])[:, 0]
        # log(p / (1 - p)) = z_y - logsumexp_{j != y} z_j: no cancellation when p is close to 1.
        phi = z.gather(1, t[:, None])[:, 0] - torch.logsumexp(_others(z, t), dim=1)
        return torch.stack([true.exp(), phi], dim=1)

    out = per_record(model, params, x, y, both, batch_size).reshape(-1, 2)
    return out[:, 0], out[:, 1]


def lira_scores(target_phi: np.ndarray, ref_phi: np.ndarray, ref_in: np.ndarray, *, online: bool = True,
                min_std: float = 1e-3) -> np.ndarray:
    """LiRA (Carlini et al. 2022): a likelihood ratio of the target's confidence under the IN and OUT
    Gaussians fitted on reference models.

    ``ref_phi`` and ``ref_in`` are (references x records): each reference model's logit-scaled
    confidence on each record, and whether that reference trained on it. With few references a
    global variance per side is used, as the paper advises. Offline LiRA uses only the OUT side.
    """
    target_phi = np.asarray(target_phi, dtype=np.float64)
    ref_phi = np.asarray(ref_phi, dtype=np.float64)
    ref_in = np.asarray(ref_in, dtype=bool)
    out_mask = ~ref_in
    if not out_mask.any(axis=0).all():
        raise ValueError("LiRA needs at least one OUT reference model for every record")
    mu_out = np.nanmean(np.where(out_mask, ref_phi, np.nan), axis=0)
    sd_out = max(float(np.std((ref_phi - mu_out)[out_mask])), min_std)
    if not online:
        return stats.norm.logsf(target_phi, mu_out, sd_out) * -1.0  # how far above the OUT distribution
    if not ref_in.any(axis=0).all():
        raise ValueError("online LiRA needs at least one IN reference model for every record")
    mu_in = np.nanmean(np.where(ref_in, ref_phi, np.nan), axis=0)
    sd_in = max(float(np.std((ref_phi - mu_in)[ref_in])), min_std)
    return stats.norm.logpdf(target_phi, mu_in, sd_in) - stats.norm.logpdf(target_phi, mu_out, sd_out)


def rmia_scores(target_p: np.ndarray, ref_p: np.ndarray, target_pz: np.ndarray, ref_pz: np.ndarray, *,
                gamma: float = 1.0, offline_a: float | None = None) -> np.ndarray:
    """RMIA (Zarifzadeh et al. 2024): how often the record's likelihood ratio beats population records'.

    ``target_p`` / ``ref_p`` (references x records) are the target's and the references' probabilities
    of the true label on the candidates; ``target_pz`` / ``ref_pz`` the same on population records z.
    ``Pr(x)`` averages the references; with ``offline_a`` (references never trained on the candidates)
    it is ``((1 + a) * mean + (1 - a)) / 2``, the paper's offline correction.
    """
    def prior(p: np.ndarray) -> np.ndarray:
        mean = np.asarray(p, dtype=np.float64).mean(axis=0)
        return mean if offline_a is None else 0.5 * ((1 + offline_a) * mean + (1 - offline_a))

    eps = 1e-300
    ratio_x = np.asarray(target_p, dtype=np.float64) / np.maximum(prior(ref_p), eps)
    ratio_z = np.sort(np.asarray(target_pz, dtype=np.float64) / np.maximum(prior(ref_pz), eps))
    # Score = the fraction of z with ratio_x / ratio_z > gamma, i.e. ratio_z < ratio_x / gamma.
    return np.searchsorted(ratio_z, ratio_x / gamma, side="left") / len(ratio_z)
