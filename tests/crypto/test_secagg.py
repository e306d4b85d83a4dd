"""Secure aggregation: the sum is exact under dropouts, the server's view is uniform, failures are loud."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest
from scipy import stats

from unseen.crypto import secagg
from unseen.crypto.fixed_point import (
    EncodingError,
    clip_l2,
    decode_sum,
    encode,
    encode_update,
    from_modular,
    plan_fixed_point,
)
from unseen.crypto.secagg import SecAggAbort, SecAggParams, default_neighbours, default_threshold
from unseen.runtime.secure import secure_sum


def _inputs(n: int, dim: int, bits: int = 32, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    dtype = np.uint32 if bits <= 32 else np.uint64
    return {c: rng.integers(0, 2**bits, dim, dtype=np.uint64).astype(dtype) for c in range(n)}


def _plain_sum(x: dict[int, np.ndarray], clients: list[int], bits: int) -> np.ndarray:
    total = sum(x[c].astype(object) for c in clients)  # exact big-integer sum, then mod 2^bits
    return np.array([int(v) % 2**bits for v in total], dtype=np.uint64)


def _params(n: int, dim: int = 32, bits: int = 32, neighbours: int | None = None, threshold: int | None = None):
    degree = n - 1 if neighbours is None else neighbours
    return SecAggParams(n, threshold or default_threshold(degree), dim, bits, neighbours, graph_seed=n,
                        round_tag=b"test")


@pytest.mark.parametrize("n", [3, 4, 5, 8, 13])
@pytest.mark.parametrize("stage", secagg.STAGES)
def test_sum_is_exact_with_up_to_n_minus_t_dropouts_at_any_stage(n: int, stage: str) -> None:
    p = _params(n)
    x = _inputs(n, p.dim, seed=n)
    dropped = set(range(1, 1 + n - p.threshold))  # as many as the threshold allows
    res = secure_sum(p, x, {stage: dropped})
    # A client that drops before unmasking already sent its masked input: it is in the sum.
    expected = list(range(n)) if stage == "unmask" else [c for c in range(n) if c not in dropped]
    assert res.survivors == expected
    assert np.array_equal(res.total.astype(np.uint64), _plain_sum(x, expected, 32))


@pytest.mark.parametrize("bits", [8, 20, 32, 48, 62])
def test_sum_is_exact_for_every_modulus(bits: int) -> None:
    p = _params(6, dim=50, bits=bits)
    x = _inputs(6, 50, bits)
    res = secure_sum(p, x, {"share_keys": {2}, "unmask": {4}})
    assert np.array_equal(res.total.astype(np.uint64), _plain_sum(x, [0, 1, 3, 4, 5], bits))


@pytest.mark.parametrize(("n", "neighbours"), [(20, None), (50, None), (100, 10), (100, 11), (100, None)])
def test_secagg_plus_at_scale_with_ten_percent_dropouts(n: int, neighbours: int | None) -> None:
    k = default_neighbours(n) if neighbours is None else neighbours
    p = _params(n, dim=16, neighbours=k)
    x = _inputs(n, 16, seed=1)
    rng = np.random.default_rng(n)
    drops = {s: {int(c) for c in rng.choice(n, n // 40, replace=False)} for s in secagg.STAGES}
    res = secure_sum(p, x, drops)
    gone = drops["advertise"] | drops["share_keys"] | drops["masked_input"]
    assert res.survivors == [c for c in range(n) if c not in gone]
    assert np.array_equal(res.total.astype(np.uint64), _plain_sum(x, res.survivors, 32))


def test_even_share_count_at_100_clients_is_a_regression_case() -> None:
    # The leading framework fails silently here; every client must hold exactly k shares and the sum must be right.
    p = _params(100, dim=8, neighbours=9, threshold=7)  # 10 shares of each secret: an even count
    graph = secagg.neighbour_graph(p)
    assert all(len(g) == 9 and i not in g for i, g in enumerate(graph))
    assert all(i in graph[j] for i, g in enumerate(graph) for j in g)  # symmetric
    x = _inputs(100, 8)
    res = secure_sum(p, x, {"masked_input": {0, 50, 99}})
    assert np.array_equal(res.total.astype(np.uint64), _plain_sum(x, res.survivors, 32))


def test_float_updates_decode_within_the_stated_quantization_error() -> None:
    n, dim, clip = 7, 300, 2.0
    rng = np.random.default_rng(3)
    floats = {c: clip_l2(rng.normal(0, 1, dim), clip) for c in range(n)}
    plan = plan_fixed_point(n, clip, bits=32)
    res = secure_sum(_params(n, dim), {c: encode(v, plan) for c, v in floats.items()}, {"masked_input": {6}})
    decoded = decode_sum(res.total, plan)
    truth = sum(floats[c] for c in range(6))
    assert np.max(np.abs(decoded - truth)) <= plan.max_error
    assert plan.max_error < 1e-6


def test_a_modulus_too_small_for_the_precision_fails_before_the_round() -> None:
    with pytest.raises(EncodingError, match="use at least"):
        plan_fixed_point(1000, 10.0, bits=16, max_error=1e-4)
    with pytest.raises(EncodingError, match="clip the update"):
        encode(np.array([3.0]), plan_fixed_point(3, 1.0))
    with pytest.raises(EncodingError, match="NaN"):
        encode(np.array([np.nan]), plan_fixed_point(3, 1.0))


@pytest.mark.parametrize("bits", [16, 32, 62])
@pytest.mark.parametrize(("scale", "weight"), [(0.1, None), (50.0, None), (50.0, 0.37), (0.1, 1.0)])
def test_fused_clip_weight_encode_equals_the_composed_steps(bits: int, scale: float, weight: float | None) -> None:
    # encode_update folds clipping, weighting and scaling into one factor; it must agree with
    # encode(clip_l2(x) * w) followed by w, to within one unit where a product sits on a midpoint
    # (at 62 bits the words outgrow float64's 53-bit mantissa, so within its relative precision).
    rng = np.random.default_rng(bits)
    x = rng.normal(0, scale, 5000)
    clip = 2.0
    plan = plan_fixed_point(10, max(clip, 1.0), bits=bits)
    composed = clip_l2(x, clip) * (1.0 if weight is None else weight)
    if weight is not None:
        composed = np.append(composed, weight)
    expected = from_modular(encode(composed, plan), bits)
    got = encode_update(x, clip, plan, weight)
    assert got.dtype == encode(composed, plan).dtype and got.shape == expected.shape
    diff = np.abs(from_modular(got, bits) - expected)
    assert np.all(diff <= np.maximum(1, np.abs(expected) * 2.0**-50)) and np.mean(diff <= 1) > 0.99
    if weight is not None:
        assert from_modular(got, bits)[-1] == expected[-1]
    assert np.linalg.norm(from_modular(got, bits)[:5000] / plan.scale) <= clip * (1 + 1e-6)


def test_fused_encode_refuses_bad_values_and_survives_huge_finite_ones() -> None:
    plan = plan_fixed_point(3, 1.0)
    with pytest.raises(EncodingError, match="NaN"):
        encode_update(np.array([1.0, np.nan]), 1.0, plan)
    with pytest.raises(EncodingError, match="NaN"):
        encode_update(np.array([np.inf, 0.0]), 1.0, plan)
    with pytest.raises(EncodingError, match="weight"):
        encode_update(np.ones(3), 1.0, plan, weight=1.5)
    with pytest.raises(EncodingError, match="at most the plan"):
        encode_update(np.ones(3), 2.0, plan)
    # The squares of 1e200 overflow; the vector still clips to unit norm.
    got = from_modular(encode_update(np.array([1e200, -1e200]), 1.0, plan), 32) / plan.scale
    assert np.allclose(got, [2**-0.5, -(2**-0.5)], atol=1e-8)


def _capture(p: SecAggParams, x: dict[int, np.ndarray], drops=None) -> tuple[list[tuple[str, str, bytes]], object]:
    seen: list[tuple[str, str, bytes]] = []

    def spy(stage: str, sender: str, receiver: str, msg: bytes) -> bytes:
        seen.append((stage, sender, msg))
        return msg

    return seen, secure_sum(p, x, drops, tamper=spy)


def _masked_view(seen, client: int, dtype) -> np.ndarray:
    for stage, sender, msg in seen:
        if stage == "masked_input" and sender == f"client {client}":
            return np.frombuffer(secagg.unpack(msg, "masked", "test")[1], dtype=dtype)
    raise AssertionError("no masked input captured")


def test_the_servers_view_of_one_update_is_uniform_and_independent_of_the_input() -> None:
    p = _params(4, dim=4096, bits=8)
    views = {}
    for label, value in [("zeros", 0), ("constant", 200)]:
        counts = np.zeros(256)
        for _ in range(4):  # four rounds, fresh keys each
            x = {c: np.full(p.dim, value if c == 0 else 7, dtype=np.uint32) for c in range(4)}
            seen, _ = _capture(p, x)
            counts += np.bincount(_masked_view(seen, 0, np.uint32), minlength=256)
        assert stats.chisquare(counts).pvalue > 1e-6  # uniform over Z_256 (keys are fresh, so the bound is a flake rate)
        views[label] = counts
    table = np.vstack([views["zeros"], views["constant"]])
    assert stats.chi2_contingency(table).pvalue > 1e-6  # same distribution whatever client 0 holds


def test_no_private_key_or_plain_share_of_a_survivor_ever_reaches_the_server(monkeypatch) -> None:
    p = _params(6, dim=16)
    states: dict[int, secagg.ClientState] = {}
    real_advertise = secagg.client_advertise

    def keep(params, client):
        state, msg = real_advertise(params, client)
        states[client] = state
        return state, msg

    monkeypatch.setattr(secagg, "client_advertise", keep)
    seen, res = _capture(p, _inputs(6, 16), {"masked_input": {5}})
    to_server = b"".join(msg for _, sender, msg in seen if sender != "server")
    for c in res.survivors:
        s = states[c]
        for secret in (s.enc_sk, s.mask_sk):
            assert secret not in to_server and base64.b64encode(secret) not in to_server
        for u, (key_share, _) in s.held.items():  # a survivor's key share is never revealed, only seed shares
            if u in res.survivors:
                assert base64.b64encode(key_share) not in to_server
    # The dropped client's mask key is rebuilt by design (its pairwise masks must be removed), but never sent.
    assert states[5].mask_sk not in to_server and base64.b64encode(states[5].mask_sk) not in to_server


def _flip_share(stage: str, sender: str, receiver: str, msg: bytes) -> bytes:
    if stage == "share_keys" and sender == "server" and receiver == "client 2":
        head, _ = secagg.unpack(msg, "routed_shares", "test")
        u, ct = next(iter(head["from"].items()))
        raw = bytearray(base64.b64decode(ct))
        raw[-1] ^= 1
        head["from"][u] = base64.b64encode(bytes(raw)).decode()
        return secagg.pack("routed_shares", {"from": head["from"]})
    return msg


def test_a_tampered_share_aborts_the_round() -> None:
    with pytest.raises(SecAggAbort, match="failed authentication"):
        secure_sum(_params(5), _inputs(5, 32), tamper=_flip_share)


def test_a_lying_client_in_the_unmask_stage_aborts_the_round() -> None:
    def lie(stage: str, sender: str, receiver: str, msg: bytes) -> bytes:
        if stage == "unmask" and sender == "client 1":
            head, _ = secagg.unpack(msg, "unmask", "test")
            head.pop("kind")
            for u in head["seed_shares"]:
                head["seed_shares"][u] = base64.b64encode(bytes(65) + b"\x05").decode()
            return secagg.pack("unmask", head)
        return msg

    with pytest.raises(SecAggAbort, match="tampered with"):
        secure_sum(_params(5), _inputs(5, 32), tamper=lie)


def test_below_threshold_survivors_abort_at_every_stage() -> None:
    p = _params(7)  # threshold 4 of 6 neighbours
    for stage in secagg.STAGES:
        with pytest.raises(SecAggAbort, match="threshold|shares of"):
            secure_sum(p, _inputs(7, 32), {stage: set(range(7 - p.threshold + 1))})


def test_malformed_messages_abort_naming_the_sender() -> None:
    def garble(stage: str, sender: str, receiver: str, msg: bytes) -> bytes:
        return b"not a message" if (stage, sender) == ("masked_input", "client 3") else msg

    with pytest.raises(SecAggAbort, match="malformed masked message from client 3"):
        secure_sum(_params(5), _inputs(5, 32), tamper=garble)

    def wrong_length(stage: str, sender: str, receiver: str, msg: bytes) -> bytes:
        if (stage, sender) == ("masked_input", "client 1"):
            head, blob = secagg.unpack(msg, "masked", "test")
            head.pop("kind")
            return secagg.pack("masked", head, blob[:-4])
        return msg

    with pytest.raises(SecAggAbort, match="client 1's masked input has 31 values, expected 32"):
        secure_sum(_params(5), _inputs(5, 32), tamper=wrong_length)


def _to_masked_stage(p: SecAggParams, x: dict[int, np.ndarray]):
    """Stages 1-3 by hand: the server state and every client's masked-input message."""
    states, ads = {}, {}
    for c in range(p.clients):
        states[c], ads[c] = secagg.client_advertise(p, c)
    server, keys = secagg.server_route_keys(p, ads)
    routed = secagg.server_route_shares(server, {c: secagg.client_share_keys(states[c], keys[c]) for c in keys})
    return server, states, {c: secagg.client_masked_input(states[c], routed[c], x[c]) for c in routed}


