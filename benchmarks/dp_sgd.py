"""DP-SGD benchmark (issue: differential privacy in training). Not run in CI.

(a) Throughput on the MNIST CNNs, one run, side by side: a plain PyTorch loop, unseen's non-private
    client update, unseen's DP-SGD (bk: one-backward-pass clipping, the default; Opacus ghost
    clipping; Opacus hooks), and plain Opacus (PrivacyEngine.make_private, Poisson DataLoader). Same
    model, same expected batch, same steps; round-robin repeats, median.
(b) Accuracy vs epsilon on real MNIST, delta = 1e-5, with the recipes below (centralized DP-SGD),
    on pixels or (--features scattering) on wavelet scattering features.
(c) User-level DP-FedAvg: 100 clients on MNIST shards (label-sorted, or --partition iid), epsilon 8,
    delta 1e-5 (target >= 95%).

Writes benchmarks/results/dp_sgd.json. Usage:
  .venv/bin/python benchmarks/dp_sgd.py --part a
  .venv/bin/python benchmarks/dp_sgd.py --part b --eps 1,3 --epochs 10
  .venv/bin/python benchmarks/dp_sgd.py --part b --features scattering --model scatter_linear --eps 3 --epochs 60 \
      --batch 4096 --lr 8 --lr-schedule cosine --augmult 5
  .venv/bin/python benchmarks/dp_sgd.py --part c --rounds 30
  .venv/bin/python benchmarks/dp_sgd.py --part c --features scattering --rounds 12 --local-epochs 3 --local-batch 16 \
      --sam-rho 0.1 --fixed-clip --local-momentum 0.5 --local-lr 0.05 [--seed N]
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
from torch.nn import functional as F

import unseen
from unseen.federated import LocalTraining, get_flat, local_update
from unseen.models import MODELS, init_model
from unseen.privacy.dpsgd import DPSGD, dp_sgd_update

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("UNSEEN_DATA_DIR", str(ROOT.parent.parent / "shared" / "data"))
RESULTS = ROOT / "results" / "dp_sgd.json"

# (b) recipes, after Tramer & Boneh 2021: large batches, small clip, SGD with momentum, either their
# end-to-end tanh CNN on pixels or a small tanh CNN on wavelet scattering features (data-independent,
# so free of privacy cost).
RECIPES = {
    "pixels": {"model": {"name": "dp_cnn"}, "train": {"batch_size": 512, "lr": 4.0, "momentum": 0.9},
               "privacy": {"mechanism": "dp_sgd", "clip": 0.1, "delta": 1e-5}},
    "scattering": {"model": {"name": "scatter_cnn"}, "train": {"batch_size": 1024, "lr": 3.0, "momentum": 0.9},
                   "privacy": {"mechanism": "dp_sgd", "clip": 0.1, "delta": 1e-5}},
}


def throughput(model_name: str, n: int, batch: int, steps: int, repeats: int = 3) -> dict:
    data = unseen.data.load("mnist")
    x = torch.from_numpy(data.train.x[:n])
    y = torch.from_numpy(data.train.y[:n])
    samples = steps * batch
    out: dict = {"model": model_name, "expected_batch": batch, "steps": steps, "repeats": repeats}

    def timed(fn) -> float:
        fn(1)  # warm-up step
        start = time.perf_counter()
        fn(steps)
        return samples / (time.perf_counter() - start)

    def plain(k: int) -> None:
        model = init_model(model_name, (1, 28, 28), 10, seed=0)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(k):
            idx = torch.randint(0, n, (batch,))
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()

    model = init_model(model_name, (1, 28, 28), 10, seed=0)
    params = get_flat(model)

    def ours(k: int) -> None:
        local_update(model, params, x[: k * batch], y[: k * batch], LocalTraining(batch_size=batch, lr=0.1),
                     torch.Generator().manual_seed(0))

    def ours_dp(mode: str):
        def fn(k: int) -> None:
            # epochs=1 over k/q records: k Poisson steps of expected size `batch`
            m = k * batch
            dp_sgd_update(model, params, x[:m], y[:m], LocalTraining(lr=0.1),
                          DPSGD(1.0, 1.0, batch / m, grad_sample_mode=mode), torch.Generator().manual_seed(0))
        return fn

    def opacus(k: int) -> None:
        from opacus import PrivacyEngine

        m = init_model(model_name, (1, 28, 28), 10, seed=0)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[: k * batch], y[: k * batch]),
                                             batch_size=batch)
        engine = PrivacyEngine()
        m, opt, loader = engine.make_private(module=m, optimizer=torch.optim.SGD(m.parameters(), lr=0.1),
                                             data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0)
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(m(xb), yb).backward()
            opt.step()

    runs = {"plain_pytorch": plain, "unseen_non_private": ours, "unseen_dp_sgd_bk": ours_dp("bk"),
            "unseen_dp_sgd_ghost": ours_dp("ghost"), "unseen_dp_sgd_hooks": ours_dp("hooks"),
            "opacus_make_private": opacus}
    # Round-robin repeats, median: contenders see the same machine state.
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            rates[name].append(timed(fn))
    for name in runs:
        out[name] = {"samples_per_second": statistics.median(rates[name]), "repeats": rates[name]}
        print(f"  {model_name:<7} {name:<22} {out[name]['samples_per_second']:9.0f} samples/s", flush=True)
    base = out["unseen_non_private"]["samples_per_second"]
    for name in runs:
        out[name]["cost_vs_non_private"] = base / out[name]["samples_per_second"]
    return out


def accuracy(eps_list: list[float], epochs: int, schedule: str = "constant", lr: float | None = None,
             batch: int | None = None, features: str = "pixels", seed: int = 0, model: str | None = None,
             augmult: int = 1) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for eps in eps_list:
            raw = json.loads(json.dumps(RECIPES[features]))
            raw.update({"name": f"dp-mnist-eps{eps:g}", "mode": "central", "seed": seed,
                        "data": {"name": "mnist", "features": features}, "output": {"dir": tmp}})
            raw["train"]["epochs"] = epochs
            raw["train"]["lr_schedule"] = schedule
            if lr is not None:
                raw["train"]["lr"] = lr
            if batch is not None:
                raw["train"]["batch_size"] = batch
            if model is not None:
                raw["model"]["name"] = model
            raw["privacy"]["epsilon"] = eps
            if augmult > 1:
                raw["privacy"]["augmentation_multiplicity"] = augmult
            start = time.perf_counter()
            result = unseen.run(unseen.parse_spec(raw))
            (g,) = result.results["privacy"]["guarantees"]
            row = {"epsilon_target": eps, "epsilon": g["epsilon"], "noise_multiplier": g["noise_multiplier"],
                   "epochs": epochs, "test_accuracy": result.accuracy,
                   "accuracy_per_epoch": [m["test_accuracy"] for m in result.results["rounds"]],
                   "minutes": (time.perf_counter() - start) / 60, "recipe": raw}
            print(f"  eps {eps:g}: {100 * result.accuracy:.2f}% after {epochs} epochs "
                  f"(noise {g['noise_multiplier']:.3f}, {row['minutes']:.1f} min)", flush=True)
            rows.append(row)
    return rows


def federated(rounds: int, features: str = "pixels", epochs: int = 1, batch: int = 32, split: str = "shards",
              sam_rho: float = 0.0, seed: int = 0, adaptive_clip: bool = True, lr: float = 0.1,
              momentum: float = 0.0) -> dict:
    # On scattering features the smallest model wins: DP-FedAvg's noise grows with the parameter count.
    model = "dp_cnn" if features == "pixels" else "scatter_small"
    raw = {"name": "dp-fedavg-mnist", "seed": seed,
           "data": {"name": "mnist", "partition": {"method": split}, "features": features},
           "model": {"name": model}, "train": {"lr": lr, "momentum": momentum, "batch_size": batch, "epochs": epochs,
                                        "sam_rho": sam_rho},
           "federated": {"clients": 100, "fraction": 1.0, "rounds": rounds},
           "privacy": {"mechanism": "dp_fedavg", "epsilon": 8.0, "delta": 1e-5, "clip": 1.0,
                       "adaptive_clip": adaptive_clip}}
    with tempfile.TemporaryDirectory() as tmp:
        raw["output"] = {"dir": tmp}
        start = time.perf_counter()
        result = unseen.run(unseen.parse_spec(raw))
    (g,) = result.results["privacy"]["guarantees"]
    curve = [m["test_accuracy"] for m in result.results["rounds"]]
    print(f"  DP-FedAvg, 100 clients, eps {g['epsilon']:.3g} per user: {100 * result.accuracy:.2f}% after {rounds} "
          f"rounds (noise {g['noise_multiplier']:.3f}; {(time.perf_counter() - start) / 60:.1f} min)", flush=True)
    return {"spec": raw, "guarantee": g, "test_accuracy": result.accuracy, "accuracy_per_round": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", default="abc", help="any of a, b, c")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--eps", default="1,2,3,8")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10, help="(a) steps per timing on cnn (5x on dp_cnn)")
    parser.add_argument("--repeats", type=int, default=5, help="(a) round-robin repeats; the median is reported")
    parser.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine"], help="(b) learning rate")
    parser.add_argument("--lr", type=float, default=None, help="(b) peak learning rate (default: the recipe's)")
    parser.add_argument("--batch", type=int, default=None, help="(b) expected batch size (default: the recipe's)")
    parser.add_argument("--model", default=None, choices=list(MODELS),
                        help="(b) model (default: the recipe's; results stored under a key naming it)")
    parser.add_argument("--features", default="pixels", choices=sorted(RECIPES),
                        help="(b, c) train on pixels (dp_cnn) or on scattering features (scatter_cnn)")
    parser.add_argument("--augmult", type=int, default=1,
                        help="(b) augmentation multiplicity: each record's gradient averaged over this many shifted "
                             "views before clipping (results stored under a key naming it)")
    parser.add_argument("--seed", type=int, default=0,
                        help="(b, c) initialization, sampling and noise (c: and the partition); seeds other than 0 are stored apart")
    parser.add_argument("--local-epochs", type=int, default=1, help="(c) client epochs per round")
    parser.add_argument("--local-batch", type=int, default=32, help="(c) client batch size")
    parser.add_argument("--sam-rho", type=float, default=0.0,
                        help="(c) sharpness-aware minimization radius in the clients' training (0: off; results "
                             "stored under a key naming it)")
    parser.add_argument("--local-lr", type=float, default=0.1, help="(c) client learning rate")
    parser.add_argument("--local-momentum", type=float, default=0.0,
                        help="(c) client SGD momentum (results stored under a key naming it)")
    parser.add_argument("--fixed-clip", action="store_true",
                        help="(c) clip every update at 1.0 instead of tracking the median norm (adaptive clipping)")
    parser.add_argument("--partition", default="shards", choices=["shards", "iid"],
                        help="(c) shards: 2 label-sorted shards per client (McMahan et al.); iid: 600 random records each")
    args = parser.parse_args()
    report = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    report["machine"] = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                         "python": platform.python_version(), "torch": torch.__version__}
    if "a" in args.part:
        print("(a) throughput, expected batch 256")
        # dp_cnn steps take ~15 ms: five times as many keep each timing well above scheduler noise.
        report["throughput"] = [throughput("cnn", 60000, 256, args.steps, args.repeats),
                                throughput("dp_cnn", 60000, 256, 5 * args.steps, args.repeats)]
    if "b" in args.part:
        print(f"(b) accuracy vs epsilon, delta 1e-5, {args.epochs} epochs")
        key = "accuracy" if args.features == "pixels" else f"accuracy_{args.features}"
        key += f"_{args.model}" if args.model else ""
        key += f"_augmult{args.augmult}" if args.augmult > 1 else ""
        key += f"_seed{args.seed}" if args.seed else ""
        rows = accuracy([float(e) for e in args.eps.split(",")], args.epochs, args.lr_schedule, args.lr,
                        args.batch, args.features, args.seed, args.model, args.augmult)
        # Runs for other epsilons (perhaps with other epochs) stay: each row carries its recipe.
        kept = [r for r in report.get(key, []) if r["epsilon_target"] not in {r2["epsilon_target"] for r2 in rows}]
        report[key] = sorted(kept + rows, key=lambda r: r["epsilon_target"])
    if "c" in args.part:
        print(f"(c) user-level DP-FedAvg on MNIST ({args.partition}), 100 clients, epsilon 8")
        key = "federated" if args.features == "pixels" else f"federated_{args.features}"
        key += "" if args.partition == "shards" else f"_{args.partition}"
        key += f"_sam{args.sam_rho:g}" if args.sam_rho else ""
        key += "_fixedclip" if args.fixed_clip else ""
        key += f"_momentum{args.local_momentum:g}" if args.local_momentum else ""
        key += f"_lr{args.local_lr:g}" if args.local_lr != parser.get_default("local_lr") else ""
        key += f"_seed{args.seed}" if args.seed else ""
        report[key] = federated(args.rounds, args.features, args.local_epochs, args.local_batch, args.partition,
                                args.sam_rho, args.seed, not args.fixed_clip, args.local_lr, args.local_momentum)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
