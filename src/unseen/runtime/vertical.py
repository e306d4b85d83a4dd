"""The vertical runner: split-network training over parties in one process, every message as bytes.

Per step, the label party (party 0) draws the batch and sends its ids to the other parties; each party
embeds its columns of those people and sends the embedding up; the label party takes its step and sends
each party the gradient for its embedding. Every message crosses :mod:`unseen.runtime.wire`, so the
byte counts are those of real payloads, and what a passive party is shown is exactly what it decoded,
which is what the label-leakage attack is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from unseen.attacks.label_leakage import cosine_scores, norm_scores
from unseen.audit import AuditResult, audit_scores
from unseen.federated.client import cosine_factor
from unseen.federated.vertical import SplitModel, bottom_forward, bottom_step, evaluate_split, top_step
from unseen.runtime.wire import decode, encode


@dataclass
class VerticalData:
    """Each party's columns of the aligned people (same row order in every party), and the labels."""

    train: list[torch.Tensor]
    y_train: torch.Tensor
    test: list[torch.Tensor]
    y_test: torch.Tensor


@dataclass
class SplitResult:
    """Per-epoch history; the last epoch's leakage audits; and its attack scores per aligned person
    (name -> (score by row, mask of the rows scored)), e.g. for a label-canary audit."""

    history: list[dict[str, Any]]
    leakage: dict[str, AuditResult]
    scores: dict[str, tuple[np.ndarray, np.ndarray]]


def _attack_scores(gradients: list[np.ndarray], batches: list[np.ndarray], rows: np.ndarray, labels: np.ndarray,
                   knowable: np.ndarray, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The norm and cosine attacks on one epoch of the gradients a passive party received (two classes
    only): for each, a score per aligned person (indexed by row) and the mask of people it scored."""
    n = len(knowable)
    if labels.min() == labels.max() or int(labels.max()) > 1:
        return {}
    g = np.concatenate(gradients)
    out = {}
    for name, (scores, scored) in (
        ("norm", (norm_scores(g), np.ones(len(g), dtype=bool))),
        ("cosine", cosine_scores(g, np.concatenate(batches), labels[rows], np.random.default_rng(seed),
                                 knowable[rows])),
    ):
        by_row, mask = np.zeros(n), np.zeros(n, dtype=bool)
        by_row[rows[scored]], mask[rows[scored]] = scores[scored], True
        out[name] = (by_row, mask)
    return out


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order in which the label party visits its ``n`` aligned people in one epoch."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def train_split(model: SplitModel, data: VerticalData, *, epochs: int, batch_size: int, lr: float,
                momentum: float = 0.0, weight_decay: float = 0.0, lr_schedule: str = "constant", seed: int = 0,
                leak_party: int | None = 1, attack_labels: torch.Tensor | None = None,
                knowable: np.ndarray | None = None,
                on_epoch: Callable[[dict[str, Any]], None] | None = None) -> SplitResult:
    """Train ``model`` with SGD, each party with its own optimizer (``lr_schedule``: "constant", or
    "cosine" decay to 0 over the epochs).

    Returns one history entry per epoch, and the label-leakage attacks on the last epoch: the gradients
    that ``leak_party`` (a passive party) received, scored by the norm and cosine attacks (None, or a
    single-party model: no attack), judged against ``attack_labels`` (default: the training labels; under
    label DP, the labels before randomization, which training never saw). The cosine attacker knows one
    positive per batch among the ``knowable`` people (default: everyone; label canaries are not).
    Each epoch's entry has the attacks' AUCs.
    """
    parties = len(model.bottoms)
    optimizers = [torch.optim.SGD(m.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
                  for m in (*model.bottoms, model.top)]
    n = len(data.y_train)
    history = []
    leakage: dict[str, AuditResult] = {}
    last: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    truth = (data.y_train if attack_labels is None else attack_labels).numpy()
    knowable = np.ones(n, dtype=bool) if knowable is None else knowable
    model.train(True)
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        if lr_schedule == "cosine":  # every party decays its learning rate on the same schedule
            for opt in optimizers:
                for group in opt.param_groups:
                    group["lr"] = lr * cosine_factor(epoch, epochs)
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
            last = _attack_scores(seen_grads, seen_batches, np.concatenate(seen_rows), truth, knowable, seed + epoch)
            entry["label_leakage_auc"] = {  # the AUC alone each epoch; the full ROC at the end
                name: float(roc_auc_score(truth[mask], scores[mask])) for name, (scores, mask) in last.items()
                if len(np.unique(truth[mask])) == 2}
            if epoch == epochs:
                leakage = {name: audit_scores(scores[mask & (truth == 1)], scores[mask & (truth == 0)])
                           for name, (scores, mask) in last.items()}
        history.append(entry)
        if on_epoch is not None:
            on_epoch(entry)
    return SplitResult(history, leakage, last)


def select_columns(x: torch.Tensor, columns: Sequence[np.ndarray]) -> list[torch.Tensor]:
    """Each party's columns of a feature matrix."""
    return [x[:, c].contiguous() for c in columns]


__all__ = ["SplitResult", "VerticalData", "epoch_order", "select_columns", "train_split"]
