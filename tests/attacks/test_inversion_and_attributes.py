"""Model inversion and attribute inference, on real data and on cases with a known answer."""

from __future__ import annotations

import numpy as np
import torch

from tests.conftest import needs
from unseen.attacks.attribute_inference import attribute_inference_report, model_attack, one_hot_group
from unseen.attacks.model_inversion import class_representatives, inversion_report
from unseen.audit.membership import Recipe, train
from unseen.data import load
from unseen.federated.client import LocalTraining
from unseen.federated.params import get_flat
from unseen.models import init_model


def test_model_inversion_gives_representatives_an_independent_model_recognises():
    ds = load("digits")
    half = len(ds.train) // 2
    x, y = torch.from_numpy(ds.train.x), torch.from_numpy(ds.train.y)
    target, params = train(Recipe("mlp", ds.input_shape, 10, LocalTraining(epochs=30, lr=0.1), (64,)), x[:half],
                           y[:half], 0)
    evaluator, eparams = train(Recipe("logreg", ds.input_shape, 10, LocalTraining(epochs=30, lr=0.1)), x[half:],
                               y[half:], 1)
    reps = class_representatives(target, params, list(range(10)), ds.input_shape, tv_weight=0.0, bounds=(-3, 3))
    means = torch.stack([x[:half][y[:half] == c].mean(0) for c in range(10)])
    report = inversion_report(reps, list(range(10)), evaluator, eparams, means)
    assert report["evaluator_accuracy"] >= 0.8
    assert report["nearest_class_mean_accuracy"] >= 0.8


def test_the_model_attack_recovers_an_attribute_the_model_depends_on_entirely():
    # A logistic regression whose label is exactly the one-hot attribute: the attack must be perfect.
    names = ["age", "sex_Female", "sex_Male"]
    rng = np.random.default_rng(0)
    sex = rng.integers(0, 2, 200)
    x = np.stack([rng.normal(size=200), (sex == 0).astype(float), (sex == 1).astype(float)], 1).astype(np.float32)
    model = init_model("logreg", (3,), 2, seed=0)
    params = get_flat(model) * 0
    params[:6] = torch.tensor([0.0, 5.0, -5.0, 0.0, -5.0, 5.0])  # weight rows: class 0 <- Female, class 1 <- Male
    group = one_hot_group(names, "sex")
    assert (model_attack(model, params, x, sex.astype(np.int64), group) == sex).all()


@needs("adult")
def test_attribute_inference_on_adult_is_reported_beside_imputation():
    ds = load("adult")
    x, y = ds.train.x, ds.train.y
    model, params = train(Recipe("mlp", ds.input_shape, 2, LocalTraining(epochs=5, lr=0.05), (64,)),
                          torch.from_numpy(x[:1000]), torch.from_numpy(y[:1000]), 0)
    report = attribute_inference_report(model, params, (x[:1000], y[:1000]), (ds.test.x[:1000], ds.test.y[:1000]),
                                        (x[5000:15000], y[5000:15000]), one_hot_group(ds.feature_names, "sex"))
    for side in ("members", "non_members"):
        r = report[side]
        assert r["imputation_accuracy"] > r["majority_accuracy"] + 0.05  # sex is predictable from the rest
        assert 0.0 <= r["model_attack_accuracy"] <= 1.0 and r["records"] == 1000
    # Jayaraman & Evans's point, measured: the model attack does no better than imputation here.
    assert report["members"]["model_attack_accuracy"] < report["members"]["imputation_accuracy"]
