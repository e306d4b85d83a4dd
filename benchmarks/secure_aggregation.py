"""Secure aggregation cost (issue: secure aggregation, figure 4). Not run in CI.

For 10 and 100 clients, models of about 100k and 1M parameters, 0% and 10% dropouts, one run in one
process measures plain FedAvg beside SecAgg, SecAgg+ and CKKS, on real MNIST (600 records per
client, 1 local epoch). Reported per configuration:

- ``round_ratio``: a full round (local training, transport, aggregation) with secure aggregation over
  the plain round; the median of rounds 1-2 of each run (round 3 also evaluates and is left out).
- ``crypto_seconds_per_client`` / ``server_seconds``: the protocol's own compute.
- ``upload_ratio``: bytes each client uploads over its plain float32 upload (the .npy update).

Writes benchmarks/results/secure_aggregation.json.
Usage: .venv/bin/python benchmarks/secure_aggregation.py [--clients 10 100] [--sizes 100k 1M] [--skip-ckks-at 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import unseen

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("UNSEEN_DATA_DIR", str(ROOT.parent.parent / "shared" / "data"))

HIDDEN = {"100k": [128], "1M": [1024, 256]}  # MLPs of 101,770 and 1,068,810 parameters


def one(backend: str, clients: int, size: str, dropout: float, out: str) -> dict:
    raw = {
        "name": f"{backend.replace('+', 'plus')}-{clients}-{size}-{int(dropout * 100)}",
        "data": {"name": "mnist", "partition": {"method": "iid"}},
        "model": {"name": "mlp", "hidden": HIDDEN[size]},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.05, "eval_every": 100},
        "federated": {"clients": clients, "rounds": 4, "dropout": dropout},
        "privacy": {"secure_aggregation": backend},
        "output": {"dir": out},
    }
    result = unseen.run(unseen.parse_spec(raw))
    rounds = result.results["rounds"][:3]  # the last round also evaluates: left out
    seconds = statistics.median(m["seconds"] for m in rounds)
    secure = [m.get("secure_aggregation", {}) for m in rounds]
    senders = statistics.median(m["accepted"] for m in rounds)
    return {
        "backend": backend, "clients": clients, "size": size, "dropout": dropout,
        "parameters": result.results["model"]["parameters"], "accuracy": result.accuracy,
        "round_seconds": seconds,
        "stage_seconds": {k: statistics.median(m["stage_seconds"][k] for m in rounds)
                          for k in rounds[0]["stage_seconds"]},
        "bytes_up_per_client": statistics.median(m["bytes_up"] for m in rounds) / clients,
        "bytes_up_per_sender": statistics.median(m["bytes_up"] / max(1, m["accepted"]) for m in rounds),
        "crypto_seconds_per_client": statistics.median(s.get("client_seconds_per_client", 0.0) for s in secure),
        "server_seconds": statistics.median(s.get("server_seconds", 0.0) for s in secure),
        "senders": senders,
        "failed_rounds": len(result.results["failed_rounds"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--sizes", nargs="+", default=["100k", "1M"])
    parser.add_argument("--dropouts", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument("--backends", nargs="+", default=["secagg+", "secagg", "ckks"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as out:
        one("none", 10, "100k", 0.0, out)  # warm-up: first-use costs of torch and the data cache
        for clients in args.clients:
            for size in args.sizes:
                for dropout in args.dropouts:
                    started = time.perf_counter()
                    plain = one("none", clients, size, dropout, out)
                    plain_upload = plain["bytes_up_per_sender"]
                    print(f"{clients} clients, {size}, dropout {dropout:.0%}: plain round {plain['round_seconds']:.2f} s, "
                          f"{plain_upload / 1e6:.2f} MB up per client", flush=True)
                    rows.append({**plain, "round_ratio": 1.0, "upload_ratio": 1.0})
                    for backend in args.backends:
                        r = one(backend, clients, size, dropout, out)
                        r["round_ratio"] = r["round_seconds"] / plain["round_seconds"]
                        r["upload_ratio"] = r["bytes_up_per_sender"] / plain_upload
                        r["accuracy_difference"] = r["accuracy"] - plain["accuracy"]
                        rows.append(r)
                        print(f"  {backend:<8} round {r['round_seconds']:.2f} s = {r['round_ratio']:.3f}x plain; "
                              f"upload {r['upload_ratio']:.3f}x; crypto {r['crypto_seconds_per_client'] * 1e3:.1f} ms "
                              f"per client, server {r['server_seconds']:.2f} s; accuracy "
                              f"{r['accuracy']:.4f} ({r['accuracy_difference']:+.4f}); failed rounds "
                              f"{r['failed_rounds']}", flush=True)
                    print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
    path = ROOT / "results" / "secure_aggregation.json"
    path.write_text(json.dumps({
        "benchmark": "secure_aggregation", "unseen": unseen.__version__, "torch": torch.__version__,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "rows": rows,
    }, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
