"""Gradient inversion as part of a run's audit: tiny clients leak, big updates and secure sums do not."""

from __future__ import annotations

import torch

from tests.conftest import needs
from unseen.experiment import _inversion_audit, build_plan, load_dataset, parse_spec, run

pytestmark = needs("mnist")


def _spec(**extra) -> dict:
    return {"data": {"name": "mnist"}, "model": {"name": "mlp", "hidden": [64]},
            "train": {"batch_size": 1, "lr": 0.1, "epochs": 1}, "federated": {"clients": 2, "rounds": 1},
            "audit": {"attacks": ["gradient_inversion"], "inversion_images": 1}, **extra}


def test_a_one_image_client_is_reconstructed_from_its_round_one_update():
    spec = parse_spec(_spec())
    dataset = load_dataset(spec)
    plan, _ = build_plan(spec, dataset, torch.device("cpu"))
    plan.clients = [(c[0][:1], c[1][:1]) for c in plan.clients]  # clients holding one image each
    out = _inversion_audit(spec, plan, dataset)
    (seen,) = out["observed"]
    assert seen["unrolled_local_steps"] == 1 and seen["records"] == 1
    assert seen["psnr_best"] >= 25 > out["blank_image_psnr"] and seen["ssim_best"] > 0.9


def test_a_real_run_reports_inversion_of_big_updates_as_unrecognisable(tmp_path):
    raw = _spec(federated={"clients": 10, "rounds": 1}, train={"batch_size": 64, "lr": 0.1, "epochs": 1})
    raw["audit"]["inversion_images"] = 4
    raw["audit"]["inversion_steps"] = 200
    out = run(parse_spec(raw), output_dir=tmp_path).results["audit"]["gradient_inversion"]
    (seen,) = out["observed"]
    assert seen["records"] == 6000 and seen["unrolled_local_steps"] is None
    assert seen["psnr_best"] < 20 and seen["ssim_best"] < 0.5  # nothing recognisable from 6,000 images
    raw["privacy"] = {"secure_aggregation": "secagg+"}
    secure = run(parse_spec(raw), output_dir=tmp_path / "s").results["audit"]["gradient_inversion"]
    assert secure["observed"][0]["what"].startswith("the secure sum of 10")
