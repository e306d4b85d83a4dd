"""Encrypted logistic regression on Adult and heart disease (issue #8, figure 3). Not run in CI.

The server trains on CKKS ciphertexts (``unseen.crypto.he_logreg``): full-batch gradient descent from
zero weights, with the degree-3 sigmoid; the data owner refreshes the encrypted weights each iteration.
Beside it, in the same run, the same gradient descent in plaintext with the exact sigmoid (the
target: encrypted accuracy within 1 point of it) and with the degree-3 polynomial (which isolates
the encryption error). Reports test accuracy, seconds of each role, bytes each way and the CKKS plan.

Reads the real files from UNSEEN_DATA_DIR (default ../shared/data). Writes benchmarks/results/he_logreg.json.
Usage: .venv/bin/python benchmarks/he_logreg.py [--iterations 10] [--lr 1.0] [--datasets adult heart_disease]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import tenseal as ts

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("UNSEEN_DATA_DIR", str(ROOT.parent.parent / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--datasets", nargs="+", default=["adult", "heart_disease"])
    args = parser.parse_args()

    import unseen
    from unseen.crypto.he_logreg import compare
    from unseen.data import load

    report: dict = {"benchmark": "he_logreg", "unseen": unseen.__version__, "tenseal": ts.__version__,
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "runs": []}
    for name in args.datasets:
        ds = load(name)
        started = time.perf_counter()
        row = compare(ds.train.x, ds.train.y, ds.test.x, ds.test.y, iterations=args.iterations, lr=args.lr,
                      on_iteration=lambda done, total, name=name: print(f"  {name}: iteration {done}/{total}", flush=True))
        row["dataset"], row["wall_seconds"] = name, time.perf_counter() - started
        report["runs"].append(row)
        print(f"{name}: encrypted {100 * row['encrypted_accuracy']:.2f}% vs plaintext {100 * row['plaintext_accuracy']:.2f}% "
              f"(poly3 {100 * row['plaintext_poly3_accuracy']:.2f}%), gap {row['gap_points']:.2f} points; server "
              f"{row['server_seconds_per_iteration']:.2f} s/iteration, upload {row['upload_bytes'] / 1e6:.1f} MB, "
              f"{row['bytes_to_server'] / 1e6:.1f} MB to the server and {row['bytes_to_owner'] / 1e6:.1f} MB back in all",
              flush=True)
    (ROOT / "results" / "he_logreg.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
