"""In-process driver for a secure-aggregation round: routes the protocol's bytes, counts and times them.

The protocol itself is pure (:mod:`unseen.crypto.secagg`); this driver plays the network: it hands
each stage's messages to the other side, drops the clients a test or simulation says drop out before
a stage, and lets a caller tamper with messages in flight. A network runtime would do the same with
sockets and call the same functions.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unseen.crypto import secagg
from unseen.crypto.fixed_point import FixedPoint
from unseen.crypto.secagg import SecAggParams
from unseen.privacy.distributed_dp import DistributedDP, client_encode, plan_distributed

# (stage, sender, receiver, message) -> message: lets tests play a malicious network or party.
Tamper = Callable[[str, str, str, bytes], bytes]


@dataclass
class SecureSumResult:
    """The sum and what the round cost: bytes each way and seconds per stage, clients apart from the server."""

    total: np.ndarray
    survivors: list[int]
    bytes_up: dict[str, int] = field(default_factory=dict)
    bytes_down: dict[str, int] = field(default_factory=dict)
    client_seconds: dict[str, float] = field(default_factory=dict)
    server_seconds: dict[str, float] = field(default_factory=dict)

    def summary(self, clients: int) -> dict[str, float]:
        up, down = sum(self.bytes_up.values()), sum(self.bytes_down.values())
        return {
            "survivors": len(self.survivors), "bytes_up": up, "bytes_down": down,
            "bytes_up_per_client": up / clients, "client_seconds": sum(self.client_seconds.values()),
            "client_seconds_per_client": sum(self.client_seconds.values()) / clients,
            "server_seconds": sum(self.server_seconds.values()),
        }


def secure_sum(
    params: SecAggParams,
    inputs: Mapping[int, np.ndarray],
    drop_before: Mapping[str, set[int]] | None = None,
    tamper: Tamper | None = None,
) -> SecureSumResult:
    """Run one round for clients ``0 .. params.clients - 1``; raises :class:`SecAggAbort` if it cannot finish.

    ``drop_before[stage]`` lists clients that vanish before sending that stage's message (stages in
    :data:`unseen.crypto.secagg.STAGES`).
    """
    drop = {s: set(drop_before.get(s, set())) for s in secagg.STAGES} if drop_before else {}
    gone: set[int] = set()
    res = SecureSumResult(np.zeros(0), [])

    def alive(stage: str, clients: list[int]) -> list[int]:
        gone.update(drop.get(stage, set()))
        return [c for c in clients if c not in gone]

    def send(stage: str, direction: str, who: int, msg: bytes) -> bytes:
        if tamper is not None:
            sender, receiver = (f"client {who}", "server") if direction == "up" else ("server", f"client {who}")
            msg = tamper(stage, sender, receiver, msg)
        book = res.bytes_up if direction == "up" else res.bytes_down
        book[stage] = book.get(stage, 0) + len(msg)
        return msg

    def server_stage(stage: str, step: Callable[..., Any], *args: Any) -> Any:
        t = time.perf_counter()
        out = step(*args)
        res.server_seconds[stage] = res.server_seconds.get(stage, 0.0) + time.perf_counter() - t
        return out

    def client_stage(stage: str, receivers: list[int], step: Callable[[int, bytes | None], bytes],
                     down: Mapping[int, bytes] | None = None, down_stage: str = "",
                     deliver: Callable[[int, bytes], None] | None = None) -> dict[int, bytes]:
        """Each live client reads the server's message of the previous stage (if any) and answers.

        With ``deliver``, the server takes each answer as it arrives instead of the batch at the end.
        """
        up: dict[int, bytes] = {}
        for c in alive(stage, receivers):
            incoming = send(down_stage, "down", c, down[c]) if down is not None else None
            t = time.perf_counter()
            msg = step(c, incoming)
            res.client_seconds[stage] = res.client_seconds.get(stage, 0.0) + time.perf_counter() - t
            if deliver is None:
                up[c] = send(stage, "up", c, msg)
            else:
                server_stage(stage, deliver, c, send(stage, "up", c, msg))
        return up

    states: dict[int, secagg.ClientState] = {}

    def advertise(c: int, _: bytes | None) -> bytes:
        states[c], msg = secagg.client_advertise(params, c)
        return msg

    up = client_stage("advertise", list(range(params.clients)), advertise)
    server, down = server_stage("advertise", secagg.server_route_keys, params, up)
    up = client_stage("share_keys", sorted(down), lambda c, m: secagg.client_share_keys(states[c], m),
                      down, "advertise")
    down = server_stage("share_keys", secagg.server_route_shares, server, up)
    # Masked inputs are summed as they arrive: the server holds one vector, not one per client.
    client_stage("masked_input", sorted(down), lambda c, m: secagg.client_masked_input(states[c], m, inputs[c]),
                 down, "share_keys", deliver=lambda c, m: secagg.server_receive_masked(server, c, m))
    down = server_stage("masked_input", secagg.server_close_masked, server)
    up = client_stage("unmask", sorted(down), lambda c, m: secagg.client_unmask(states[c], m), down, "masked_input")
    res.total, res.survivors = server_stage("unmask", secagg.server_unmask, server, up)
    return res


__all__ = ["SecureSumResult", "Tamper", "secure_sum"]


# ---------------------------------------------------------------- the federated round's secure mean
@dataclass(frozen=True)
class SecureAggregation:
    """How a federated round hides individual updates: the backend and its public parameters.

    ``clip`` bounds each update's L2 norm (clients clip before encoding; it sets the fixed-point range).
    ``weighted`` appends the client's weight to its vector so the server can divide the weighted sum
    by the summed weight (FedAvg); DP-FedAvg uses an unweighted sum. ``max_weight`` is the public cap
    on a client's weight (its sample count).
    """

    backend: str  # "secagg", "secagg+" or "ckks"
    clip: float
    bits: int = 32
    neighbours: int | None = None
    threshold: int | None = None
    weighted: bool = True
    max_weight: float = 1.0
    # Distributed DP: clients add discrete Gaussian noise of total std noise_multiplier * sensitivity,
    # calibrated for at least ceil(min_survivor_fraction * n) clients finishing the round.
    noise_multiplier: float | None = None
    min_survivor_fraction: float = 0.9


@dataclass
class SecureRound:
    """What the server learns from a secure round: the sum of (weighted) updates and of weights, and costs."""

    total: np.ndarray
    weight: float
    survivors: list[int]
    stats: dict[str, float]


def distributed_plan(config: SecureAggregation, clients: int, dim: int) -> tuple[DistributedDP, FixedPoint]:
    """The distributed-DP parameters of a round of ``clients`` (noise calibrated for the minimum survivors)."""
    min_survivors = max(1, math.ceil(config.min_survivor_fraction * clients))
    return plan_distributed(config.noise_multiplier or 0.0, config.clip, dim, clients, min_survivors, config.bits)


def _noise_rng(seed: int | None, round_index: int, client: int) -> np.random.Generator:
    # Seeded for reproducible research runs; from the OS CSPRNG's entropy otherwise.
    if seed is None:
        return np.random.default_rng(np.random.SeedSequence())
    return np.random.default_rng([seed, round_index, client, 0xDD])


def secure_params(config: SecureAggregation, clients: int, dim: int, round_index: int, seed: int) -> SecAggParams:
    """The public parameters of one round (the graph is drawn from the run's seed and the round)."""
    if config.backend == "secagg":
        neighbours = None
    else:
        neighbours = config.neighbours or secagg.default_neighbours(clients)
        neighbours = min(neighbours, clients - 1)
    degree = clients - 1 if neighbours is None else neighbours
    threshold = config.threshold or secagg.default_threshold(degree)
    return SecAggParams(clients, threshold, dim, config.bits, neighbours, graph_seed=seed * 1_000_003 + round_index,
                        round_tag=f"unseen/round/{round_index}".encode())


def secure_round(
    config: SecureAggregation,
    updates: Mapping[int, np.ndarray],
    weights: Mapping[int, float],
    round_index: int,
    seed: int,
    drop_before_input: set[int] = frozenset(),  # type: ignore[assignment]
    noise_seed: int | None = None,
) -> SecureRound:
    """Clip, weight, encode and securely sum one round's updates; raise SecAggAbort if the round fails.

    Clients are the keys of ``updates``; those in ``drop_before_input`` vanish after key sharing,
    the case that needs dropout recovery.
    """
    from unseen.crypto.fixed_point import clip_l2, decode_sum, encode_update, plan_fixed_point

    order = sorted(updates)
    n = len(order)
    dim = next(iter(updates.values())).size + (1 if config.weighted else 0)

    def weight(c: int) -> float | None:
        return min(float(weights[c]), config.max_weight) / config.max_weight if config.weighted else None

    def vector(c: int) -> np.ndarray:
        v = clip_l2(updates[c], config.clip)
        w = weight(c)
        if w is None:
            return v
        out = np.empty(v.size + 1)
        np.multiply(v, w, out=out[:-1])
        out[-1] = w
        return out

    if config.backend == "ckks":
        from unseen.crypto import ckks

        total, stats = ckks.encrypted_sum({i: vector(c) for i, c in enumerate(order)
                                           if c not in drop_before_input})
        survivors = [c for c in order if c not in drop_before_input]
    else:
        params = secure_params(config, n, dim, round_index, seed)
        index = {c: i for i, c in enumerate(order)}
        if config.noise_multiplier is not None:
            dd, plan = distributed_plan(config, n, dim)
            params = dataclasses.replace(params, min_survivors=dd.min_survivors)
            start = time.perf_counter()
            encoded = {index[c]: client_encode(vector(c), dd, plan, _noise_rng(noise_seed, round_index, c))
                       for c in order}
        else:
            plan = plan_fixed_point(n, max(config.clip, 1.0), config.bits)
            start = time.perf_counter()
            encoded = {index[c]: encode_update(updates[c], config.clip, plan, weight(c)) for c in order}
        encode_seconds = time.perf_counter() - start
        result = secure_sum(params, encoded, {"masked_input": {index[c] for c in drop_before_input}})
        result.client_seconds["clip_and_encode"] = encode_seconds
        start = time.perf_counter()
        total = decode_sum(result.total, plan)
        result.server_seconds["decode"] = time.perf_counter() - start
        survivors = [order[i] for i in result.survivors]
        stats = {**result.summary(n), "threshold": params.threshold, "neighbours": params.degree,
                 "max_error_per_coordinate": plan.max_error}
    if config.weighted:
        return SecureRound(total[:-1] * config.max_weight, float(total[-1]) * config.max_weight, survivors, stats)
    return SecureRound(total, float(len(survivors)), survivors, stats)


__all__ += ["SecureAggregation", "SecureRound", "secure_params", "secure_round"]
