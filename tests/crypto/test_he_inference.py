"""Encrypted inference: the compiled network is the model, ciphertexts give its argmax, the server gets no key."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from unseen.crypto import he_inference as hei
from unseen.crypto.he_plan import HEPlanError
from unseen.models import Square, init_model


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), Square(), nn.Flatten(), nn.Linear(32, 8),
                         Square(), nn.Linear(8, 4))


def test_the_compiled_network_computes_what_the_model_computes():
    model = init_model("he_cnn", (1, 28, 28), 10, seed=0)
    images = np.random.default_rng(0).normal(size=(16, 1, 28, 28))
    layers = hei.compile_network(model, (1, 28, 28))
    assert [type(layer).__name__ for layer in layers] == ["Linear", "Square", "Linear", "Square", "Linear"]
    np.testing.assert_allclose(hei.plaintext_forward(layers, images), hei.model_forward(model, images), rtol=1e-4, atol=1e-4)


def test_layers_that_ckks_cannot_evaluate_are_named():
    relu = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(HEPlanError, match=r"layer 2 \(ReLU\)"):
        hei.compile_network(relu, (4,))
    pool = init_model("cnn", (1, 28, 28), 10, seed=0)
    with pytest.raises(HEPlanError, match="ReLU"):
        hei.compile_network(pool, (1, 28, 28))


def test_encrypted_argmax_equals_plaintext_and_nothing_secret_reaches_the_server():
    model = _small_net()
    rng = np.random.default_rng(1)
    images = rng.normal(size=(64, 1, 8, 8))
    plan = hei.plan_network(model, (1, 8, 8), rng.normal(size=(256, 1, 8, 8)))
    assert plan.depth == 5 and plan.he.poly_degree == 8192 and plan.he.modulus_bits <= 218
    client = hei.Client(plan)
    uploads = client.encrypt(images)
    assert len(uploads) == 64  # one ciphertext per pixel, each holding all 64 images
    logits = client.decrypt(hei.server_evaluate(plan, client.evaluation_keys, uploads), len(images))
    expected = hei.model_forward(model, images)
    np.testing.assert_allclose(logits, expected, atol=1e-3 * np.abs(expected).max())
    assert np.array_equal(logits.argmax(1), expected.argmax(1))
    # The secret key's serialized bytes appear nowhere in what the server receives.
    secret = hei._dump(client.secret)
    sent = b"".join([client.evaluation_keys, *uploads])
    windows = [secret[i : i + 32] for i in range(len(secret) // 4, len(secret) - 32, len(secret) // 8)]
    assert windows and not any(w in sent for w in windows)


def test_values_beyond_what_the_modulus_holds_are_refused_before_encryption():
    model = _small_net()
    huge = np.full((4, 1, 8, 8), 1e6)
    with pytest.raises(HEPlanError, match="scale the inputs down"):
        hei.plan_network(model, (1, 8, 8), huge)


def test_latency_mode_classifies_one_image_per_ciphertext_with_only_the_planned_rotations():
    from unseen.crypto import he_latency as hel

    model = _small_net()
    rng = np.random.default_rng(2)
    images = rng.normal(size=(3, 1, 8, 8))
    plan = hel.plan_latency(model, (1, 8, 8), rng.normal(size=(256, 1, 8, 8)))
    # Kernel steps (1 pixel, 1 row of 8), baby and giant steps, and the folds of each dense layer.
    assert plan.galois_steps == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    chain = plan.network.he.coeff_bits  # the key-switching prime takes the bits security leaves: quieter rotations
    assert chain[-1] > chain[0] and plan.network.he.modulus_bits == 218
    client = hel.LatencyClient(plan)
    server = hel.LatencyServer(plan, client.relin_keys, client.galois_keys)
    expected = hei.model_forward(model, images)
    for image, want in zip(images, expected, strict=True):
        sent = client.encrypt(image)
        got = client.decrypt(server.evaluate(sent), 4)
        # CKKS noise is random and cannot be seeded: at this 29-bit scale the worst logit is off by about
        # 9e-4 of the largest (std 3e-4, 1.8e-3 seen in 45 runs). 1e-2 never fails by chance; a wrong
        # rotation or weight is off by the size of the values themselves.
        np.testing.assert_allclose(got, want, atol=1e-2 * np.abs(expected).max())
        assert got.argmax() == want.argmax()
    secret = hei._dump(client.secret)
    received = b"".join([client.relin_keys, client.galois_keys, sent])
    windows = [secret[i : i + 32] for i in range(len(secret) // 4, len(secret) - 32, len(secret) // 8)]
    assert not any(w in received for w in windows)


def test_latency_mode_refuses_inputs_it_cannot_pack():
    from unseen.crypto import he_latency as hel

    wide = nn.Sequential(nn.Conv2d(3, 2, 3), Square(), nn.Flatten(), nn.Linear(2 * 6 * 6, 2))
    with pytest.raises(HEPlanError, match="in_channels = 1"):
        hel.plan_latency(wide, (3, 8, 8), np.zeros((2, 3, 8, 8)))
