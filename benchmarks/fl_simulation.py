"""Federated simulation speed, side by side in one run: plain PyTorch loop, unseen, and Flower (issue #3).

Every contender trains the same LeNet-5 (44k parameters) on real MNIST, split iid into shards of 600,
with the same per-client batch schedule (each client's permutation from SeedSequence([seed, round,
client])), 1 local epoch, batch 32, SGD lr 0.05, every client in every round, for 3 rounds, then
evaluates the global model once on the test set (not timed in the rounds).

Contenders, each in a fresh process launched by this script:
- plain: a single-process PyTorch loop (clients one after another, then the weighted average);
- unseen_sequential, unseen_vectorized (clients stacked), unseen_workers (forked worker processes, one per
  thread), unseen_workers_vectorized (both): ``unseen.run`` with the same spec apart from ``[runtime]``;
  the simulator also serializes every payload and checkpoints every round, which the plain loop does not;
- flower: Flower's simulation (``flwr.simulation.run_simulation``, Message API, FedAvg), when the
  ``bench`` extra is installed, with the same client code as the plain loop.

For each: seconds per round (median of rounds 2-3), time to first round (launch to the end of round 1,
minus one steady round: start-up and warm-up), peak proportional memory (PSS) of the whole process tree
sampled every 50 ms, and ratios to the plain loop. ``--threads`` is torch's thread budget: the plain loop
and the in-process contenders use it as intra-op threads; the worker contenders (unseen_workers, flower)
split it into that many single-thread workers.

``--sweep`` (in this process) times one round of 100 clients, vectorized against one by one, for models
from logistic regression to LeNet: the measurement behind ``runtime.vectorize = "auto"``.

``--thousand`` adds a 1,000-client run (MNIST shards, 10% sampled per round) and reports its peak memory.

Reads MNIST from UNSEEN_DATA_DIR (default ../shared/data). Writes benchmarks/results/fl_simulation.json.
Usage: .venv/bin/python benchmarks/fl_simulation.py [--clients 10 100] [--threads 2 1] [--thousand]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("UNSEEN_DATA_DIR", str(ROOT.parent.parent / "shared" / "data"))

SEED, ROUNDS, SAMPLES, BATCH, LR = 0, 3, 600, 32, 0.05
CONTENDERS = ("plain", "unseen_sequential", "unseen_vectorized", "unseen_workers", "unseen_workers_vectorized",
              "flower")


# --- the client code shared by the plain loop and Flower ---------------------------------------------

def _mnist_shards(n_clients: int):  # noqa: ANN202
    import torch

    from unseen.data import load
    from unseen.data.partition import partition

    data = load("mnist")
    parts = partition(data.train.y, n_clients, "iid", seed=SEED)
    x, y = torch.from_numpy(data.train.x), torch.from_numpy(data.train.y)
    shards = [(x[p[:SAMPLES]], y[p[:SAMPLES]]) for p in parts]
    return shards, (torch.from_numpy(data.test.x), torch.from_numpy(data.test.y))


def _lenet():  # noqa: ANN202
    from unseen.models import init_model

    return init_model("lenet", (1, 28, 28), 10, seed=SEED)


def _train_client(model, x, y, round_index: int, client: int) -> None:  # noqa: ANN001
    """One client's local epoch, written as a PyTorch user would (batch order from the shared streams)."""
    import torch
    from torch.nn import functional as F

    from unseen.runtime.clients import client_generator

    opt = torch.optim.SGD(model.parameters(), lr=LR)
    order = torch.randperm(len(y), generator=client_generator(SEED, round_index, client))
    for start in range(0, len(y), BATCH):
        idx = order[start : start + BATCH]
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()


def _accuracy(model, test) -> float:  # noqa: ANN001
    import torch

    with torch.no_grad():
        return float((model(test[0]).argmax(1) == test[1]).float().mean())


# --- contenders (each runs in its own process) -------------------------------------------------------

