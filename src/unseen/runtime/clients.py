"""The client side of a round, and where it runs: this process, forked worker processes, or Ray actors.

``train_clients`` is what every runner calls: for each sampled client, draw its generator from
``(seed, round, client)``, train (one by one, or vectorized with ``torch.func``), and let a simulated
adversary corrupt what it sends. Because every client's randomness is its own counter-based stream, it
does not matter which process trains which client: the updates are the same in every runner.

``client_pool(plan)`` opens the runner's workers for a whole run: ``None`` (train in this process),
forked processes on this machine (``workers > 1``) or Ray actors (``backend = "ray"``). Each worker
holds the plan (model and client data) once, receives the global weights each round and returns updates.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from unseen.errors import SpecError
from unseen.federated.adversary import corrupt
from unseen.federated.client import ClientResult, LocalTraining, OptimizerState, cosine_factor, local_update
from unseen.federated.vectorized import local_updates, why_not_vectorized
from unseen.privacy.dpsgd import dp_sgd_update

if TYPE_CHECKING:
    from unseen.runtime.simulation import SimulationPlan

log = logging.getLogger("unseen")


def client_generator(seed: int, round_index: int, client: int) -> torch.Generator:
    """A generator private to one client in one round (independent of every other stream)."""
    state = np.random.SeedSequence([seed, round_index, client]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def dp_rate(plan: SimulationPlan, c: int) -> float:
    """Client ``c``'s Poisson sampling rate under DP-SGD (its own data size sets it)."""
    return plan.client_dp_rates[c] if plan.client_dp_rates else plan.dp_sgd.sampling_rate  # type: ignore[union-attr]


def client_update(plan: SimulationPlan, params: torch.Tensor, c: int, gen: torch.Generator,
                  local: LocalTraining | None = None, optimizer_state: OptimizerState | None = None) -> ClientResult:
    """Client ``c``'s local training from ``params`` (DP-SGD inside it when the plan says so);
    ``optimizer_state`` resumes the optimizer (central training) and comes back updated."""
    x, y = plan.clients[c]
    config = local or plan.local
    if plan.dp_sgd is not None:
        dp = dataclasses.replace(plan.dp_sgd, sampling_rate=dp_rate(plan, c))
        return dp_sgd_update(plan.model, params, x, y, config, dp, gen, optimizer_state)
    return local_update(plan.model, params, x, y, config, gen, optimizer_state)


def local_for_round(plan: SimulationPlan, round_index: int) -> LocalTraining:
    """The clients' training settings in one round: the learning rate follows ``plan.lr_schedule``."""
    if plan.lr_schedule == "cosine":
        return dataclasses.replace(plan.local, lr=plan.local.lr * cosine_factor(round_index, plan.rounds))
    return plan.local


def train_clients(plan: SimulationPlan, params: torch.Tensor, clients: Sequence[int], round_index: int,
                  on_client: Callable[[], None] | None = None,
                  optimizer_state: OptimizerState | None = None) -> dict[int, ClientResult]:
    """Every listed client's update for this round (what it sends, adversaries included).

    ``optimizer_state`` (central training: one client) resumes that client's optimizer."""
    gens = {c: client_generator(plan.seed, round_index, c) for c in clients}
    local = local_for_round(plan, round_index)
    if (optimizer_state is None and plan.vectorize and plan.dp_sgd is None and clients
            and why_not_vectorized(local) is None):
        trained = local_updates(plan.model, params, [plan.clients[c] for c in clients], local,
                                [gens[c] for c in clients], chunk=plan.chunk)
        results = dict(zip(clients, trained, strict=True))
        if on_client is not None:
            for _ in clients:
                on_client()
    else:
        results = {}
        for c in clients:
            results[c] = client_update(plan, params, c, gens[c], local, optimizer_state)
            if on_client is not None:
                on_client()
    if plan.adversary is not None:
        for c in clients:
            if c < plan.adversary.count:
                bad = corrupt(results[c].delta, plan.adversary.kind, plan.adversary.factor, gens[c])
                results[c] = dataclasses.replace(results[c], delta=bad)
    return results


class ClientPool(Protocol):
    """Workers that train slices of a round's clients in parallel."""

    def train(self, params: torch.Tensor, clients: Sequence[int], round_index: int,
              on_client: Callable[[], None] | None = None) -> dict[int, ClientResult]: ...


