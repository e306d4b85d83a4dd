"""Gradient inversion of federated updates on real MNIST (issue: attack and audit, figure 3). Not run in CI.

What a curious server reconstructs from one client's update, as the update carries more data:
FedSGD updates of batch 1, 4 and 16 (labels given to the attacker for batches; iDLG recovers a single
image's label), multi-step FedAvg updates of 1, 2 and 5 local SGD steps on one image (the attack
unrolls the same steps), the CNN on one image, and the secure-aggregation sum of 10 single-image
updates (inverted as one image, and as a batch with the labels known), and the sum of 10 clients' updates
on 16 images each. PSNR is on [0, 1] pixels; for a batch, each original is matched with its best
reconstruction.

Writes benchmarks/results/gradient_inversion.json.
Usage: .venv/bin/python benchmarks/gradient_inversion.py [--steps 500]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import unseen
from unseen.attacks.gradient_inversion import (
    client_gradient,
    invert_gradients,
    local_update_delta,
    matched_psnr,
    recover_label,
)
from unseen.data import load
from unseen.models import init_model

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("UNSEEN_DATA_DIR", str(ROOT.parent.parent / "shared" / "data"))


def pixels(z: torch.Tensor) -> torch.Tensor:
    return (z * 0.3081 + 0.1307).clamp(0, 1)


def row(name: str, scores: list[float], started: float, **extra) -> dict:
    out = {"case": name, "psnr_mean": statistics.mean(scores), "psnr_median": statistics.median(scores),
           "psnr_max": max(scores), "psnr_all": scores, "seconds": time.perf_counter() - started, **extra}
    print(f"  {name:<34} PSNR mean {out['psnr_mean']:5.1f} dB, median {out['psnr_median']:5.1f}, max "
          f"{out['psnr_max']:5.1f}  ({out['seconds']:.0f} s)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(2)
    ds = load("mnist")
    x, y = torch.from_numpy(ds.test.x[:16]), torch.from_numpy(ds.test.y[:16])
    shape = (1, 28, 28)
    rows = []
    mlp = init_model("mlp", shape, 10, seed=0)
    blank = [float(10 * torch.log10(1 / ((pixels(torch.full(shape, -0.4242)) - pixels(x[i])) ** 2).mean()))
             for i in range(16)]
    print(f"reference: a blank image scores {min(blank):.1f} to {max(blank):.1f} dB against these originals")
    print("FedSGD, MLP, batch size:")
    for b in (1, 4, 16):
        started = time.perf_counter()
        update = client_gradient(mlp, x[:b], y[:b])
        label_ok = recover_label(update) == int(y[0]) if b == 1 else None
        rec = invert_gradients(mlp, update, shape, labels=None if b == 1 else y[:b].tolist(), steps=args.steps)
        images = rec.image[None] if b == 1 else rec.image
        rows.append(row(f"fedsgd batch {b}", matched_psnr(pixels(images), pixels(x[:b])), started,
                        batch=b, label_recovered=label_ok))
    print("FedAvg, MLP, one image, local SGD steps (lr 0.1):")
    for k in (1, 2, 5):
        started = time.perf_counter()
        update = local_update_delta(mlp, x[:1], y[:1], k, 0.1)
        rec = invert_gradients(mlp, update, shape, labels=[int(y[0])], local_steps=k, local_lr=0.1, steps=args.steps)
        rows.append(row(f"fedavg {k} local steps", matched_psnr(pixels(rec.image[None]), pixels(x[:1])), started,
                        local_steps=k))
    print("FedSGD, CNN, one image:")
    cnn = init_model("cnn", shape, 10, seed=0)
    started = time.perf_counter()
    update = client_gradient(cnn, x[:1], y[:1])
    rec = invert_gradients(cnn, update, shape, steps=args.steps)
    rows.append(row("fedsgd cnn batch 1", matched_psnr(pixels(rec.image[None]), pixels(x[:1])), started,
                    label_recovered=rec.label == int(y[0])))
    print("Secure aggregation: the sum of 10 single-image MLP updates, inverted as one image:")
    started = time.perf_counter()
    summed = [sum(parts) for parts in zip(*[client_gradient(mlp, x[i:i + 1], y[i:i + 1]) for i in range(10)],
                                          strict=True)]
    rec = invert_gradients(mlp, summed, shape, steps=args.steps)
    scores = [matched_psnr(pixels(rec.image[None]), pixels(x[i:i + 1]))[0] for i in range(10)]
    rows.append(row("secagg sum of 10 (as one image)", scores, started))
    started = time.perf_counter()
    rec = invert_gradients(mlp, summed, shape, labels=y[:10].tolist(), steps=args.steps)
    rows.append(row("secagg sum of 10 (as a batch of 10)", matched_psnr(pixels(rec.image), pixels(x[:10])), started))
    started = time.perf_counter()
    xs, ys = torch.from_numpy(ds.test.x[:160]), torch.from_numpy(ds.test.y[:160])
    summed = [sum(parts) for parts in zip(*[client_gradient(mlp, xs[16 * i:16 * i + 16], ys[16 * i:16 * i + 16])
                                            for i in range(10)], strict=True)]
    rec = invert_gradients(mlp, summed, shape, labels=ys.tolist(), steps=args.steps)
    rows.append(row("secagg sum of 10 x 16 images (batch 160)", matched_psnr(pixels(rec.image), pixels(xs)), started))
    path = ROOT / "results" / "gradient_inversion.json"
    path.write_text(json.dumps({"benchmark": "gradient_inversion", "unseen": unseen.__version__,
                                "torch": torch.__version__, "steps": args.steps, "blank_image_psnr": blank,
                                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                                "rows": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