def run_plain(n_clients: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    shards, test = _mnist_shards(n_clients)
    model = _lenet()
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    ends = []
    for r in range(1, ROUNDS + 1):
        total = {k: torch.zeros_like(v) for k, v in global_state.items()}
        for c, (x, y) in enumerate(shards):
            model.load_state_dict(global_state)
            _train_client(model, x, y, r, c)
            for k, v in model.state_dict().items():
                total[k] += v * len(y)
        global_state = {k: v / sum(len(y) for _, y in shards) for k, v in total.items()}
        ends.append(time.time())
    model.load_state_dict(global_state)
    return {"round_ends": ends, "accuracy": _accuracy(model, test)}


def run_unseen(n_clients: int, threads: int, runtime: dict, *, partition: str = "iid",
               fraction: float = 1.0, rounds: int = ROUNDS) -> dict:
    import torch

    import unseen
    from unseen.experiment import Hooks

    torch.set_num_threads(threads)
    ends: list[float] = []

    def on_round(metrics: dict) -> None:  # the round's end, before its (untimed) test evaluation
        ends.append(time.time() - metrics["stage_seconds"]["evaluate"])

    with tempfile.TemporaryDirectory() as out:
        raw = {"name": "sim", "seed": SEED, "data": {"name": "mnist", "partition": {"method": partition}},
               "model": {"name": "lenet"}, "train": {"epochs": 1, "batch_size": BATCH, "lr": LR, "eval_every": 1000},
               "federated": {"clients": n_clients, "rounds": rounds, "fraction": fraction},
               "runtime": {"threads": threads, **runtime}, "output": {"dir": out}}
        if partition == "iid":  # 600 per client, the same samples as the other contenders
            raw["data"]["samples_per_client"] = SAMPLES
        result = unseen.run(unseen.parse_spec(raw), hooks=Hooks(on_round=on_round))
    return {"round_ends": ends, "accuracy": result.accuracy,
            "round_seconds_reported": [m["seconds"] for m in result.results["rounds"]]}


def run_flower(n_clients: int, threads: int) -> dict:
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    ends: list[float] = []
    final: dict = {}
    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        import torch

        torch.set_num_threads(1)
        # Loaded once per actor process, as Flower's tutorials cache their data in the task module (a
        # closure variable would travel with the app and be empty at every call).
        cache = sys.modules.setdefault("_fl_bench_cache", types.ModuleType("_fl_bench_cache"))
        if not hasattr(cache, "shards"):
            cache.shards = _mnist_shards(n_clients)[0]
        c = int(context.node_config["partition-id"])
        x, y = cache.shards[c]
        model = _lenet()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        _train_client(model, x, y, int(msg.content["config"]["server-round"]), c)
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                              "metrics": MetricRecord({"num-examples": len(y)})})
        return Message(content=content, reply_to=msg)

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n_clients,
                          min_available_nodes=n_clients)

        def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            if server_round == 0:
                return None
            ends.append(time.time())
            if server_round == ROUNDS:
                model = _lenet()
                model.load_state_dict(arrays.to_torch_state_dict())
                final["accuracy"] = _accuracy(model, _mnist_shards(n_clients)[1])
            return None

        strategy.start(grid=grid, initial_arrays=ArrayRecord(_lenet().state_dict()), num_rounds=ROUNDS,
                       evaluate_fn=evaluate)

    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n_clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": threads, "num_gpus": 0}})
    return {"round_ends": ends, **final}


def child(contender: str, n_clients: int, threads: int, out: Path) -> None:
    if contender == "plain":
        res = run_plain(n_clients, threads)
    elif contender == "unseen_sequential":
        res = run_unseen(n_clients, threads, {"vectorize": "off"})
    elif contender == "unseen_vectorized":
        res = run_unseen(n_clients, threads, {"vectorize": "on"})
    elif contender == "unseen_workers":
        res = run_unseen(n_clients, 1, {"vectorize": "off", "workers": threads, "worker_threads": 1})
    elif contender == "unseen_workers_vectorized":
        res = run_unseen(n_clients, 1, {"vectorize": "on", "workers": threads, "worker_threads": 1})
    elif contender == "flower":
        res = run_flower(n_clients, threads)
    elif contender == "unseen_1000":
        res = run_unseen(1000, 1, {"vectorize": "off", "workers": threads, "worker_threads": 1},
                         partition="shards", fraction=0.1, rounds=2)
    else:
        raise SystemExit(f"unknown contender {contender}")
    out.write_text(json.dumps(res))