def test_the_server_sums_masked_inputs_as_they_arrive_and_refuses_repeats_and_late_ones() -> None:
    p = _params(6, dim=64)
    x = _inputs(6, 64, seed=9)
    server, states, masked = _to_masked_stage(p, x)
    for c in [4, 0, 5]:  # any order; the server keeps one running vector, not one per client
        secagg.server_receive_masked(server, c, masked[c])
    with pytest.raises(SecAggAbort, match="client 0 sent a second masked input"):
        secagg.server_receive_masked(server, 0, masked[0])
    for c in [1, 2, 3]:
        secagg.server_receive_masked(server, c, masked[c])
    assert server.masked_sum.shape == (64,) and server.masked_from == set(range(6))
    listing = secagg.server_close_masked(server)
    with pytest.raises(SecAggAbort, match="after the stage was closed"):
        secagg.server_receive_masked(server, 2, masked[2])
    total, survivors = secagg.server_unmask(server, {c: secagg.client_unmask(states[c], listing[c]) for c in listing})
    assert survivors == list(range(6))
    assert np.array_equal(total.astype(np.uint64), _plain_sum(x, survivors, 32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clients": 5, "threshold": 6}, "exceeds the 5 shares"),
        ({"clients": 6, "threshold": 3}, "not above half"),
        ({"clients": 7, "threshold": 2, "neighbours": 3}, "no 3-regular graph"),
        ({"clients": 2, "threshold": 1}, "at least 3 clients"),
        ({"clients": 5, "threshold": 3, "bits": 70}, "8 to 62 bits"),
    ],
)
def test_parameters_that_cannot_work_are_refused_with_the_fix(kwargs: dict, message: str) -> None:
    p = SecAggParams(dim=4, **kwargs)
    with pytest.raises(SecAggAbort, match=message):
        secagg.check_params(p)


