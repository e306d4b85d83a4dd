"""Secure aggregation cost (issue: secure aggregation, figure 4). Not run in CI.

For 10 and 100 clients, MLPs of 101,770 and 1,068,810 parameters on real MNIST (iid, one local epoch,
batch 32), 0% and 10% dropouts, one process measures:

- ``train_seconds``: every client's local training, once (the part of a round that secure
  aggregation does not touch);
- ``aggregate_seconds``: the aggregation path of a round. Plain: each update serialized (.npy),
  decoded, screened, stacked and averaged. SecAgg / SecAgg+: clip, fixed-point encode, the whole
  protocol (keys, shares, masks, unmasking), decode. CKKS: encrypt, add, decrypt. All paths run on
  the same real updates, interleaved, ``--repeats`` times; medians are reported;
- ``round_ratio`` = (train + secure aggregate) / (train + plain aggregate): a round as the
  simulator runs it (clients one after another), with the training measured once and shared;
- ``parallel_round_ratio``: the same with clients running at once, as in a deployment: one
  client's training and client-side work, then the server's (network time left out);
- ``upload_ratio``: bytes a surviving client uploads over its plain .npy float32 upload;
- ``max_error``: the largest difference between the secure and the plain weighted mean.

Timing whole simulated runs side by side was tried first: on this shared 2-core machine two
identical runs differed by up to 40%, more than the effect being measured.

Writes benchmarks/results/secure_aggregation.json.
Usage: .venv/bin/python benchmarks/secure_aggregation.py [--clients 10 100] [--sizes 100k 1M] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import unseen
from unseen.data import load, partition
from unseen.federated import LocalTraining, get_flat, local_update
from unseen.federated.aggregate import aggregate
from unseen.federated.validate import screen_updates
from unseen.models import init_model
from unseen.runtime import wire
from unseen.runtime.secure import SecureAggregation, secure_round
from unseen.runtime.simulation import client_generator, dropped_clients

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("UNSEEN_DATA_DIR", str(ROOT.parent.parent / "shared" / "data"))

HIDDEN = {"100k": (128,), "1M": (1024, 256)}  # MLPs of 101,770 and 1,068,810 parameters


def client_updates(clients: int, size: str) -> tuple[dict[int, torch.Tensor], dict[int, int], float]:
    """Real local updates of every client from a fresh model, and the total training time."""
    ds = load("mnist")
    parts = partition(ds.train.y, clients, "iid", seed=0)
    model = init_model("mlp", ds.input_shape, ds.n_classes, seed=0, hidden=HIDDEN[size])
    start_params = get_flat(model)
    config = LocalTraining(epochs=1, batch_size=32, lr=0.05)
    updates, sizes = {}, {}
    started = time.perf_counter()
    for c, idx in enumerate(parts):
        x, y = torch.from_numpy(ds.train.x[idx]), torch.from_numpy(ds.train.y[idx])
        result = local_update(model, start_params, x, y, config, client_generator(0, 1, c))
        updates[c], sizes[c] = result.delta, result.num_samples
    return updates, sizes, time.perf_counter() - started


def plain_path(updates: dict[int, torch.Tensor], sizes: dict[int, int], gone: set[int]):
    t = time.perf_counter()
    payloads = {c: wire.encode(u) for c, u in updates.items() if c not in gone}
    client_seconds = time.perf_counter() - t
    received = {c: wire.decode(p) for c, p in payloads.items()}
    accepted, _ = screen_updates(received, next(iter(updates.values())).numel(), 1, max_norm_ratio=100.0)
    stacked = torch.stack([received[c] for c in accepted])
    weights = torch.tensor([sizes[c] for c in accepted], dtype=torch.float32)
    return aggregate("mean", stacked, weights), sum(len(p) for p in payloads.values()), client_seconds


def secure_path(backend: str, updates: dict[int, torch.Tensor], sizes: dict[int, int], gone: set[int]):
    config = SecureAggregation(backend, clip=10.0, max_weight=float(max(sizes.values())))
    arrays = {c: u.double().numpy() for c, u in updates.items()}
    outcome = secure_round(config, arrays, sizes, 1, 0, gone)
    return outcome.total / outcome.weight, outcome.stats


def measure(clients: int, size: str, dropout: float, backends: list[str], repeats: int,
            updates, sizes, train_seconds: float) -> list[dict]:
    gone = dropped_clients(list(range(clients)), dropout, 0, 1)
    senders = clients - len(gone)
    times: dict[str, list[float]] = {b: [] for b in ["plain", *backends]}
    stats: dict[str, dict] = {}
    errors: dict[str, float] = {}
    plain_bytes, plain_mean, plain_clients = 0, None, []
    for rep in range(repeats):
        for b in (["plain", *backends] if rep % 2 == 0 else [*backends, "plain"]):  # interleaved
            if b == "ckks" and rep >= max(2, repeats // 2):
                continue  # CKKS is slow at 1M; fewer repeats say enough
            t = time.perf_counter()
            if b == "plain":
                mean, plain_bytes, plain_client = plain_path(updates, sizes, gone)
                plain_clients.append(plain_client / senders)
                plain_mean = mean.double().numpy()
            else:
                mean, stats[b] = secure_path(b, updates, sizes, gone)
            times[b].append(time.perf_counter() - t)
            if b != "plain" and plain_mean is not None:
                errors[b] = float(np.max(np.abs(mean - plain_mean)))
    rows = []
    plain_agg = statistics.median(times["plain"])
    train_each = train_seconds / clients
    plain_client = statistics.median(plain_clients)
    plain_parallel = train_each + plain_client + (plain_agg - plain_client * senders)
    for b in ["plain", *backends]:
        agg = statistics.median(times[b])
        up = plain_bytes / senders if b == "plain" else stats[b]["bytes_up"] / senders
        row = {
            "backend": b, "clients": clients, "size": size, "dropout": dropout, "senders": senders,
            "parameters": next(iter(updates.values())).numel(), "train_seconds": train_seconds,
            "aggregate_seconds": agg, "aggregate_seconds_all": times[b],
            "round_seconds": train_seconds + agg, "round_ratio": (train_seconds + agg) / (train_seconds + plain_agg),
            "bytes_up_per_sender": up, "upload_ratio": up / (plain_bytes / senders),
        }
        if b == "plain":
            row["parallel_round_seconds"] = plain_parallel
        else:
            # Clients run at once in a deployment: one client's training and crypto, then the server's work.
            row["parallel_round_seconds"] = train_each + stats[b]["client_seconds_per_client"] + stats[b]["server_seconds"]
        row["parallel_round_ratio"] = row["parallel_round_seconds"] / plain_parallel
        if b != "plain":
            row.update(max_error=errors[b], crypto_seconds_per_client=stats[b]["client_seconds_per_client"],
                       server_seconds=stats[b]["server_seconds"], survivors=stats[b]["survivors"])
        rows.append(row)
        print(f"  {b:<8} aggregate {agg:7.2f} s   round {row['round_ratio']:.3f}x plain (clients in parallel "
              f"{row['parallel_round_ratio']:.3f}x)   upload "
              f"{row['upload_ratio']:.3f}x" + (f"   client crypto {row['crypto_seconds_per_client'] * 1e3:6.1f} ms, "
                                               f"server {row['server_seconds']:.2f} s, max error "
                                               f"{row['max_error']:.1e}" if b != "plain" else ""), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--sizes", nargs="+", default=["100k", "1M"])
    parser.add_argument("--dropouts", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument("--backends", nargs="+", default=["secagg+", "secagg", "ckks"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--merge", action="store_true", help="replace only the measured rows in the results file")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    for clients in args.clients:
        for size in args.sizes:
            updates, sizes, train_seconds = client_updates(clients, size)
            print(f"{clients} clients, {size}: local training of all clients {train_seconds:.2f} s", flush=True)
            for dropout in args.dropouts:
                print(f" dropout {dropout:.0%}", flush=True)
                rows += measure(clients, size, dropout, args.backends, args.repeats, updates, sizes, train_seconds)
    path = ROOT / "results" / "secure_aggregation.json"
    if args.merge and path.exists():
        key = ("backend", "clients", "size", "dropout")
        fresh = {tuple(r[k] for k in key) for r in rows}
        rows = [r for r in json.loads(path.read_text())["rows"] if tuple(r[k] for k in key) not in fresh] + rows
    path.write_text(json.dumps({
        "benchmark": "secure_aggregation", "unseen": unseen.__version__, "torch": torch.__version__,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "rows": rows,
    }, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