def vectorize_sweep(threads: int, repeats: int = 5) -> list[dict]:
    """Median seconds of one round (100 clients x 100 samples) trained vectorized vs one by one."""
    import torch

    from unseen.federated import LocalTraining, get_flat, local_update
    from unseen.federated.vectorized import local_updates, vectorizing_pays
    from unseen.models import init_model
    from unseen.runtime.clients import client_generator

    torch.set_num_threads(threads)
    rows = []
    for name, shape, kw in [("logreg", (30,), {}), ("mlp", (30,), {"hidden": (16,)}),
                            ("mlp", (784,), {"hidden": (64,)}), ("mlp", (784,), {"hidden": (200, 200)}),
                            ("lenet", (1, 28, 28), {}), ("cnn", (1, 28, 28), {})]:
        model = init_model(name, shape, 10, seed=SEED, **kw)
        start = get_flat(model)
        gen = torch.Generator().manual_seed(SEED)
        data = [(torch.randn((100, *shape), generator=gen), torch.randint(0, 10, (100,), generator=gen))
                for _ in range(100)]
        config = LocalTraining(epochs=1, batch_size=BATCH, lr=LR)
        seq, vec = [], []
        for _ in range(repeats if name != "cnn" else 2):
            t = time.perf_counter()
            for c, (x, y) in enumerate(data):
                local_update(model, start, x, y, config, client_generator(SEED, 1, c))
            seq.append(time.perf_counter() - t)
            t = time.perf_counter()
            local_updates(model, start, data, config, [client_generator(SEED, 1, c) for c in range(len(data))])
            vec.append(time.perf_counter() - t)
        row = {"model": name, "input": list(shape), **{k: list(v) for k, v in kw.items()},
               "parameters": start.numel(), "sequential_seconds": statistics.median(seq),
               "vectorized_seconds": statistics.median(vec), "auto_vectorizes": vectorizing_pays(model, start.device, shape)}
        row["ratio"] = row["vectorized_seconds"] / row["sequential_seconds"]
        rows.append(row)
        print(f"  {name:<7} {start.numel():>9,} parameters: one by one {row['sequential_seconds']:.3f} s, "
              f"vectorized {row['vectorized_seconds']:.3f} s ({row['ratio']:.2f}x); auto vectorizes: "
              f"{row['auto_vectorizes']}", flush=True)
    return rows


# --- the parent: launch, watch memory, summarise -----------------------------------------------------

