"""LiRA and RMIA: the score functions on known inputs, and a real audit on an overfit model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unseen.attacks.membership import lira_scores, rmia_scores, true_class_logits
from unseen.audit import audit_scores
from unseen.audit.membership import Recipe, balanced_inclusion, membership_audit
from unseen.data import load
from unseen.federated.client import LocalTraining
from unseen.federated.params import get_flat
from unseen.models import init_model


def test_true_class_probability_and_logit_confidence_agree_and_stay_finite_near_one():
    model = init_model("logreg", (3,), 4, seed=0)
    params = get_flat(model) * 0
    params[:12] = torch.tensor([50.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])  # class 0 very sure for x[0] > 0
    x = torch.tensor([[1.0, 0, 0], [0.0, 0, 0]])
    y = torch.tensor([0, 1])
    p, phi = true_class_logits(model, params, x, y)
    assert p[1] == pytest.approx(0.25) and phi[1] == pytest.approx(np.log(0.25 / 0.75))
    assert np.isfinite(phi[0]) and phi[0] > 40  # p rounds to 1.0 in float64, phi does not blow up


def test_lira_prefers_records_whose_confidence_looks_like_the_in_references():
    rng = np.random.default_rng(0)
    inclusion = balanced_inclusion(4, 200, rng)
    assert (inclusion.sum(0) == 2).all()
    ref_phi = np.where(inclusion, 3.0, 0.0) + rng.normal(0, 0.5, inclusion.shape)
    member = np.arange(200) < 100
    target_phi = np.where(member, 3.0, 0.0) + rng.normal(0, 0.5, 200)
    for online in (True, False):
        s = lira_scores(target_phi, ref_phi, inclusion, online=online)
        assert audit_scores(s[member], s[~member]).auc > 0.95


def test_rmia_scores_are_fractions_of_population_records_beaten():
    target_p = np.array([0.9, 0.1, 0.5])
    ref_p = np.array([[0.5, 0.5, 0.5]])
    s = rmia_scores(target_p, ref_p, target_p, ref_p, gamma=1.0)
    assert s.tolist() == [2 / 3, 0.0, 1 / 3]  # 0.9/0.5 beats 0.1/0.5 and 0.5/0.5
    # With gamma 2 the record must beat z by a factor 2: 1.8 beats 0.2 only, 1.0 beats 0.2 (5x) only.
    assert rmia_scores(target_p, ref_p, target_p, ref_p, gamma=2.0).tolist() == [1 / 3, 0.0, 1 / 3]


def test_reference_attacks_beat_chance_on_an_overfit_digits_mlp():
    ds = load("digits")
    x = torch.from_numpy(ds.train.x[:600])
    y = torch.from_numpy(ds.train.y[:600])
    recipe = Recipe("mlp", ds.input_shape, ds.n_classes, LocalTraining(epochs=60, batch_size=16, lr=0.1),
                    hidden=(128,))
    out = membership_audit(recipe, x, y, references=4, attacks=("loss", "margin", "rmia", "lira", "lira_offline"),
                           seed=1)
    assert out["target_accuracy"]["members"] == 1.0
    for name in ("loss", "margin", "rmia", "lira", "lira_offline"):
        assert out[name]["auc"] > 0.55, name
    assert out["rmia"]["auc"] > out["loss"]["auc"] - 0.02


def test_margin_is_the_true_logit_minus_the_best_other():
    from unseen.attacks.membership import margin_scores

    model = init_model("logreg", (2,), 3, seed=0)
    params = get_flat(model) * 0
    params[:6] = torch.tensor([1.0, 0, 0, 1, -1, -1])  # logits = (x0, x1, -x0 - x1)
    x = torch.tensor([[2.0, 1.0], [0.0, 3.0]])
    s = margin_scores(model, params, x, torch.tensor([0, 0]))
    assert s.tolist() == [1.0, -3.0]