def test_shamir_rebuilds_from_any_threshold_subset_and_rejects_fewer() -> None:
    secret = bytes(range(32))
    shares = secagg.shamir_split(secret, 3, list(range(6)))
    assert secagg.shamir_combine({h: shares[h] for h in (0, 4, 5)}, 3, 32, "x") == secret
    assert secagg.shamir_combine(shares, 3, 32, "x") == secret
    with pytest.raises(SecAggAbort, match="only 2 shares"):
        secagg.shamir_combine({h: shares[h] for h in (1, 2)}, 3, 32, "x")


def test_messages_are_plain_json_headers_and_raw_vectors() -> None:
    msg = secagg.pack("masked", {"client": 1, "dim": 2}, np.array([1, 2], dtype=np.uint32).tobytes())
    (n,) = struct.unpack(">I", msg[4:8])
    assert json.loads(msg[8:8 + n])["kind"] == "masked" and len(msg) == 8 + n + 8


def test_mask_keystream_is_aes128_ctr_from_counter_two() -> None:
    # prg computes the keystream through OpenSSL's GCM path for speed; it must be exactly AES-CTR's,
    # keyed by the seed's first 16 bytes.
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    seed = bytes(range(32))
    n = 1000
    ctr = Cipher(algorithms.AES(seed[:16]), modes.CTR(bytes(12) + (2).to_bytes(4, "big"))).encryptor()
    expected = np.frombuffer(ctr.update(bytes(4 * n)), dtype=np.uint32)
    assert np.array_equal(secagg.prg(seed, n, np.uint32), expected)
    assert not np.array_equal(secagg.prg(bytes(32), n, np.uint32), expected)
    assert np.array_equal(secagg.prg(seed[:16] + bytes(16), n, np.uint32), expected)  # bytes 16-31 are not used