def _tree_pss_mb(root: int) -> float:
    """Proportional set size of ``root`` and all its descendants (shared pages counted once overall)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total_kb, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
                    break
        except OSError:
            continue
    return total_kb / 1024


def measure(contender: str, n_clients: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        launched = time.time()
        proc = subprocess.Popen([sys.executable, __file__, "--child", contender, str(n_clients), str(threads), str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peak = 0.0
        while proc.poll() is None:
            peak = max(peak, _tree_pss_mb(proc.pid))
            time.sleep(0.05)
        if proc.returncode != 0 or not out.exists():
            tail = proc.stderr.read()[-1500:] if proc.stderr else ""
            return {"error": f"exit {proc.returncode}: {tail}"}
        res = json.loads(out.read_text())
    ends = res["round_ends"]
    rounds = [ends[i] - ends[i - 1] for i in range(1, len(ends))]
    steady = statistics.median(rounds[-2:]) if rounds else float("nan")
    return {"seconds_per_round": steady, "round_seconds": rounds,
            "time_to_first_round": ends[0] - launched - steady, "first_round_end": ends[0] - launched,
            "peak_memory_mb": peak, "accuracy": res.get("accuracy"),
            "wall_seconds": time.time() - launched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS))
    parser.add_argument("--thousand", action="store_true", help="also run 1,000 clients (10%% per round)")
    parser.add_argument("--sweep", action="store_true", help="also time vectorized vs one by one per model")
    parser.add_argument("--merge", action="store_true",
                        help="replace only the measured (clients, threads) blocks of the results file")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        contender, n, t, out = args.child
        child(contender, int(n), int(t), Path(out))
        return

    import importlib.util

    import torch

    contenders = [c for c in args.contenders if c != "flower" or importlib.util.find_spec("flwr")]
    if "flower" in args.contenders and "flower" not in contenders:
        print("flower: not installed (pip install 'unseen[bench]'); skipped")
    report: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "torch": torch.__version__, "platform": platform.platform()},
                    "recipe": {"model": "lenet (44,426 parameters)", "samples_per_client": SAMPLES,
                               "rounds": ROUNDS, "local_epochs": 1, "batch_size": BATCH, "lr": LR},
                    "runs": []}
    if importlib.util.find_spec("flwr"):
        import flwr

        report["machine"]["flwr"] = flwr.__version__
    for threads in args.threads:
        for n in args.clients:
            print(f"{n} clients, {threads} thread(s):", flush=True)
            rows = {}
            for contender in contenders:
                rows[contender] = measure(contender, n, threads)
                r = rows[contender]
                if "error" in r:
                    print(f"  {contender:<18} failed: {r['error']}", flush=True)
                    continue
                print(f"  {contender:<18} {r['seconds_per_round']:7.2f} s/round  first round after "
                      f"{r['time_to_first_round']:5.1f} s  peak {r['peak_memory_mb']:6.0f} MB  "
                      f"accuracy {r['accuracy']:.4f}", flush=True)
            plain = rows.get("plain", {})
            for r in rows.values():
                if "error" not in r and "error" not in plain and plain:
                    r["ratio_round"] = r["seconds_per_round"] / plain["seconds_per_round"]
                    r["ratio_first_round"] = r["time_to_first_round"] / plain["time_to_first_round"]
                    r["ratio_memory"] = r["peak_memory_mb"] / plain["peak_memory_mb"]
            report["runs"].append({"clients": n, "threads": threads, "contenders": rows})
    if args.sweep:
        print("vectorize sweep: one round of 100 clients x 100 samples, 2 threads:", flush=True)
        report["vectorize_sweep"] = vectorize_sweep(2)
    if args.thousand:
        print("1,000 clients (MNIST shards of 60), 10% per round, 2 forked workers:", flush=True)
        r = measure("unseen_1000", 1000, 2)
        report["thousand_clients"] = r
        print(f"  {r}", flush=True)
    path = ROOT / "results" / "fl_simulation.json"
    if args.merge and path.exists():  # replace the measured blocks (clients, threads) whole: ratios stay same-run
        old = json.loads(path.read_text())
        fresh = {(r["clients"], r["threads"]): r for r in report["runs"]}
        old["runs"] = [fresh.pop((r["clients"], r["threads"]), r) for r in old["runs"]] + list(fresh.values())
        for key in ("vectorize_sweep", "thousand_clients"):
            if key in report:
                old[key] = report[key]
        report = old
    print_table(report)
    path.write_text(json.dumps(report, indent=2))


def print_table(report: dict) -> None:
    print("\n| clients | threads | contender | s/round | x plain | first round (s) | x plain | peak MB | x plain |")
    print("|---|---|---|---|---|---|---|---|---|")
    for run in report["runs"]:
        for name, r in run["contenders"].items():
            if "error" in r:
                continue
            print(f"| {run['clients']} | {run['threads']} | {name} | {r['seconds_per_round']:.2f} | "
                  f"{r.get('ratio_round', float('nan')):.2f} | {r['time_to_first_round']:.1f} | "
                  f"{r.get('ratio_first_round', float('nan')):.2f} | {r['peak_memory_mb']:.0f} | "
                  f"{r.get('ratio_memory', float('nan')):.2f} |")


if __name__ == "__main__":
    main()
