"""Vertical federated learning on UCI Adult: what it gains, what it costs, what it leaks. Not run in CI.

Runs ``examples/vertical_adult.toml`` (three parties with different columns, each holding 90% of the
people; PSI aligns the 73% all three hold; a split network trains on them) for each seed, and beside
it in the same process:

- **plain joined**: the same network and the same SGD steps on the same aligned people in one place,
  in plain PyTorch (the weights are the same as split training's, tested in
  tests/federated/test_vertical.py): the time split training adds by encoding every message;
- **label party alone**: the label party's own columns only (reported by the run itself);
- **all people, one place**: the joined network trained on every training person (no overlap loss):
  what partial overlap costs.

Reports test accuracy, the label-leakage attacks' AUC (passive party 1, last epoch), PSI seconds and
bytes, training seconds against the plain loop, and bytes per epoch. Then, with label DP (randomized
response) at each of ``--label-epsilons``: accuracy and the attacks' AUC; and for the first seed, a
label-canary audit (``--canaries`` people get fair-coin labels) without label DP and at each epsilon:
the empirical epsilon, a lower bound that must stay under the formal one.

Reads Adult from UNSEEN_DATA_DIR (default ../shared/data). Writes benchmarks/results/vertical.json.
Usage: .venv/bin/python benchmarks/vertical.py [--seeds 0 1 2] [--label-epsilons 0.5 1 2 4]
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

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("UNSEEN_DATA_DIR", str(ROOT.parent.parent / "shared" / "data"))


def plain_joined(xs, y, xs_test, y_test, spec, seed: int) -> tuple[float, float]:
    """(accuracy, training seconds) of the joined network, trained in one place with the same batches."""
    import torch
    from torch.nn import functional as F

    from unseen.federated.client import cosine_factor
    from unseen.federated.vertical import evaluate_split, split_model
    from unseen.runtime.vertical import epoch_order

    v, t = spec.vertical, spec.train
    model = split_model([x.shape[1] for x in xs], 2, embedding=v.embedding, bottom_hidden=v.bottom_hidden,
                        top_hidden=v.top_hidden, seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    started = time.perf_counter()
    for epoch in range(1, t.epochs + 1):
        if t.lr_schedule == "cosine":
            for group in opt.param_groups:
                group["lr"] = t.lr * cosine_factor(epoch, t.epochs)
        order = epoch_order(len(y), seed, epoch)
        for s in range(0, len(y), t.batch_size):
            idx = order[s : s + t.batch_size]
            opt.zero_grad()
            F.cross_entropy(model([x[idx] for x in xs]), y[idx]).backward()
            opt.step()
    seconds = time.perf_counter() - started
    return evaluate_split(model, xs_test, y_test)[1], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--label-epsilons", type=float, nargs="*", default=[0.5, 1.0, 2.0, 4.0],
                        help="also run with label DP (randomized response) at these epsilons")
    parser.add_argument("--canaries", type=int, default=1000, help="label canaries in the audit runs")
    args = parser.parse_args()

    import torch

    import unseen
    from unseen import experiment
    from unseen.runtime.vertical import select_columns

    # Warm-up: the first optimizer step of a process imports parts of torch (about 0.7 s here); neither
    # contender should pay it inside its timing.
    warm = torch.nn.Linear(2, 2)
    torch.optim.SGD(warm.parameters(), lr=0.1, momentum=0.9).step()

    rows_out = []
    for seed in args.seeds:
        spec = experiment.load_spec(ROOT.parent / "examples" / "vertical_adult.toml", [f"seed={seed}"])
        with tempfile.TemporaryDirectory() as tmp:
            r = experiment.run(spec, output_dir=tmp).results
        # The same aligned people and columns for the plain loop (PSI runs again: the intersection does not
        # depend on its keys, so the people are the same).
        ds = experiment.load_dataset(spec)
        tables = experiment.vertical_tables(spec, ds)
        d = tables.data
        plain_acc, plain_seconds = plain_joined(d.train, d.y_train, d.test, d.y_test, spec, seed)
        everyone_acc, _ = plain_joined(select_columns(torch.from_numpy(ds.train.x), tables.columns),
                                       torch.from_numpy(ds.train.y), d.test, d.y_test, spec, seed)
        epochs = r["rounds"]
        row = {
            "seed": seed, "aligned_people": r["vertical"]["aligned_people"], "train_people": len(ds.train),
            "vertical_accuracy": r["final"]["test_accuracy"],
            "plain_joined_accuracy": plain_acc,
            "label_party_alone_accuracy": r["vertical"]["label_party_alone_accuracy"],
            "all_people_one_place_accuracy": everyone_acc,
            "label_leakage_auc": {k.removeprefix("label_leakage_"): v["auc"] for k, v in r["audit"].items()},
            "psi_seconds": r["vertical"]["psi_seconds"], "psi_bytes": r["vertical"]["psi_bytes"],
            "train_seconds": r["costs"]["train_seconds"], "plain_train_seconds": plain_seconds,
            "bytes_up_per_epoch": epochs[-1]["bytes_up"], "bytes_down_per_epoch": epochs[-1]["bytes_down"],
        }
        row["train_seconds_ratio"] = row["train_seconds"] / plain_seconds
        rows_out.append(row)
        print(f"seed {seed}: vertical {100 * row['vertical_accuracy']:.2f}% (plain joined {100 * plain_acc:.2f}%), "
              f"label party alone {100 * row['label_party_alone_accuracy']:.2f}%, all people in one place "
              f"{100 * everyone_acc:.2f}%; leakage AUC {row['label_leakage_auc']}; PSI {row['psi_seconds']:.1f} s "
              f"{row['psi_bytes'] / 1e6:.1f} MB; training {row['train_seconds']:.1f} s vs plain "
              f"{plain_seconds:.1f} s ({row['train_seconds_ratio']:.2f}x)", flush=True)

    def run_example(seed: int, overrides: list[str]) -> dict:
        spec = experiment.load_spec(ROOT.parent / "examples" / "vertical_adult.toml", [f"seed={seed}", *overrides])
        with tempfile.TemporaryDirectory() as tmp:
            return experiment.run(spec, output_dir=tmp).results

    label_dp = []
    for eps in args.label_epsilons:
        for seed in args.seeds:
            r = run_example(seed, ["privacy.mechanism=randomized_response", f"privacy.epsilon={eps}"])
            row = {"epsilon": eps, "seed": seed, "accuracy": r["final"]["test_accuracy"],
                   "label_leakage_auc": {k.removeprefix("label_leakage_"): v["auc"] for k, v in r["audit"].items()}}
            label_dp.append(row)
            print(f"label DP epsilon {eps:g}, seed {seed}: {100 * row['accuracy']:.2f}%; leakage AUC "
                  f"{row['label_leakage_auc']}", flush=True)
    # The audit of the claim: label canaries (random labels, independent of the features), seed 0.
    canary_audits = []
    for eps in [None, *args.label_epsilons]:
        dp = [] if eps is None else ["privacy.mechanism=randomized_response", f"privacy.epsilon={eps}"]
        r = run_example(args.seeds[0], [f"audit.canaries={args.canaries}", *dp])
        c = r["audit"]["canary"]
        canary_audits.append({"epsilon": eps, "accuracy": r["final"]["test_accuracy"], **c})
        print(f"label canaries, epsilon {eps}: eps-hat {c['epsilon_lower_bound']:.3f} ({c['correct']}/{c['guesses']} "
              f"guesses right on {c['canaries']} canaries), violation {c['violation']}", flush=True)

    def mean(key: str) -> float:
        return statistics.mean(r[key] for r in rows_out)

    summary = {k: mean(k) for k in ("vertical_accuracy", "label_party_alone_accuracy", "all_people_one_place_accuracy",
                                    "train_seconds_ratio", "psi_seconds")}
    summary["label_leakage_auc"] = {k: statistics.mean(r["label_leakage_auc"][k] for r in rows_out)
                                    for k in rows_out[0]["label_leakage_auc"]}
    report = {"benchmark": "vertical", "unseen": unseen.__version__, "spec": "examples/vertical_adult.toml",
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
              "runs": rows_out, "mean": summary, "label_dp": label_dp, "label_canary_audits": canary_audits}
    (ROOT / "results" / "vertical.json").write_text(json.dumps(report, indent=2))
    print("mean:", json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
