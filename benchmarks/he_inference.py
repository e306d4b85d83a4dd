"""Encrypted MNIST inference, throughput and latency modes (issue #8, figures 1 and 2). Not run in CI.

1. Trains the CryptoNets / LoLa network (``examples/he_cnn.toml``: conv 5x5x5 stride 2 - square - fc100 -
   square - fc10) in plaintext with ``unseen.run`` on real MNIST.
2. Classifies the whole real test set encrypted (``unseen.crypto.he_inference``): batches of 4,096
   images, one image per slot, CKKS on SEAL through TenSEAL's bindings, server on one thread.
3. Reports encrypted accuracy, agreement of the encrypted argmax with the plaintext model's, server
   seconds per full batch and per image, upload per image, download, evaluation-key bytes and the plan.
4. Latency mode (``unseen.crypto.he_latency``): the first ``--latency-n`` test images one at a time,
   one ciphertext each; server seconds per image (median and 95th percentile), upload, download,
   evaluation keys (relinearization + the planned rotations), agreement and accuracy.

Writes benchmarks/results/he_inference.json. Usage: .venv/bin/python benchmarks/he_inference.py [--model RUN_DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import tenseal as ts

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("UNSEEN_DATA_DIR", str(ROOT.parent.parent / "shared" / "data"))

# Published MNIST figures as issue #8 quotes them, for the table in docs/homomorphic_encryption.md.
PUBLISHED = [
    {"system": "CryptoNets (Gilad-Bachrach et al. 2016)", "accuracy": 98.95,
     "latency": "hundreds of seconds per 8,192-image batch", "threat_model": "HE only, non-interactive"},
    {"system": "E2DM (Jiang et al. 2018)", "accuracy": 98.1, "latency": "28.6 s and 17.5 MB per batch",
     "threat_model": "HE only, non-interactive"},
    {"system": "LoLa (Brutzkus et al. 2019)", "latency": "about 2 s per image", "threat_model": "HE only, non-interactive"},
    {"system": "Gazelle (Juvekar et al. 2018)", "threat_model": "two-party (HE + garbled circuits), interactive"},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a finished he_cnn run folder (default: train one)")
    parser.add_argument("--n", type=int, default=10_000, help="test images to classify encrypted (throughput)")
    parser.add_argument("--latency-n", type=int, default=1_000, help="test images to classify one by one (latency)")
    args = parser.parse_args()

    import unseen
    from unseen.crypto.he_inference import infer, model_forward
    from unseen.crypto.he_latency import infer_latency
    from unseen.experiment import load_spec, load_trained_model

    with tempfile.TemporaryDirectory() as out:
        run_dir = args.model
        train_seconds = None
        if run_dir is None:
            started = time.perf_counter()
            result = unseen.run(load_spec(ROOT.parent / "examples" / "he_cnn.toml"), output_dir=out)
            train_seconds, run_dir = time.perf_counter() - started, result.run_dir
            print(f"trained he_cnn in {train_seconds:.0f} s: plaintext accuracy {100 * result.accuracy:.2f}%", flush=True)
        _, ds, net = load_trained_model(run_dir)
    images, labels = ds.test.x[: args.n], ds.test.y[: args.n]
    batches: list[float] = []
    res = infer(net, ds.input_shape, images, ds.train.x[:2000],
                on_batch=lambda done, total: print(f"  {done}/{total} images", flush=True) or batches.append(done))
    encrypted, plain = res["logits"].argmax(1), model_forward(net, images).argmax(1)
    full_batches = len(images) // res["plan"].he.slots
    row = {
        "images": len(images), "train_seconds": train_seconds,
        "encrypted_accuracy": float(np.mean(encrypted == labels)), "plaintext_accuracy": float(np.mean(plain == labels)),
        "argmax_agreement": float(np.mean(encrypted == plain)),
        "server_seconds": res["server_seconds"], "server_seconds_per_batch": res["server_seconds"] / len(batches),
        "server_ms_per_image_full_batch": 1e3 * res["server_seconds"] / len(batches) / res["plan"].he.slots,
        "server_ms_per_image_overall": 1e3 * res["server_seconds_per_image"], "full_batches": full_batches,
        "client_encrypt_seconds": res["client_encrypt_seconds"], "client_decrypt_seconds": res["client_decrypt_seconds"],
        "upload_kb_per_image": res["upload_bytes_per_image"] / 1e3,
        "upload_kb_per_image_full_batch": res["upload_bytes"] / len(batches) / res["plan"].he.slots / 1e3,
        "download_bytes": res["download_bytes"],
        "evaluation_key_mb": res["evaluation_key_bytes"] / 1e6, "plan": res["plan"].he.to_dict(),
        "logit_scale": res["plan"].logit_scale, "server_threads": 1,
    }
    print(json.dumps(row, indent=2))

    few, few_labels = ds.test.x[: args.latency_n], ds.test.y[: args.latency_n]
    lat = infer_latency(net, ds.input_shape, few, ds.train.x[:2000],
                        on_image=lambda done, total: done % 100 == 0 and print(f"  latency {done}/{total}", flush=True))
    enc, pla = lat["logits"].argmax(1), model_forward(net, few).argmax(1)
    latency = {
        "images": len(few), "encrypted_accuracy": float(np.mean(enc == few_labels)),
        "plaintext_accuracy": float(np.mean(pla == few_labels)), "argmax_agreement": float(np.mean(enc == pla)),
        "server_seconds_median": lat["server_seconds_median"],
        "server_seconds_p95": float(np.percentile(lat["server_seconds"], 95)),
        "upload_kb_per_image": lat["upload_bytes_per_image"] / 1e3,
        "download_kb_per_image": lat["download_bytes_per_image"] / 1e3,
        "evaluation_key_mb": lat["evaluation_key_bytes"] / 1e6, "galois_key_mb": lat["galois_key_bytes"] / 1e6,
        "relin_key_mb": lat["relin_key_bytes"] / 1e6, "rotation_steps": lat["rotation_steps"],
        "server_setup_seconds": lat["server_setup_seconds"], "plan": lat["plan"].network.he.to_dict(),
        "server_threads": 1,
    }
    print(json.dumps(latency, indent=2))
    (ROOT / "results" / "he_inference.json").write_text(json.dumps({
        "benchmark": "he_inference", "unseen": unseen.__version__, "tenseal": ts.__version__,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "result": row, "latency": latency,
        "published": PUBLISHED,
    }, indent=2))


if __name__ == "__main__":
    main()
