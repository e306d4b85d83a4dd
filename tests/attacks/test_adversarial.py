"""FGSM and PGD: perturbations stay in budget, PGD is at least as strong as FGSM, accuracy falls."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import needs
from unseen.attacks.adversarial import fgsm, pgd, robustness_curve
from unseen.audit.membership import Recipe, train
from unseen.data import load
from unseen.federated.client import LocalTraining


def test_pgd_and_fgsm_stay_within_budget_and_pgd_hurts_at_least_as_much():
    ds = load("digits")
    x, y = torch.from_numpy(ds.test.x), torch.from_numpy(ds.test.y)
    recipe = Recipe("mlp", ds.input_shape, ds.n_classes, LocalTraining(epochs=20, batch_size=32, lr=0.1), (64,))
    model, params = train(recipe, torch.from_numpy(ds.train.x), torch.from_numpy(ds.train.y), 0)
    eps = 0.3  # in standardized feature units: digits features have no pixel bounds here
    adv_f = fgsm(model, params, x, y, eps, bounds=None)
    adv_p = pgd(model, params, x, y, eps, steps=20, bounds=None, generator=torch.Generator().manual_seed(0))
    assert float((adv_f - x).abs().max()) <= eps + 1e-5 and float((adv_p - x).abs().max()) <= eps + 1e-5  # float32
    curve = robustness_curve(model, params, x, y, (0.0, 0.3), bounds=None, steps=20)
    fgsm_acc = robustness_curve(model, params, x, y, (0.3,), attack="fgsm", bounds=None)[0]["accuracy"]
    assert curve[0]["accuracy"] > 0.9
    assert curve[1]["accuracy"] <= fgsm_acc + 1e-9 < curve[0]["accuracy"]


@pytest.mark.slow
@needs("mnist")
def test_pgd_at_0_3_breaks_a_non_robust_mnist_cnn():
    ds = load("mnist")
    recipe = Recipe("cnn", ds.input_shape, ds.n_classes, LocalTraining(epochs=1, batch_size=64, lr=0.05,
                                                                       momentum=0.9))
    model, params = train(recipe, torch.from_numpy(ds.train.x[:20000]), torch.from_numpy(ds.train.y[:20000]), 0)
    x, y = torch.from_numpy(ds.test.x[:500]), torch.from_numpy(ds.test.y[:500])
    curve = robustness_curve(model, params, x, y, (0.0, 0.1, 0.3), mean=0.1307, std=0.3081)
    assert curve[0]["accuracy"] > 0.95
    assert curve[2]["accuracy"] < 0.10  # must-show 4 of the attack-and-audit issue


def test_pgd_in_a_run_stores_a_falling_robustness_curve(tmp_path):
    from unseen.experiment import parse_spec, run

    r = run(parse_spec({"data": {"name": "digits"}, "model": {"name": "mlp", "hidden": [64]}, "train": {"lr": 0.1},
                        "federated": {"clients": 2, "rounds": 5}, "audit": {"attacks": ["pgd"]}}),
            output_dir=tmp_path).results
    curve = r["audit"]["pgd"]["curve"]
    assert [c["eps"] for c in curve] == [0.0, 0.05, 0.1, 0.2, 0.3] and r["audit"]["pgd"]["units"] == "standardized features"
    accs = [c["accuracy"] for c in curve]
    assert accs[0] == pytest.approx(r["final"]["test_accuracy"], abs=1e-6) and accs[-1] < accs[0]
    assert (next(tmp_path.iterdir()) / "report.html").is_file()  # the report renders beside a non-membership audit
