"""Attribute inference on tabular data, beside the imputation baseline (Jayaraman & Evans 2022).

Threat model: the attacker knows a record's other attributes and its label, and wants its sensitive
attribute (say, sex). The model-based attack tries every value and keeps the one under which the
model's loss on the known label is lowest (Fredrikson et al. 2014; Yeom et al. 2018). Jayaraman &
Evans showed that such attacks often do no better than imputation, predicting the attribute from
the other attributes with population data and no access to the model; only the difference, and the
difference between training records and others, is leakage due to the model.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn
from torch.nn import functional as F

from unseen.federated.params import set_flat

THREAT_MODEL = ("The attacker knows a record's other attributes and label and the model, and infers a sensitive "
                "attribute; compared with imputation from population data (Jayaraman & Evans 2022).")


def one_hot_group(feature_names: list[str], attribute: str) -> list[int]:
    """The columns of a one-hot encoded attribute (``attribute_value`` names)."""
    cols = [i for i, n in enumerate(feature_names) if n.startswith(attribute + "_")]
    if len(cols) < 2:
        raise ValueError(f"no one-hot group {attribute!r} among the features")
    return cols


def true_values(x: np.ndarray, group: list[int]) -> np.ndarray:
    """Which value of the group each record has (the column holding the largest encoded value)."""
    return np.argmax(x[:, group], axis=1)


@torch.no_grad()
def model_attack(model: nn.Module, params: torch.Tensor, x: np.ndarray, y: np.ndarray, group: list[int]) -> np.ndarray:
    """For each record, the group value under which the model's loss on the true label is lowest."""
    set_flat(model, params)
    model.eval()
    on, off = x[:, group].max(), x[:, group].min()  # the encoded values of "has it" and "has not"
    losses = []
    for j in range(len(group)):
        trial = x.copy()
        trial[:, group] = off
        trial[:, group[j]] = on
        logits = model(torch.from_numpy(trial.astype(np.float32)))
        losses.append(F.cross_entropy(logits, torch.from_numpy(y), reduction="none").numpy())
    return np.argmin(np.stack(losses, axis=1), axis=1)


def imputation_baseline(x_population: np.ndarray, y_population: np.ndarray, x: np.ndarray, y: np.ndarray,
                        group: list[int]) -> np.ndarray:
    """Predict the group value from the other attributes and the label, trained on population records."""
    keep = [i for i in range(x.shape[1]) if i not in group]

    def features(a: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return np.hstack([a[:, keep], np.eye(int(max(labels.max(), y_population.max())) + 1)[labels]])

    clf = LogisticRegression(max_iter=2000)
    clf.fit(features(x_population, y_population), true_values(x_population, group))
    return clf.predict(features(x, y))


def attribute_inference_report(model: nn.Module, params: torch.Tensor, members: tuple[np.ndarray, np.ndarray],
                               non_members: tuple[np.ndarray, np.ndarray],
                               population: tuple[np.ndarray, np.ndarray], group: list[int]) -> dict[str, object]:
    """Accuracy of the model attack and of imputation on training records and on other records."""
    out: dict[str, object] = {"threat_model": THREAT_MODEL}
    majority = np.bincount(true_values(population[0], group)).argmax()
    for name, (x, y) in (("members", members), ("non_members", non_members)):
        truth = true_values(x, group)
        out[name] = {
            "model_attack_accuracy": float((model_attack(model, params, x, y, group) == truth).mean()),
            "imputation_accuracy": float((imputation_baseline(*population, x, y, group) == truth).mean()),
            "majority_accuracy": float((truth == majority).mean()),
            "records": int(len(y)),
        }
    return out


__all__ = ["THREAT_MODEL", "attribute_inference_report", "imputation_baseline", "model_attack", "one_hot_group",
           "true_values"]