def _slices(clients: Sequence[int], parts: int) -> list[list[int]]:
    """Contiguous slices of about equal size, in order (so results come back in client order)."""
    return [list(map(int, s)) for s in np.array_split(np.asarray(clients, dtype=np.int64), parts) if len(s)]


# --- forked worker processes on this machine -------------------------------------------------------

_WORKER_PLAN: SimulationPlan | None = None


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _worker_train(params: torch.Tensor, clients: list[int], round_index: int) -> dict[int, ClientResult]:
    assert _WORKER_PLAN is not None, "worker started without a plan"
    return train_clients(_WORKER_PLAN, params, clients, round_index)


class ProcessPool:
    """``workers`` forked processes, each holding the plan (copy-on-write) and ``threads`` torch threads."""

    def __init__(self, plan: SimulationPlan, workers: int, threads: int) -> None:
        global _WORKER_PLAN
        _WORKER_PLAN = plan  # fork copies it into each worker: nothing is pickled but weights and updates
        gc.freeze()  # objects made so far stay out of the workers' collections: their pages stay shared
        self.workers = workers
        self.executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                            initializer=_worker_init, initargs=(threads,))

    def train(self, params: torch.Tensor, clients: Sequence[int], round_index: int,
              on_client: Callable[[], None] | None = None) -> dict[int, ClientResult]:
        futures: dict[Future[dict[int, ClientResult]], int] = {
            self.executor.submit(_worker_train, params, part, round_index): i
            for i, part in enumerate(_slices(clients, self.workers))}
        pending = set(futures)
        while pending:  # report progress per finished slice
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                for _ in f.result():
                    if on_client is not None:
                        on_client()
        merged: dict[int, ClientResult] = {}
        for f in sorted(futures, key=futures.__getitem__):
            merged.update(f.result())
        return {c: merged[c] for c in clients}

    def close(self) -> None:
        self.executor.shutdown(cancel_futures=True)
        gc.unfreeze()


# --- Ray actors --------------------------------------------------------------------------------------

class RayPool:
    """``workers`` Ray actors, each holding the plan once and training its slice of every round."""

    def __init__(self, plan: SimulationPlan, workers: int, threads: int, address: str | None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise SpecError("runtime.backend = 'ray' needs Ray: pip install 'unseen[ray]'.") from exc
        self.ray = ray
        self.started = not ray.is_initialized()
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # CPU actors: leave device variables be
        if self.started:
            ray.init(address=address, num_cpus=None if address else workers * threads,
                     include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)

        @ray.remote(num_cpus=threads)
        class ClientActor:
            def __init__(self, plan: Any) -> None:
                torch.set_num_threads(threads)
                self.plan = plan

            def train(self, params: torch.Tensor, clients: list[int], round_index: int) -> dict[int, ClientResult]:
                return train_clients(self.plan, params, clients, round_index)

        shared = ray.put(plan)
        self.actors = [ClientActor.remote(shared) for _ in range(workers)]  # type: ignore[attr-defined]

    def train(self, params: torch.Tensor, clients: Sequence[int], round_index: int,
              on_client: Callable[[], None] | None = None) -> dict[int, ClientResult]:
        params_ref = self.ray.put(params)
        refs = [actor.train.remote(params_ref, part, round_index)
                for actor, part in zip(self.actors, _slices(clients, len(self.actors)), strict=False)]
        merged: dict[int, ClientResult] = {}
        for part in self.ray.get(refs):
            merged.update(part)
            if on_client is not None:
                for _ in part:
                    on_client()
        return {c: merged[c] for c in clients}

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        if self.started:
            self.ray.shutdown()


@contextmanager
def client_pool(plan: SimulationPlan) -> Iterator[ClientPool | None]:
    """The run's workers (closed at the end), or None when clients train in this process."""
    if plan.backend == "ray":
        pool: Any = RayPool(plan, plan.workers, plan.worker_threads, plan.ray_address)
    elif plan.workers > 1:
        pool = ProcessPool(plan, plan.workers, plan.worker_threads)
    else:
        yield None
        return
    try:
        yield pool
    finally:
        pool.close()


def default_worker_threads(workers: int) -> int:
    """Torch threads per worker: the machine's cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // max(workers, 1))


__all__ = ["ClientPool", "client_generator", "client_pool", "client_update", "default_worker_threads",
           "dp_rate", "local_for_round", "train_clients"]
