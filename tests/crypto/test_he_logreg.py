"""Encrypted logistic regression and the CKKS planner: right answers, no key to the server, refusals first."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts

from tests.conftest import needs
from unseen.crypto import he_logreg
from unseen.crypto.he_plan import HEPlan, HEPlanError, check, context, evaluation_context, plan_ckks


def test_the_planner_picks_the_smallest_secure_ring_and_explains_what_cannot_work():
    plan = plan_ckks(4, scale_bits=30, integer_bits=12)
    assert plan.poly_degree == 8192 and plan.coeff_bits == (42, 30, 30, 30, 30, 42) and plan.modulus_bits <= 218
    assert plan_ckks(1, scale_bits=25, integer_bits=10).poly_degree == 4096  # 35 + 25 + 35 = 95 <= 109
    assert plan_ckks(0, scale_bits=20, integer_bits=5, min_slots=8000).poly_degree == 16384
    with pytest.raises(HEPlanError, match="at most depth 19"):
        plan_ckks(30, scale_bits=40, integer_bits=20)
    with pytest.raises(HEPlanError, match="limited to 60 bits"):
        plan_ckks(2, scale_bits=50, integer_bits=20)
    with pytest.raises(HEPlanError, match="below 128-bit security"):
        check(HEPlan(4096, (42, 30, 30, 30, 30, 42), 30, 4))
    with pytest.raises(HEPlanError, match="only 1 primes"):
        check(plan_ckks(1, scale_bits=30, integer_bits=12), depth=4)


def test_a_plan_too_shallow_for_training_is_refused_before_anything_is_encrypted(monkeypatch):
    encrypted = []
    monkeypatch.setattr(he_logreg, "owner_encrypt", lambda *a, **k: encrypted.append(1))
    x, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    with pytest.raises(HEPlanError, match="rescales 4 times"):
        he_logreg.train_encrypted(x, y, plan=plan_ckks(2, scale_bits=30, integer_bits=12))
    assert not encrypted


def test_what_the_server_receives_holds_no_secret_key():
    plan = he_logreg.he_plan()
    ctx = context(plan)
    sent = evaluation_context(ctx)
    server = ts.context_from(sent)
    assert ctx.is_private() and not server.is_private()
    assert ts.context_from(ctx.serialize(save_secret_key=True)).is_private()  # a key, when sent, would show
    data = he_logreg.owner_encrypt(ctx, np.ones((3, 2)), np.array([0, 1, 1]), plan.slots)
    grads = he_logreg.server_gradient(data, he_logreg.owner_weights(ctx, np.zeros(3), plan.slots))
    with pytest.raises(ValueError, match="secret_key"):  # the server cannot read its own result
        ts.ckks_vector_from(server, grads[0]).decrypt()
    private_upload = he_logreg.EncryptedDataset(ctx.serialize(save_secret_key=True), data.features, data.labels, 3)
    with pytest.raises(ValueError, match="holds the secret key"):
        he_logreg.server_gradient(private_upload, [])


@needs("heart-disease")
def test_encrypted_training_on_heart_disease_matches_the_plaintext_algorithm():
    from unseen.data import load

    ds = load("heart_disease")
    iterations, lr = 3, 1.0
    result = he_logreg.train_encrypted(ds.train.x, ds.train.y, iterations=iterations, lr=lr)
    poly = he_logreg.plaintext_reference(ds.train.x, ds.train.y, iterations=iterations, lr=lr, sigmoid="poly3")
    exact = he_logreg.plaintext_reference(ds.train.x, ds.train.y, iterations=iterations, lr=lr)
    # Encryption adds only CKKS noise at scale 2^30 to the same computation.
    assert np.max(np.abs(result.weights - poly)) < 1e-3
    enc_acc = he_logreg.accuracy(result.weights, ds.test.x, ds.test.y)
    assert enc_acc == he_logreg.accuracy(poly, ds.test.x, ds.test.y)
    assert abs(enc_acc - he_logreg.accuracy(exact, ds.test.x, ds.test.y)) <= 0.01
    assert enc_acc > 0.75
    costs = result.costs
    assert costs["upload_bytes"] > ds.train.x.size * 8 and costs["server_seconds"] > 0
