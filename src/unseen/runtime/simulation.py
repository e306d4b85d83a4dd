"""In-process simulation runner: the federated round loop, with every payload serialized.

The runner only moves data and calls the pure algorithms in :mod:`unseen.federated`: sample clients,
broadcast the global model, run each client's ``local_update``, decode and screen the updates,
aggregate, apply the server optimizer, evaluate. Randomness is counter-based: the clients of round
``r`` are drawn from ``(seed, r)`` and client ``c``'s batch order from ``(seed, r, c)``, so a run
resumed from round ``k`` replays rounds ``k+1..`` exactly as an uninterrupted run would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from unseen.crypto.secagg import SecAggAbort
from unseen.federated.aggregate import aggregate
from unseen.federated.client import LocalTraining, evaluate
from unseen.federated.server import ServerOptimizer, init_state, server_step
from unseen.federated.validate import Rejection, check_update, screen_updates
from unseen.privacy.accounting import GaussianLedger
from unseen.privacy.dp_fedavg import DPFedAvg, dp_fedavg_aggregate, dp_fedavg_from_sum
from unseen.privacy.dpsgd import DPSGD, steps_per_epoch
from unseen.runtime import wire
from unseen.runtime.clients import (
    ClientPool,
    client_generator,
    client_pool,
    client_update,
    dp_rate,
    train_clients,
)
from unseen.runtime.secure import SecureAggregation, secure_round


@dataclass(frozen=True)
class Adversary:
    """Clients ``0 .. count-1`` send corrupted updates (see :mod:`unseen.federated.adversary`)."""

    count: int
    kind: str
    factor: float


@dataclass
class SimulationPlan:
    """Everything a simulated run needs; built by :mod:`unseen.experiment` from a spec."""

    model: nn.Module
    clients: list[tuple[torch.Tensor, torch.Tensor]]
    test: tuple[torch.Tensor, torch.Tensor]
    local: LocalTraining
    server: ServerOptimizer
    rounds: int
    clients_per_round: int
    seed: int
    rule: str = "mean"
    trim_fraction: float = 0.1
    byzantine: int = 0
    max_update_norm: float | None = None
    max_norm_ratio: float | None = None
    adversary: Adversary | None = None
    serialize: bool = True  # False only for centralized training, where nothing crosses a network
    eval_every: int = 1
    eval_batch_size: int = 2048
    dp_sgd: DPSGD | None = None  # record-level DP inside every client (or the central trainer)
    client_dp_rates: list[float] | None = None  # each client's Poisson rate q under dp_sgd
    dp_fedavg: DPFedAvg | None = None  # user-level DP at the server
    accountant: str = "pld"
    budget: tuple[float, float] | None = None  # (epsilon, delta): halt before a round would exceed it
    secure: SecureAggregation | None = None  # the server sees only the sum of the round's updates
    dropout: float = 0.0  # fraction of each round's clients that vanish after training (simulated stragglers)
    # One-run audit: canary inputs, their wrong labels, which were planted, and the initial weights.
    canaries: tuple[torch.Tensor, torch.Tensor, np.ndarray, torch.Tensor] | None = None
    prior_epsilon: float = 0.0  # DP statistics released before on the same people (basic composition)
    # Where clients train (speed only: the updates are the same either way, within float tolerance).
    vectorize: bool = False  # stack the round's clients and train them together with torch.func
    chunk: int = 16  # clients per vectorized call (bounds memory)
    workers: int = 1  # forked worker processes (or Ray actors) that train slices of each round
    worker_threads: int = 1
    backend: str = "local"  # "local" or "ray"
    ray_address: str | None = None
    lr_schedule: str = "constant"  # or "cosine": the clients' learning rate decays over the rounds
    # Central training: one client whose optimizer state (momentum, Adam moments) carries from one epoch
    # ("round") to the next, as in a plain training loop.
    carry_optimizer_state: bool = False


@dataclass
class SimulationState:
    """The state between rounds: what a checkpoint holds."""

    round: int
    params: torch.Tensor
    server_state: dict[str, torch.Tensor]
    history: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    # Privacy ledgers: "user" (DP-FedAvg) and/or one per client index (DP-SGD), plus the current clip.
    ledgers: dict[str, GaussianLedger] = field(default_factory=dict)
    clip: float | None = None
    halted: str | None = None
    optimizer_state: dict[str, torch.Tensor] = field(default_factory=dict)  # central training's, between epochs

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round, "params": self.params, "server_state": self.server_state,
            "history": self.history, "rejections": self.rejections,
            "ledgers": {k: v.to_dict() for k, v in self.ledgers.items()}, "clip": self.clip, "halted": self.halted,
            "optimizer_state": self.optimizer_state,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SimulationState:
        ledgers = {k: GaussianLedger.from_dict(v) for k, v in d.get("ledgers", {}).items()}
        return cls(d["round"], d["params"], d["server_state"], list(d["history"]), list(d["rejections"]),
                   ledgers, d.get("clip"), d.get("halted"), dict(d.get("optimizer_state", {})))


def initial_state(plan: SimulationPlan, params: torch.Tensor) -> SimulationState:
    ledgers = {}
    if plan.dp_fedavg is not None:
        ledgers["user"] = GaussianLedger(plan.accountant)
    if plan.dp_sgd is not None:
        ledgers.update({str(c): GaussianLedger(plan.accountant) for c in range(len(plan.clients))})
    if plan.prior_epsilon:  # DP statistics released before on the same people: one ledger for both
        for ledger in ledgers.values():
            ledger.record_pure(plan.prior_epsilon)
    clip = plan.dp_fedavg.clip if plan.dp_fedavg is not None else None
    return SimulationState(0, params.detach().cpu().clone(), init_state(plan.server, params), ledgers=ledgers, clip=clip)


def poisson_sample_clients(n_clients: int, rate: float, seed: int, round_index: int) -> list[int]:
    """Each client joins the round independently with probability ``rate`` (what DP accounting assumes)."""
    rng = np.random.default_rng([seed, round_index])
    return [int(c) for c in np.flatnonzero(rng.random(n_clients) < rate)]


def server_noise_generator(seed: int, round_index: int) -> torch.Generator:
    """The server's noise stream for one round, apart from every client stream."""
    return client_generator(seed, round_index, -1 % 2**32)


