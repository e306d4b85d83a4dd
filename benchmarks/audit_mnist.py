"""Membership audit of an MNIST CNN (issue: attack and audit, figures 1 and 5). Not run in CI.

A pool of 2,000 MNIST training images; the target CNN trains on a random 1,000 (the members) until it
overfits, and each of ``--references`` reference CNNs trains on a random half of the pool (every image
IN for half of them). Loss, RMIA, LiRA (online) and offline LiRA attack the target; the auditor gives
AUC, TPR at 1% and 0.1% FPR and the empirical epsilon lower bound. ``--dp-epsilon`` repeats the audit
with DP-SGD (target and references) at that epsilon.

Writes benchmarks/results/audit_mnist.json.
Usage: .venv/bin/python benchmarks/audit_mnist.py [--references 2 4] [--epochs 20] [--dp-epsilon 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

import unseen
from unseen.audit.membership import Recipe, membership_audit
from unseen.data import load
from unseen.federated.client import LocalTraining
from unseen.privacy import calibrate_noise
from unseen.privacy.dpsgd import DPSGD, steps_per_epoch

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("UNSEEN_DATA_DIR", str(ROOT.parent.parent / "shared" / "data"))


def summary(out: dict) -> dict:
    rows = {}
    for name in ("loss", "rmia", "lira", "lira_offline"):
        r = out[name]
        rows[name] = {"auc": r["auc"], "tpr_at_1pct": r["tpr_at_fpr"]["0.01"]["tpr"],
                      "tpr_at_0.1pct": r["tpr_at_fpr"]["0.001"]["tpr"], "epsilon_lower_bound": r["epsilon_lower_bound"]}
        print(f"    {name:<13} AUC {r['auc']:.3f}   TPR@1%FPR {rows[name]['tpr_at_1pct']:.3f}   TPR@0.1%FPR "
              f"{rows[name]['tpr_at_0.1pct']:.3f}   eps-hat {r['epsilon_lower_bound']:.3f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--references", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--dp-epsilon", type=float, nargs="*", default=[1.0])
    args = parser.parse_args()
    torch.set_num_threads(2)
    ds = load("mnist")
    rng = np.random.default_rng(0)
    idx = rng.choice(len(ds.train), args.pool, replace=False)
    x, y = torch.from_numpy(ds.train.x[idx]), torch.from_numpy(ds.train.y[idx])
    training = LocalTraining(epochs=args.epochs, batch_size=32, lr=0.01, momentum=0.9)  # 100% train accuracy
    results: dict = {"pool": args.pool, "epochs": args.epochs, "runs": []}
    for refs in args.references:
        started = time.perf_counter()
        print(f"non-private CNN, {refs} references", flush=True)
        out = membership_audit(Recipe("cnn", ds.input_shape, ds.n_classes, training), x, y, references=refs,
                               attacks=("loss", "rmia", "lira", "lira_offline"), seed=0)
        wall = time.perf_counter() - started
        print(f"    target accuracy members {out['target_accuracy']['members']:.3f}, non-members "
              f"{out['target_accuracy']['non_members']:.3f}; audit {wall:.0f} s", flush=True)
        results["runs"].append({"dp_epsilon": None, "references": refs, "wall_seconds": wall,
                                "target_accuracy": out["target_accuracy"], "seconds": out["seconds"],
                                "attacks": summary(out)})
    for eps in args.dp_epsilon:
        refs = max(args.references)
        members = args.pool // 2
        q, delta = 64 / members, 1e-5
        z = calibrate_noise(eps, delta, q, args.epochs * steps_per_epoch(q))
        recipe = Recipe("cnn", ds.input_shape, ds.n_classes,
                        LocalTraining(epochs=args.epochs, batch_size=64, lr=0.5), dp=DPSGD(z, 1.0, q))
        started = time.perf_counter()
        print(f"DP-SGD CNN at epsilon {eps} (noise multiplier {z:.3f}), {refs} references", flush=True)
        out = membership_audit(recipe, x, y, references=refs, attacks=("loss", "rmia", "lira", "lira_offline"),
                               seed=0, delta=delta)
        wall = time.perf_counter() - started
        print(f"    target accuracy members {out['target_accuracy']['members']:.3f}, non-members "
              f"{out['target_accuracy']['non_members']:.3f}; audit {wall:.0f} s", flush=True)
        results["runs"].append({"dp_epsilon": eps, "noise_multiplier": z, "references": refs, "wall_seconds": wall,
                                "target_accuracy": out["target_accuracy"], "seconds": out["seconds"],
                                "attacks": summary(out)})
    path = ROOT / "results" / "audit_mnist.json"
    path.write_text(json.dumps({"benchmark": "audit_mnist", "unseen": unseen.__version__, "torch": torch.__version__,
                                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                                **results}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
