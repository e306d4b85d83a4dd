"""Model inversion (Fredrikson, Jha & Ristenpart 2015): class representatives from a model's weights.

Threat model: the attacker has the model (white box) and a class label, and searches for the input
the model finds most typical of that class (gradient descent on the input, with a total-variation
prior that favours natural images). When a class is one person (face recognition), the
representative can look like them; for a class of many people it shows what the class has in common.
Success is judged by an independent evaluation model: does it see the representative as the class?
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from unseen.attacks.gradient_inversion import total_variation
from unseen.federated.params import set_flat

THREAT_MODEL = ("White box: the attacker has the model's weights and a class label, and reconstructs the input "
                "the model finds most typical of that class (Fredrikson et al. 2015).")


def class_representatives(model: nn.Module, params: torch.Tensor, classes: list[int], shape: tuple[int, ...], *,
                          steps: int = 300, lr: float = 0.05, tv_weight: float = 0.05,
                          bounds: tuple[float, float] | None = None, seed: int = 0) -> torch.Tensor:
    """One input per class that minimises the model's loss for that class plus a TV prior."""
    set_flat(model, params)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = (torch.randn((len(classes), *shape), generator=torch.Generator().manual_seed(seed)) * 0.1).requires_grad_(True)
    target = torch.tensor(classes)
    optimizer = torch.optim.Adam([x], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), target) + tv_weight * total_variation(x)
        loss.backward()
        optimizer.step()
        if bounds is not None:
            with torch.no_grad():
                x.clamp_(*bounds)
    for p in model.parameters():
        p.requires_grad_(True)
    return x.detach()


@torch.no_grad()
def inversion_report(representatives: torch.Tensor, classes: list[int], evaluator: nn.Module,
                     evaluator_params: torch.Tensor, class_means: torch.Tensor) -> dict[str, object]:
    """How recognisable the representatives are: the evaluation model's accuracy on them, and their
    cosine similarity to the true class mean beside the best other class mean."""
    set_flat(evaluator, evaluator_params)
    evaluator.eval()
    predicted = evaluator(representatives).argmax(1)
    flat = representatives.reshape(len(classes), -1)
    means = class_means.reshape(class_means.shape[0], -1)
    cos = F.cosine_similarity(flat[:, None, :], means[None, :, :], dim=2)  # (representatives, classes)
    own = cos[torch.arange(len(classes)), torch.tensor(classes)]
    nearest = cos.argmax(1)
    return {
        "evaluator_accuracy": float((predicted == torch.tensor(classes)).float().mean()),
        "nearest_class_mean_accuracy": float((nearest == torch.tensor(classes)).float().mean()),
        "cosine_to_own_class_mean": own.tolist(),
        "threat_model": THREAT_MODEL,
    }


__all__ = ["THREAT_MODEL", "class_representatives", "inversion_report"]
