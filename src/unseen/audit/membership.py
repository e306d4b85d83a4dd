"""Membership audit with reference models: train a target and references, run loss, LiRA and RMIA.

The audit set ("pool") holds candidate records; a random half are the target's training set (the
members). Each reference model trains on a random half of the pool, arranged so that every record is
IN for half of the references and OUT for the others (the online setting of Carlini et al. 2022 and
Zarifzadeh et al. 2024). RMIA's population records z are the pool's records themselves. Reference
models use the target's recipe (DP-SGD included, when the target used it): the attacker is assumed
to know how the model was trained.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from unseen.attacks.membership import (
    LIRA_THREAT_MODEL,
    MARGIN_THREAT_MODEL,
    RMIA_THREAT_MODEL,
    THREAT_MODEL,
    lira_scores,
    loss_scores,
    margin_scores,
    rmia_scores,
    true_class_logits,
)
from unseen.audit.auditor import audit_scores
from unseen.federated.client import LocalTraining, local_update
from unseen.federated.params import get_flat, set_flat
from unseen.models import init_model
from unseen.privacy.dpsgd import DPSGD, dp_sgd_update

ATTACKS = ("loss", "margin", "lira", "lira_offline", "rmia")


@dataclass(frozen=True)
class Recipe:
    """How the target (and every reference model) is trained."""

    model: str
    input_shape: tuple[int, ...]
    n_classes: int
    training: LocalTraining
    hidden: tuple[int, ...] = (64,)
    dp: DPSGD | None = None


def train(recipe: Recipe, x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """A freshly initialised model trained on ``(x, y)``; returns the module and its flat weights."""
    model = init_model(recipe.model, recipe.input_shape, recipe.n_classes, seed=seed, hidden=recipe.hidden)
    model = model.to(x.device)
    start = get_flat(model)
    gen = torch.Generator().manual_seed(seed)
    if recipe.dp is not None:
        result = dp_sgd_update(model, start, x, y, recipe.training, recipe.dp, gen)
    else:
        result = local_update(model, start, x, y, recipe.training, gen)
    return model, start.cpu() + result.delta


def balanced_inclusion(references: int, records: int, rng: np.random.Generator) -> np.ndarray:
    """(references x records) booleans: each record is IN for half the references (rounded at random)."""
    out = np.zeros((references, records), dtype=bool)
    for j in range(records):
        k = references // 2 + (rng.random() < 0.5 if references % 2 else 0)
        out[rng.permutation(references)[:k], j] = True
    return out


THREAT = {"loss": THREAT_MODEL, "margin": MARGIN_THREAT_MODEL, "lira": LIRA_THREAT_MODEL, "lira_offline": LIRA_THREAT_MODEL,
          "rmia": RMIA_THREAT_MODEL}


def attack_scores(model: torch.nn.Module, target: torch.Tensor, recipe: Recipe, pool_x: torch.Tensor,
                  pool_y: torch.Tensor, *, references: int = 2, attacks: tuple[str, ...] = ("loss", "rmia", "lira"),
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Each attack's score for every pool record against the target weights ``target``.

    Reference models train with ``recipe`` on balanced random halves of the pool.
    """
    rng = np.random.default_rng([seed, 0xEEF])
    n = len(pool_y)
    target_p, target_phi = true_class_logits(model, target, pool_x, pool_y)
    inclusion = balanced_inclusion(references, n, rng) if references else np.zeros((0, n), dtype=bool)
    ref_p, ref_phi = [], []
    if set(attacks) - {"loss", "margin"}:
        for r in range(references):
            mask = torch.from_numpy(inclusion[r]).to(pool_x.device)
            ref_model, params = train(recipe, pool_x[mask], pool_y[mask], seed + 1000 + r)
            p, phi = true_class_logits(ref_model, params, pool_x, pool_y)
            ref_p.append(p)
            ref_phi.append(phi)
    scores: dict[str, np.ndarray] = {}
    if "loss" in attacks:
        scores["loss"] = loss_scores(model, target, pool_x, pool_y)
    if "margin" in attacks:
        scores["margin"] = margin_scores(model, target, pool_x, pool_y)
    if "lira" in attacks:
        scores["lira"] = lira_scores(target_phi, np.array(ref_phi), inclusion, online=True)
    if "lira_offline" in attacks:
        scores["lira_offline"] = lira_scores(target_phi, np.array(ref_phi), inclusion, online=False)
    if "rmia" in attacks:
        scores["rmia"] = rmia_scores(target_p, np.array(ref_p), target_p, np.array(ref_p))
    return scores


def membership_audit(recipe: Recipe, pool_x: torch.Tensor, pool_y: torch.Tensor, *, references: int = 2,
                     attacks: tuple[str, ...] = ("loss", "rmia", "lira"), seed: int = 0, delta: float = 0.0,
                     members: np.ndarray | None = None) -> dict[str, Any]:
    """Train the target on half the pool and ``references`` reference models; score every attack."""
    unknown = sorted(set(attacks) - set(ATTACKS))
    if unknown:
        raise ValueError(f"unknown attacks {unknown}: use {', '.join(ATTACKS)}")
    if references < 1 and set(attacks) - {"loss"}:
        raise ValueError("LiRA and RMIA need at least 1 reference model")
    rng = np.random.default_rng([seed, 0xA0D17])
    n = len(pool_y)
    if members is None:
        members = np.zeros(n, dtype=bool)
        members[rng.permutation(n)[: n // 2]] = True
    timings: dict[str, float] = {}
    t = time.perf_counter()
    model, target = train(recipe, pool_x[torch.from_numpy(members).to(pool_x.device)],
                          pool_y[torch.from_numpy(members).to(pool_x.device)], seed)
    timings["target_training"] = time.perf_counter() - t
    t = time.perf_counter()
    scores = attack_scores(model, target, recipe, pool_x, pool_y, references=references, attacks=attacks,
                           seed=seed)
    timings["reference_training"] = time.perf_counter() - t
    with torch.no_grad():
        set_flat(model, target)
        model.eval()
        pred = model(pool_x).argmax(1)
        accuracy = {"members": float((pred == pool_y)[torch.from_numpy(members)].float().mean()),
                    "non_members": float((pred == pool_y)[torch.from_numpy(~members)].float().mean())}
    out: dict[str, Any] = {"references": references, "pool": n, "members": int(members.sum()),
                           "target_accuracy": accuracy, "seconds": timings}
    for name, s in scores.items():
        res = audit_scores(s[members], s[~members], delta=delta)
        out[name] = {**res.to_dict(), "threat_model": THREAT[name],
                     "references": references if name not in ("loss", "margin") else 0,
                     "roc": {"fpr": res.fpr.tolist(), "tpr": res.tpr.tolist()}}
    return out


__all__ = ["ATTACKS", "THREAT", "Recipe", "attack_scores", "balanced_inclusion", "membership_audit", "train"]
