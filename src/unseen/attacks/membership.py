"""Membership inference by loss threshold (Yeom et al. 2018).

Threat model: the attacker holds the final model and candidate records with their labels, and
guesses "member" when the model's loss on a record is low. The score is the negative loss, in
float64 so that records with (near) zero loss keep distinct scores.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from unseen.federated.params import set_flat

THREAT_MODEL = ("The attacker has the final model's weights and a candidate record with its label, and "
                "guesses membership from the model's loss on it (Yeom et al. 2018).")


@torch.no_grad()
def loss_scores(model: nn.Module, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                batch_size: int = 2048) -> np.ndarray:
    """Membership scores (negative per-record cross-entropy; higher = more likely a member)."""
    set_flat(model, params)
    model.eval()
    out = []
    for start in range(0, len(y), batch_size):
        logits = model(x[start : start + batch_size]).double()
        out.append(-F.cross_entropy(logits, y[start : start + batch_size], reduction="none").cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)
