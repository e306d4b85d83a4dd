"""The vertical runner: split-network training over parties in one process, every message as bytes.

Per step, the label party (party 0) draws the batch and sends its ids to the other parties; each party
embeds its columns of those people and sends the embedding up; the label party takes its step and sends
each party the gradient for its embedding. Every message crosses :mod:`unseen.runtime.wire`, so the
byte counts are those of real payloads, and what a passive party is shown is exactly what it decoded,
which is what the label-leakage attack is given.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from unseen.attacks.label_leakage import cosine_scores, norm_scores
from unseen.audit import AuditResult, audit_scores
from unseen.federated.vertical import SplitModel, bottom_forward, bottom_step, evaluate_split, top_step
from unseen.runtime.wire import decode, encode


@dataclass
class VerticalData:
    """Each party's columns of the aligned people (same row order in every party), and the labels."""

    train: list[torch.Tensor]
    y_train: torch.Tensor
    test: list[torch.Tensor]
    y_test: torch.Tensor


def _attack_scores(gradients: list[np.ndarray], batches: list[np.ndarray], labels: np.ndarray,
                   seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The norm and cosine attacks' scores of the positives and of the negatives, on one epoch of the
    gradients a passive party received (two classes only)."""
    if labels.min() == labels.max() or int(labels.max()) > 1:
        return {}
    g = np.concatenate(gradients)
    norm = norm_scores(g)
    out = {"norm": (norm[labels == 1], norm[labels == 0])}
    cosine, scored = cosine_scores(g, np.concatenate(batches), labels, np.random.default_rng(seed))
    cs, cl = cosine[scored], labels[scored]
    if cl.min() != cl.max():
        out["cosine"] = (cs[cl == 1], cs[cl == 0])
    return out


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order in which the label party visits its ``n`` aligned people in one epoch."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def train_split(model: SplitModel, data: VerticalData, *, epochs: int, batch_size: int, lr: float,
                momentum: float = 0.0, weight_decay: float = 0.0, lr_schedule: str = "constant", seed: int = 0,
                leak_party: int | None = 1, attack_labels: torch.Tensor | None = None,
                on_epoch: Callable[[dict[str, Any]], None] | None = None
                ) -> tuple[list[dict[str, Any]], dict[str, AuditResult]]:
    """Train ``model`` with SGD, each party with its own optimizer (``lr_schedule``: "constant", or
    "cosine" decay to 0 over the epochs).

    Returns one history entry per epoch, and the label-leakage attacks on the last epoch: the gradients
    that ``leak_party`` (a passive party) received, scored by the norm and cosine attacks (None, or a
    single-party model: no attack), judged against ``attack_labels`` (default: the training labels; under
    label DP, the true labels, which training never saw). Each epoch's entry has the attacks' AUCs.
    """
    parties = len(model.bottoms)
    optimizers = [torch.optim.SGD(m.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
                  for m in (*model.bottoms, model.top)]
    n = len(data.y_train)
    history = []
    leakage: dict[str, AuditResult] = {}
    model.train(True)
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        if lr_schedule == "cosine":  # every party decays its learning rate on the same schedule
            for opt in optimizers:
                for group in opt.param_groups:
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))
        order = epoch_order(n, seed, epoch)
        up = down = 0
        losses = []
        seen_grads: list[np.ndarray] = []
        seen_batches: list[np.ndarray] = []
        seen_rows: list[np.ndarray] = []
        for step, start in enumerate(range(0, n, batch_size)):
            idx = order[start : start + batch_size]
            ids = encode(idx)  # label party -> each other party: whose rows to use
            down += len(ids) * (parties - 1)
            embeddings, sent = [], []
            for p in range(parties):
                rows = idx if p == 0 else decode(ids)
                h = bottom_forward(model.bottoms[p], data.train[p][rows])
                embeddings.append(h)
                if p > 0:  # party p -> label party
                    payload = encode(h)
                    up += len(payload)
                    sent.append(decode(payload))
            loss, grads = top_step(model.top, optimizers[-1], [embeddings[0], *sent], data.y_train[idx])
            losses.append(loss)
            for p in range(parties):
                g = grads[p]
                if p > 0:  # label party -> party p
                    payload = encode(g)
                    down += len(payload)
                    g = decode(payload)
                    if p == leak_party:
                        seen_grads.append(g.double().numpy())
                        seen_batches.append(np.full(len(idx), step))
                        seen_rows.append(idx.numpy())
                bottom_step(optimizers[p], embeddings[p], g)
        train_seconds = time.perf_counter() - started  # the protocol's steps, without evaluation and attacks
        test_loss, test_acc = evaluate_split(model, data.test, data.y_test)
        entry: dict[str, Any] = {
            "round": epoch, "train_loss": float(np.mean(losses)), "test_loss": test_loss, "test_accuracy": test_acc,
            "seconds": train_seconds, "bytes_up": up, "bytes_down": down,
        }
        if seen_grads:
            truth = data.y_train if attack_labels is None else attack_labels
            labels = truth[np.concatenate(seen_rows)].numpy()
            scores = _attack_scores(seen_grads, seen_batches, labels, seed + epoch)
            entry["label_leakage_auc"] = {  # the AUC alone each epoch; the full audit (ROC, eps-hat) at the end
                name: float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))
                for name, (pos, neg) in scores.items()}
            if epoch == epochs:
                leakage = {name: audit_scores(pos, neg) for name, (pos, neg) in scores.items()}
        history.append(entry)
        if on_epoch is not None:
            on_epoch(entry)
    return history, leakage


def select_columns(x: torch.Tensor, columns: Sequence[np.ndarray]) -> list[torch.Tensor]:
    """Each party's columns of a feature matrix."""
    return [x[:, c].contiguous() for c in columns]


__all__ = ["VerticalData", "epoch_order", "select_columns", "train_split"]