@pytest.mark.parametrize(("bits", "dim"), [(32, 300_000), (62, 150_000)])
def test_sums_of_vectors_masked_on_several_threads_are_exact(bits: int, dim: int) -> None:
    # Above 1 MB the masks are split over threads (clients) and the dropped clients' masks too (server).
    p = _params(6, dim=dim, bits=bits)
    x = _inputs(6, dim, bits, seed=3)
    before = {c: v.copy() for c, v in x.items()}
    res = secure_sum(p, x, {"masked_input": {1}})
    assert np.array_equal(res.total.astype(np.uint64), _plain_sum(x, [0, 2, 3, 4, 5], bits))
    assert all(np.array_equal(x[c], before[c]) for c in x)  # inputs are not masked in place


def test_masking_in_a_forked_child_after_the_parent_masked() -> None:
    # The mask threads belong to the process that started them: a forked child must start its own.
    import multiprocessing

    masks = [(bytes([i]) * 32, i % 2 == 0) for i in range(6)]
    value = np.arange(400_000, dtype=np.uint32)
    expected = secagg.apply_masks(value, masks)  # starts the parent's threads
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(secagg.apply_masks, (value, masks)).get(timeout=60)
    assert np.array_equal(got, expected)
    sequential = value.copy()
    for seed, add in masks:
        (np.add if add else np.subtract)(sequential, secagg.prg(seed, value.size, np.uint32), out=sequential)
    assert np.array_equal(expected, sequential)
