"""MNIST federated accuracy benchmark (issue: foundation, figure 2). Not run in CI.

(a) The classic 2-conv CNN, 10 clients iid, FedAvg, 5 rounds of 1 local epoch: target >= 98.5%.
(b) Label skew, dirichlet alpha = 0.1 over 10 clients: FedAvg vs FedProx vs FedAdam at equal rounds.

Reads real MNIST from UNSEEN_DATA_DIR (default ../shared/data). Writes benchmarks/results/fl_mnist.json.
Usage: .venv/bin/python benchmarks/fl_mnist.py [--rounds-skew 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

import unseen

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("UNSEEN_DATA_DIR", str(ROOT.parent.parent / "shared" / "data"))

RECIPE = {"model": {"name": "cnn"}, "train": {"epochs": 1, "batch_size": 32, "lr": 0.1}}


def run(overrides: dict, out: str) -> dict:
    raw = {"data": {"name": "mnist"}, **json.loads(json.dumps(RECIPE)), "output": {"dir": out}}
    for section, values in overrides.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    started = time.perf_counter()
    result = unseen.run(unseen.parse_spec(raw))
    curve = [round(m["test_accuracy"], 4) for m in result.results["rounds"]]
    print(f"  {raw['name']:<28} accuracy per round {curve}  ({time.perf_counter() - started:.0f} s)", flush=True)
    return {"spec": raw, "accuracy_per_round": curve, "final_accuracy": result.accuracy,
            "seconds_per_round": result.results["costs"]["seconds_per_round"],
            "wall_seconds": result.results["costs"]["wall_seconds"]}


def seeded_comparison(args: argparse.Namespace, out: str) -> dict:
    """(c) FedAvg vs FedAdam on dirichlet(0.1), several seeds (each its own partition and init)."""
    print(f"(c) dirichlet alpha=0.1, 10 clients, {args.rounds_skew} rounds, {args.seeds} seeds")
    skew = {"data": {"partition": {"method": "dirichlet", "alpha": 0.1}}}
    table: dict = {"fedavg": [], "fedadam": []}
    for seed in range(args.seeds):
        for algo, extra in (("fedavg", {}), ("fedadam", {"server_lr": args.adam_lr})):
            fed = {"clients": 10, "rounds": args.rounds_skew, "algorithm": algo, **extra}
            table[algo].append(run({"name": f"seed{seed}-{algo}", "seed": seed, **skew, "federated": fed}, out))
    summary = {}
    for algo, runs in table.items():
        finals = [r["final_accuracy"] for r in runs]
        means = [sum(r["accuracy_per_round"]) / len(r["accuracy_per_round"]) for r in runs]
        summary[algo] = {"final_mean": sum(finals) / len(finals), "finals": finals,
                         "mean_over_rounds": sum(means) / len(means)}
        print(f"result (c): {algo:<8} final {100 * summary[algo]['final_mean']:.2f}% (per seed "
              f"{[round(100 * f, 2) for f in finals]}), mean over rounds {100 * summary[algo]['mean_over_rounds']:.2f}%")
    return {"runs": table, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds-skew", type=int, default=5)
    parser.add_argument("--prox-mu", type=float, default=0.01)
    parser.add_argument("--adam-lr", type=float, default=0.03)
    parser.add_argument("--skip-iid", action="store_true", help="keep (a) from the stored results file")
    parser.add_argument("--seeds", type=int, default=0,
                        help="(c) instead of (b): FedAvg vs FedAdam over this many seeds (keeps (a) and (b))")
    args = parser.parse_args()
    report: dict = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                "python": platform.python_version(), "torch": torch.__version__}}
    path = ROOT / "results" / "fl_mnist.json"
    with tempfile.TemporaryDirectory() as out:
        if args.skip_iid:
            report["iid_fedavg"] = json.loads(path.read_text())["iid_fedavg"]
        else:
            print("(a) MNIST CNN, 10 clients iid, FedAvg, 5 rounds x 1 local epoch (target >= 98.5%)")
            report["iid_fedavg"] = run({"name": "iid-fedavg", "federated": {"clients": 10, "rounds": 5}}, out)
        if args.seeds:
            previous = json.loads(path.read_text())
            report["skew"] = previous["skew"]
            report["skew_seeds"] = seeded_comparison(args, out)
            path.write_text(json.dumps(report, indent=2))
            print(f"wrote {path}")
            return
        print(f"(b) dirichlet alpha=0.1, 10 clients, {args.rounds_skew} rounds")
        skew = {"data": {"partition": {"method": "dirichlet", "alpha": 0.1}}}
        report["skew"] = {}
        for algo, extra in (("fedavg", {}), ("fedprox", {"prox_mu": args.prox_mu}),
                            ("fedadam", {"server_lr": args.adam_lr})):
            fed = {"clients": 10, "rounds": args.rounds_skew, "algorithm": algo, **extra}
            report["skew"][algo] = run({"name": f"skew-{algo}", **skew, "federated": fed}, out)
    a = report["iid_fedavg"]["final_accuracy"]
    print(f"\nresult (a): {100 * a:.2f}% after 5 rounds ({'meets' if a >= 0.985 else 'MISSES'} the 98.5% target)")
    for algo, r in report["skew"].items():
        print(f"result (b): {algo:<8} final {100 * r['final_accuracy']:.2f}%  mean over rounds "
              f"{100 * sum(r['accuracy_per_round']) / len(r['accuracy_per_round']):.2f}%")
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
