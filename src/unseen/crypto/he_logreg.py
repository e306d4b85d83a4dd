"""Logistic regression trained on encrypted data (CKKS, TenSEAL): the server never sees a record or the model.

Roles, as in the IBM / Banco Bradesco HE pipeline:

- the **data owner** holds the secret key. It encrypts its standardized features column by column
  (one ciphertext per feature per block of ``slots`` records, with a ones column that carries the
  bias and masks the padding) and its labels, sends them once with an evaluation context that has no
  secret key, and each iteration sends the current weights, encrypted and replicated across slots;
- the **server** computes, on ciphertexts only, z = X w, the degree-3 least-squares approximation of
  the sigmoid on [-8, 8] (Kim et al. 2018: 0.5 + 0.15012 z - 0.001593 z^3), the error sigma(z) - y and
  its product with every feature column: the encrypted per-slot gradient contributions;
- the data owner decrypts them, sums the slots and takes the gradient step, then re-encrypts the
  new weights. SEAL has no bootstrapping, so a fresh encryption of the weights each iteration keeps the
  multiplicative depth at 4 (the TenSEAL tutorial refreshes the same way). The owner sees only
  quantities derived from its own data; the server sees ciphertexts.

Threat model: a semi-honest server learns nothing about the records, the labels or the model (CKKS
under RLWE at 128-bit security); it learns the data's shape (records, features). No differential
privacy: the owner's decrypted model is as revealing as a plaintext one.

``plaintext_reference`` runs the same algorithm without encryption, with the exact or the
polynomial sigmoid, so encryption error and approximation error can be told apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tenseal as ts

from unseen.crypto.he_plan import HEPlan, check, context, evaluation_context, plan_ckks

# Least-squares degree-3 fit of the sigmoid on [-8, 8] (Kim et al. 2018, "Secure logistic regression
# based on homomorphic encryption"): coefficients of 1, z, z^3.
SIGMOID3 = (0.5, 0.15012, -0.001593)
DEPTH = 4  # z = X w (1), a3 z * z^2 (2, 3), error * X (4)


@dataclass(frozen=True)
class EncryptedDataset:
    """What the server receives from the data owner: ciphertexts, the public evaluation context, sizes."""

    context: bytes
    features: list[list[bytes]]  # [feature][block], feature 0 is the ones (bias) column
    labels: list[bytes]  # [block]
    records: int

    @property
    def bytes(self) -> int:
        return len(self.context) + sum(len(c) for col in self.features for c in col) + sum(len(c) for c in self.labels)


@dataclass
class HELogRegResult:
    weights: np.ndarray  # bias first
    plan: HEPlan
    costs: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (x @ self.weights[1:] + self.weights[0] > 0).astype(np.int64)


def he_plan() -> HEPlan:
    """Depth 4 at scale 2^30, intermediate values below 2^12 (z^2 for |z| up to 64): N = 8192."""
    return plan_ckks(DEPTH, scale_bits=30, integer_bits=12)


def _blocks(column: np.ndarray, slots: int) -> list[np.ndarray]:
    padded = np.zeros(-(-len(column) // slots) * slots)
    padded[: len(column)] = column
    return [padded[i : i + slots] for i in range(0, len(padded), slots)]


def owner_encrypt(ctx: ts.Context, x: np.ndarray, y: np.ndarray, slots: int) -> EncryptedDataset:
    """The data owner's upload: column-packed features (ones column first) and labels."""
    columns = [np.ones(len(y)), *x.T]
    features = [[ts.ckks_vector(ctx, b).serialize() for b in _blocks(col, slots)] for col in columns]
    labels = [ts.ckks_vector(ctx, b).serialize() for b in _blocks(y.astype(np.float64), slots)]
    return EncryptedDataset(evaluation_context(ctx), features, labels, len(y))


def owner_weights(ctx: ts.Context, weights: np.ndarray, slots: int) -> list[bytes]:
    """The current weights, each replicated across the slots, freshly encrypted (the refresh)."""
    return [ts.ckks_vector(ctx, np.full(slots, w)).serialize() for w in weights]


def server_gradient(data: EncryptedDataset, weights: list[bytes]) -> list[bytes]:
    """The server's iteration on ciphertexts: per-slot contributions of (sigma3(X w) - y) * x_j, per feature."""
    ctx = ts.context_from(data.context)
    if ctx.is_private():
        raise ValueError("the context sent to the server holds the secret key: refusing to compute")
    w = [ts.ckks_vector_from(ctx, b) for b in weights]
    a0, a1, a3 = SIGMOID3
    grads: list[ts.CKKSVector | None] = [None] * len(w)
    for b in range(len(data.labels)):
        cols = [ts.ckks_vector_from(ctx, data.features[j][b]) for j in range(len(w))]
        z = cols[0] * w[0]
        for j in range(1, len(w)):
            z += cols[j] * w[j]
        error = (z * a3) * z.square() + z * a1 + a0 - ts.ckks_vector_from(ctx, data.labels[b])
        for j, col in enumerate(cols):
            term = error * col
            grads[j] = term if grads[j] is None else grads[j] + term
    return [g.serialize() for g in grads]  # type: ignore[union-attr]


