"""Partitioners: split training indices across simulated clients (pure functions, seeded).

Every sample lands in exactly one client. ``iid`` shuffles; ``dirichlet`` skews label proportions
(smaller alpha, more skew; Hsu et al. 2019); ``shards`` gives each client a few label-sorted shards
(McMahan et al. 2017); ``natural`` keeps existing silos (hospitals, writers) as clients.
"""

from __future__ import annotations

import numpy as np

from unseen.errors import SpecError

METHODS = ("iid", "dirichlet", "shards", "natural")


def partition(
    labels: np.ndarray,
    n_clients: int,
    method: str = "iid",
    *,
    seed: int = 0,
    alpha: float | None = None,
    shards_per_client: int = 2,
    groups: np.ndarray | None = None,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Return one sorted index array per client.

    Parameters
    ----------
    labels : class label of each training sample.
    n_clients : number of clients (for ``natural``, must equal the number of silos).
    method : one of ``iid``, ``dirichlet``, ``shards``, ``natural``.
    seed : seeds the partition; the same seed gives the same split.
    alpha : Dirichlet concentration (``dirichlet`` only), > 0.
    shards_per_client : shards per client (``shards`` only).
    groups : silo id of each sample (``natural`` only).
    min_size : ``dirichlet`` redraws until every client has at least this many samples.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if n_clients < 1:
        raise SpecError(f"federated.clients must be >= 1, got {n_clients}.")
    if method != "natural" and n_clients > n:
        raise SpecError(
            f"federated.clients = {n_clients} but the training set has only {n} samples: every client "
            f"needs at least one. Use fewer clients."
        )
    rng = np.random.default_rng(seed)
    if method == "iid":
        parts = np.array_split(rng.permutation(n), n_clients)
    elif method == "dirichlet":
        parts = _dirichlet(labels, n_clients, alpha, rng, min_size)
    elif method == "shards":
        parts = _shards(labels, n_clients, shards_per_client, rng)
    elif method == "natural":
        parts = _natural(groups, n_clients)
    else:
        raise SpecError(f"data.partition.method = {method!r} is unknown; use one of {', '.join(METHODS)}.")
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _dirichlet(
    labels: np.ndarray, n_clients: int, alpha: float | None, rng: np.random.Generator, min_size: int
) -> list[np.ndarray]:
    if alpha is None or not alpha > 0:
        raise SpecError(f"data.partition.alpha must be > 0 for the dirichlet partition, got {alpha}.")
    classes = np.unique(labels)
    min_size = min(min_size, len(labels) // n_clients)
    for _ in range(1000):
        parts: list[list[int]] = [[] for _ in range(n_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            props = rng.dirichlet(np.full(n_clients, alpha))
            cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.array(p) for p in parts]
    raise SpecError(
        f"could not draw a dirichlet(alpha={alpha}) partition giving each of {n_clients} clients at least "
        f"{min_size} samples in 1000 tries: raise data.partition.alpha or use fewer clients."
    )


def _shards(labels: np.ndarray, n_clients: int, per_client: int, rng: np.random.Generator) -> list[np.ndarray]:
    n_shards = n_clients * per_client
    if n_shards > len(labels):
        raise SpecError(
            f"{n_clients} clients x {per_client} shards = {n_shards} shards exceed the {len(labels)} samples: "
            f"lower data.partition.shards_per_client or federated.clients."
        )
    order = np.argsort(labels, kind="stable")
    shards = np.array_split(order, n_shards)
    assignment = rng.permutation(n_shards).reshape(n_clients, per_client)
    return [np.concatenate([shards[s] for s in row]) for row in assignment]


def _natural(groups: np.ndarray | None, n_clients: int) -> list[np.ndarray]:
    if groups is None:
        raise SpecError(
            "data.partition.method = 'natural' needs a dataset with silos (heart_disease, femnist, or your "
            "own file with data.silo_column set). Use 'iid' or 'dirichlet' for this dataset."
        )
    silos = np.unique(groups)
    if n_clients != len(silos):
        raise SpecError(
            f"federated.clients = {n_clients} but the dataset has {len(silos)} natural silos: set "
            f"federated.clients = {len(silos)} (or leave it unset) for the natural partition."
        )
    return [np.flatnonzero(groups == s) for s in silos]


def label_skew(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each client's label distribution and the global one.

    0 means every client sees the global mix; values near 1 mean clients see disjoint classes.
    """
    classes = np.unique(labels)
    global_dist = np.array([(labels == c).mean() for c in classes])
    distances = []
    for p in parts:
        if len(p) == 0:
            continue
        local = np.array([(labels[p] == c).mean() for c in classes])
        distances.append(0.5 * np.abs(local - global_dist).sum())
    return float(np.mean(distances))