def sample_clients(n_clients: int, k: int, seed: int, round_index: int) -> list[int]:
    """The clients of one round: ``k`` of ``n_clients`` without replacement, from ``(seed, round)``."""
    if k >= n_clients:
        return list(range(n_clients))
    rng = np.random.default_rng([seed, round_index])
    return sorted(int(c) for c in rng.choice(n_clients, size=k, replace=False))


def dropped_clients(selected: list[int], fraction: float, seed: int, round_index: int) -> set[int]:
    """The clients of a round that vanish after training, drawn from ``(seed, round)``."""
    count = int(round(fraction * len(selected)))
    if count == 0:
        return set()
    rng = np.random.default_rng([seed, round_index, 0xD0])
    return {int(c) for c in rng.choice(selected, size=count, replace=False)}


STAGES = ("client_training", "serialize", "secure_aggregation", "screen_and_aggregate", "evaluate", "accounting")


@contextmanager
def _timed(stages: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        stages[name] += time.perf_counter() - start


RoundCallback = Callable[[SimulationState, dict[str, Any]], None]
ClientCallback = Callable[[int, int], None]


def run_round(
    plan: SimulationPlan, state: SimulationState, on_client: ClientCallback | None = None,
    pool: ClientPool | None = None,
) -> tuple[SimulationState, dict[str, Any]]:
    """Run round ``state.round + 1`` and return the new state and the round's metrics.

    Clients train in ``pool``'s workers when one is given, else in this process.
    """
    r = state.round + 1
    start = time.perf_counter()
    if plan.dp_fedavg is not None and not plan.dp_fedavg.distributed:
        selected = poisson_sample_clients(len(plan.clients), plan.dp_fedavg.client_rate, plan.seed, r)
    else:
        selected = sample_clients(len(plan.clients), plan.clients_per_round, plan.seed, r)
    ledgers = {k: GaussianLedger.from_dict(v.to_dict()) for k, v in state.ledgers.items()}
    stages: dict[str, float] = {s: 0.0 for s in STAGES}
    with _timed(stages, "serialize"):
        broadcast = wire.encode(state.params) if plan.serialize else b""
    bytes_down = len(broadcast) * len(selected)

    gone = dropped_clients(selected, plan.dropout, plan.seed, r)
    with _timed(stages, "serialize"):
        params = wire.decode(broadcast) if plan.serialize else state.params
    trained_so_far = 0

    def one_done() -> None:
        nonlocal trained_so_far
        trained_so_far += 1
        if on_client is not None:
            on_client(trained_so_far, len(selected))

    with _timed(stages, "client_training"):
        if plan.carry_optimizer_state:
            results = train_clients(plan, params, selected, r, one_done, state.optimizer_state)
        elif pool is not None:
            results = pool.train(params, selected, r, one_done)
        else:
            results = train_clients(plan, params, selected, r, one_done)
    optimizer_state = state.optimizer_state
    if plan.carry_optimizer_state:
        optimizer_state = next((res.optimizer_state for res in results.values()
                                if res.optimizer_state is not None), optimizer_state)
    received: dict[int, object] = {}
    sizes: dict[int, int] = {}
    losses: dict[int, float] = {}
    bytes_up = 0
    for c in selected:
        result = results[c]
        if plan.dp_sgd is not None:
            ledgers[str(c)].record(plan.dp_sgd.noise_multiplier, dp_rate(plan, c), result.steps)
        update = result.delta
        with _timed(stages, "serialize"):
            if plan.secure is not None:
                # It travels masked or encrypted inside the protocol, which also plays the dropouts.
                received[c] = update
            elif c in gone:
                pass  # a dropped client trained, then vanished before sending anything
            elif plan.serialize:
                payload = wire.encode(update)
                bytes_up += len(payload)
                try:
                    received[c] = wire.decode(payload)
                except wire.WireError as exc:
                    received[c] = exc
            else:
                received[c] = update
        sizes[c], losses[c] = result.num_samples, result.mean_loss

    metrics: dict[str, Any] = {"round": r, "clients": len(selected)}
    if gone:
        metrics["dropped"] = len(gone)
    params, server_state, clip = state.params, state.server_state, state.clip
    aggregate_start = time.perf_counter()
    if plan.secure is not None:
        # The server never sees an update: clients check their own, the protocol checks shapes and ranges.
        rejected = [Rejection(r, c, f"client-side check before encoding: {why}") for c in selected
                    if c not in gone and (why := check_update(received[c], state.params.numel())) is not None]
        bad = {j.client for j in rejected}
        senders = {c: received[c].double().numpy() for c in selected if c not in bad}  # type: ignore[union-attr]
        try:
            outcome = secure_round(plan.secure, senders, sizes, r, plan.seed, gone & set(senders),
                                   noise_seed=None if plan.dp_fedavg is None or plan.dp_fedavg.secure_rng else plan.seed)
            accepted, info = outcome.survivors, dict(outcome.stats)
            bytes_up, bytes_down = int(info["bytes_up"]), bytes_down + int(info["bytes_down"])
        except SecAggAbort as exc:
            accepted, info, outcome = [], {"failed": str(exc)}, None
            metrics["failed"] = f"secure aggregation aborted: {exc}"
        metrics["secure_aggregation"] = info
        stages["secure_aggregation"] = time.perf_counter() - aggregate_start
        aggregate_start = time.perf_counter()
        if outcome is not None and plan.dp_fedavg is not None and plan.dp_fedavg.distributed:
            delta = torch.from_numpy(outcome.total / plan.dp_fedavg.expected_clients).float()  # noise came summed
            params, server_state = server_step(plan.server, state.params, delta, state.server_state)
        elif outcome is not None and plan.dp_fedavg is not None:
            delta, clip = dp_fedavg_from_sum(torch.from_numpy(outcome.total).float(), plan.dp_fedavg,
                                             state.clip or plan.dp_fedavg.clip, server_noise_generator(plan.seed, r))
            params, server_state = server_step(plan.server, state.params, delta, state.server_state)
        elif outcome is not None and outcome.weight > 0:
            delta = torch.from_numpy(outcome.total / outcome.weight).float()
            params, server_state = server_step(plan.server, state.params, delta, state.server_state)
    else:
        accepted, rejected = screen_updates(
            received, state.params.numel(), r, max_norm=plan.max_update_norm, max_norm_ratio=plan.max_norm_ratio
        )
        if plan.dp_fedavg is not None:
            # Noise is added even when nothing was accepted: the accountant counts every round.
            stacked = (torch.stack([received[c] for c in accepted]) if accepted  # type: ignore[misc]
                       else torch.zeros((0, state.params.numel())))
            delta, clip = dp_fedavg_aggregate(stacked, plan.dp_fedavg, state.clip or plan.dp_fedavg.clip,
                                              server_noise_generator(plan.seed, r))
            params, server_state = server_step(plan.server, state.params, delta, state.server_state)
        elif accepted:
            updates = torch.stack([received[c] for c in accepted])  # type: ignore[misc]
            weights = torch.tensor([sizes[c] for c in accepted], dtype=torch.float32)
            delta = aggregate(plan.rule, updates, weights, trim_fraction=plan.trim_fraction, byzantine=plan.byzantine)
            params, server_state = server_step(plan.server, state.params, delta, state.server_state)
    metrics.update(accepted=len(accepted), rejected=len(rejected))
    if plan.dp_fedavg is not None:
        ledgers["user"].record(*plan.dp_fedavg.ledger_step, 1)
        metrics["clip"] = clip
    metrics["train_loss"] = (float(sum(losses[c] * sizes[c] for c in accepted) / sum(sizes[c] for c in accepted))
                             if accepted else float("nan"))
    if not accepted and plan.dp_fedavg is None and "failed" not in metrics:
        # Nothing trustworthy arrived: keep the model, say so, and carry on.
        metrics["skipped"] = "no update was accepted; the global model is unchanged"
    stages["screen_and_aggregate"] = time.perf_counter() - aggregate_start
    with _timed(stages, "evaluate"):
        if r % plan.eval_every == 0 or r == plan.rounds:
            metrics["test_loss"], metrics["test_accuracy"] = evaluate(
                plan.model, params, plan.test[0], plan.test[1], plan.eval_batch_size
            )
    with _timed(stages, "accounting"):
        if plan.budget is not None and ledgers:
            metrics["epsilon"] = max_epsilon(ledgers, plan.budget[1])
    metrics["seconds"] = time.perf_counter() - start
    metrics["stage_seconds"] = stages
    metrics["bytes_up"], metrics["bytes_down"] = bytes_up, bytes_down
    new_state = SimulationState(
        r, params, server_state, [*state.history, metrics],
        [*state.rejections, *({"round": j.round, "client": j.client, "reason": j.reason} for j in rejected)],
        ledgers, clip, optimizer_state=optimizer_state,
    )
    return new_state, metrics


def max_epsilon(ledgers: dict[str, GaussianLedger], delta: float) -> float:
    """The largest epsilon any ledger has spent (the run's worst-case guarantee)."""
    return max((ledger.epsilon(delta) for ledger in ledgers.values()), default=0.0)


def next_round_exceeds_budget(plan: SimulationPlan, state: SimulationState) -> str | None:
    """Why the next round would overspend the budget, or None if it fits."""
    if plan.budget is None:
        return None
    target, delta = plan.budget
    if plan.dp_fedavg is not None:
        z, q = plan.dp_fedavg.ledger_step
        eps = state.ledgers["user"].epsilon(delta, extra=(z, q, 1))
        if eps > target:
            return (f"stopped before round {state.round + 1}: it would bring user-level epsilon to {eps:.4g}, "
                    f"over the budget privacy.epsilon = {target:g}")
    if plan.dp_sgd is not None:
        z = plan.dp_sgd.noise_multiplier
        for c in range(len(plan.clients)):
            q = dp_rate(plan, c)
            eps = state.ledgers[str(c)].epsilon(delta, extra=(z, q, plan.local.epochs * steps_per_epoch(q)))
            if eps > target:
                who = "" if len(plan.clients) == 1 else f"client {c}'s "
                return (f"stopped before round {state.round + 1}: it would bring {who}record-level epsilon to "
                        f"{eps:.4g}, over the budget privacy.epsilon = {target:g}")
    return None


def simulate(
    plan: SimulationPlan,
    state: SimulationState,
    *,
    on_round: RoundCallback | None = None,
    on_client: ClientCallback | None = None,
) -> SimulationState:
    """Run the remaining rounds from ``state``; ``on_round`` is called after each (checkpoint there)."""
    with client_pool(plan) as pool:
        while state.round < plan.rounds:
            reason = next_round_exceeds_budget(plan, state)
            if reason is not None:
                state.halted = reason
                break
            state, metrics = run_round(plan, state, on_client, pool)
            if on_round is not None:
                on_round(state, metrics)
    return state


__all__ = [
    "Adversary", "Rejection", "SimulationPlan", "SimulationState", "client_generator", "client_update",
    "initial_state", "run_round", "sample_clients", "simulate",
]