def owner_step(ctx: ts.Context, grads: list[bytes], weights: np.ndarray, lr: float, records: int) -> np.ndarray:
    """Decrypt the per-slot contributions, sum them and take the gradient step."""
    g = np.array([sum(ts.ckks_vector_from(ctx, b).decrypt()) for b in grads])
    return weights - lr * g / records


def train_encrypted(x: np.ndarray, y: np.ndarray, *, iterations: int = 10, lr: float = 1.0,
                    plan: HEPlan | None = None, x_test: np.ndarray | None = None,
                    y_test: np.ndarray | None = None,
                    on_iteration: Callable[[int, int], None] | None = None) -> HELogRegResult:
    """Both roles in one process, with the bytes each way and each role's seconds counted."""
    plan = plan or he_plan()
    check(plan, DEPTH)  # before anything is encrypted
    costs = {"owner_seconds": 0.0, "server_seconds": 0.0, "bytes_to_server": 0, "bytes_to_owner": 0}
    t = time.perf_counter()
    ctx = context(plan)
    data = owner_encrypt(ctx, x, y, plan.slots)
    costs["owner_seconds"] += time.perf_counter() - t
    costs["bytes_to_server"] += data.bytes
    costs["upload_bytes"] = data.bytes
    costs["evaluation_context_bytes"] = len(data.context)
    weights = np.zeros(x.shape[1] + 1)
    result = HELogRegResult(weights, plan, costs)
    for it in range(iterations):
        t = time.perf_counter()
        enc_w = owner_weights(ctx, weights, plan.slots)
        costs["owner_seconds"] += time.perf_counter() - t
        costs["bytes_to_server"] += sum(len(b) for b in enc_w)
        t = time.perf_counter()
        grads = server_gradient(data, enc_w)
        costs["server_seconds"] += time.perf_counter() - t
        costs["bytes_to_owner"] += sum(len(b) for b in grads)
        t = time.perf_counter()
        weights = owner_step(ctx, grads, weights, lr, len(y))
        costs["owner_seconds"] += time.perf_counter() - t
        entry = {"iteration": it + 1}
        if x_test is not None and y_test is not None:
            entry["test_accuracy"] = float(np.mean(((x_test @ weights[1:] + weights[0]) > 0) == y_test))
        result.history.append(entry)
        if on_iteration is not None:
            on_iteration(it + 1, iterations)
    result.weights = weights
    costs["iterations"] = iterations
    costs["server_seconds_per_iteration"] = costs["server_seconds"] / max(iterations, 1)
    return result


def plaintext_reference(x: np.ndarray, y: np.ndarray, *, iterations: int = 10, lr: float = 1.0,
                        sigmoid: str = "exact") -> np.ndarray:
    """The same full-batch gradient descent without encryption (``sigmoid`` = 'exact' or 'poly3')."""
    xb = np.hstack([np.ones((len(y), 1)), x])
    w = np.zeros(xb.shape[1])
    for _ in range(iterations):
        z = xb @ w
        p = 1 / (1 + np.exp(-z)) if sigmoid == "exact" else SIGMOID3[0] + SIGMOID3[1] * z + SIGMOID3[2] * z**3
        w = w - lr * xb.T @ (p - y) / len(y)
    return w


def accuracy(weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(((x @ weights[1:] + weights[0]) > 0) == y))


def compare(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *, iterations: int = 10,
            lr: float = 1.0, on_iteration: Callable[[int, int], None] | None = None) -> dict[str, object]:
    """Encrypted training beside the same algorithm in plaintext: accuracies, gaps, seconds and bytes."""
    if len(np.unique(y)) > 2 or set(np.unique(y)) - {0, 1}:
        raise ValueError("encrypted logistic regression needs binary 0/1 labels")
    result = train_encrypted(x, y, iterations=iterations, lr=lr, on_iteration=on_iteration)
    exact = plaintext_reference(x, y, iterations=iterations, lr=lr)
    poly = plaintext_reference(x, y, iterations=iterations, lr=lr, sigmoid="poly3")
    enc_acc = accuracy(result.weights, x_test, y_test)
    return {
        "records": len(y), "features": x.shape[1], "iterations": iterations, "lr": lr,
        "encrypted_accuracy": enc_acc, "plaintext_accuracy": accuracy(exact, x_test, y_test),
        "plaintext_poly3_accuracy": accuracy(poly, x_test, y_test),
        "gap_points": 100 * (accuracy(exact, x_test, y_test) - enc_acc),
        "max_weight_error_vs_poly3": float(np.max(np.abs(result.weights - poly))),
        **{k: v for k, v in result.costs.items() if k != "iterations"},
        "plan": result.plan.describe(), "sigmoid": "0.5 + 0.15012 z - 0.001593 z^3 (least squares on [-8, 8])",
        "threat_model": "semi-honest server sees only ciphertexts and the data's shape; the data owner holds the "
                        "secret key and refreshes the encrypted weights each iteration; no differential privacy",
    }


__all__ = ["DEPTH", "SIGMOID3", "EncryptedDataset", "HELogRegResult", "accuracy", "compare", "he_plan", "owner_encrypt",
           "owner_step", "owner_weights", "plaintext_reference", "server_gradient", "train_encrypted"]
