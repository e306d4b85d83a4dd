"""CKKS aggregation: the server adds what it cannot read, and plans that cannot work are refused first."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts

from unseen.crypto import ckks
from unseen.crypto.secagg import SecAggAbort


def test_the_sum_is_right_and_the_server_context_holds_no_key():
    rng = np.random.default_rng(0)
    vectors = {c: rng.normal(0, 1, 5000) for c in range(5)}
    total, stats = ckks.encrypted_sum(vectors)
    assert np.max(np.abs(total - sum(vectors.values()))) < 1e-5
    assert stats["bytes_up"] > 5 * 5000 * 4  # ciphertexts are larger than the floats
    ctx = ckks.secret_context(ckks.CKKSPlan())
    public = ckks.public_context(ctx)
    server_ctx = ts.context_from(public)
    assert not server_ctx.is_private() and len(public) < 1000  # parameters only: no secret, public or Galois key
    full = ctx.serialize(save_secret_key=True)
    assert len(full) > 10 * len(public)
    chunks = ckks.encrypt(ctx, np.ones(10), ckks.CKKSPlan().slots)
    summed = ckks.add_ciphertexts(public, {0: chunks, 1: chunks})
    with pytest.raises(ValueError, match="secret_key"):  # the server cannot decrypt what it added
        ts.ckks_vector_from(server_ctx, summed[0]).decrypt()
    assert np.allclose(ckks.decrypt(ctx, summed, 10), 2.0, atol=1e-6)


def test_insecure_or_too_small_parameters_are_refused_before_encryption():
    with pytest.raises(SecAggAbort, match="below 128-bit security"):
        ckks.check_plan(ckks.CKKSPlan(poly_degree=4096, coeff_bits=(60, 60)), 1.0)
    with pytest.raises(SecAggAbort, match="lower scale_bits"):
        ckks.check_plan(ckks.CKKSPlan(), 1e6)
    with pytest.raises(SecAggAbort, match="malformed ciphertext from client 1"):
        ctx = ckks.secret_context(ckks.CKKSPlan())
        good = ckks.encrypt(ctx, np.ones(4), 2048)
        ckks.add_ciphertexts(ckks.public_context(ctx), {0: good, 1: [b"junk"]})
