"""Secure aggregation by pairwise masking: SecAgg (Bonawitz et al. 2017) and SecAgg+ (Bell et al. 2020).

The server learns the sum of the clients' vectors of integers mod ``2^bits`` and nothing else about
any one of them, even when clients drop out mid-round, as long as at least ``threshold`` of each
client's share holders (its neighbours and itself) answer the last stage. SecAgg connects every pair of clients; SecAgg+ connects
each client to ``neighbours`` others on a random regular graph, so cost grows with log n, not n.

A round is five named stages over explicit state, each a pure function from bytes to bytes:

1. ``client_advertise``: two X25519 key pairs (one to encrypt shares, one for masks) and a
   commitment to a fresh self-mask seed.
2. ``server_route_keys`` / ``client_share_keys``: Shamir t-of-k shares of the mask private key and
   of the self-mask seed, each encrypted (AES-GCM, key from X25519 + HKDF) to one neighbour.
3. ``server_route_shares`` / ``client_masked_input``: the input plus the self mask plus the
   pairwise masks (AES-128-CTR keystreams from X25519 + HKDF seeds, which cancel in the sum).
4. ``server_receive_masked`` (each input as it arrives, into a running sum), ``server_close_masked``
   / ``client_unmask``: for each neighbour, the share of its self-mask seed if it sent a masked
   input, else the share of its mask key; never both.
5. ``server_unmask``: rebuilds the seeds and dropped clients' keys, removes every mask, returns the sum.

Anything that cannot work aborts the round with :class:`SecAggAbort` and a reason: parameters that
cannot hold (t > k, t <= k/2, no regular graph), too few survivors, a malformed message, a share
that fails authentication, shares that disagree or do not match a commitment or a public key.

Threat model: clients and the server follow the protocol but try to learn what they see
(semi-honest), and the server may also drop or reorder messages. Public keys are taken as authentic:
without a PKI signing them (Bonawitz et al.'s active-security variant), a server that substitutes
keys could unmask a client. Shares are encrypted end to end, so the server never holds a surviving
client's private key or enough shares of it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import os
import secrets
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from unseen.errors import UnseenError

STAGES = ("advertise", "share_keys", "masked_input", "unmask")
PRIME = 2**521 - 1  # Mersenne prime: the Shamir field, larger than any 32-byte secret
_SHARE_BYTES = 66
_MAGIC = b"USA1"
_MAX_KEYSTREAM = 16 * (2**32 - 2)  # GCM's 32-bit block counter
_MASK_THREADS = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


class SecAggAbort(UnseenError):
    """A secure-aggregation round cannot finish correctly: no sum is released and the model is unchanged."""


# ---------------------------------------------------------------- parameters and the neighbour graph
@dataclass(frozen=True)
class SecAggParams:
    """Public parameters of one round, known to every client and the server.

    ``neighbours=None`` is SecAgg (every pair of clients masks); an integer ``k`` is SecAgg+ (a random
    k-regular graph drawn from ``graph_seed``). Each secret is split into ``k + 1`` shares, one per
    neighbour and one kept by the client (as in Bonawitz et al., t-of-n for SecAgg); ``threshold`` of
    them rebuild it. It must exceed half the shares, or a server could collect both kinds of share for
    the same client.
    """

    clients: int
    threshold: int
    dim: int
    bits: int = 32
    neighbours: int | None = None
    graph_seed: int = 0
    round_tag: bytes = b""
    min_survivors: int = 0  # distributed DP: below this many masked inputs the sum is under-noised; abort

    @property
    def degree(self) -> int:
        return self.clients - 1 if self.neighbours is None else self.neighbours

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        return np.uint32 if self.bits <= 32 else np.uint64


def check_params(p: SecAggParams) -> None:
    """Raise :class:`SecAggAbort` with the fix if the parameters cannot give a correct, private round."""
    if p.clients < 3:
        raise SecAggAbort(f"secure aggregation needs at least 3 clients in a round (got {p.clients}): with 2, "
                          "each learns the other's input from the sum")
    if not 8 <= p.bits <= 62:
        raise SecAggAbort(f"modulus 2^{p.bits}: use 8 to 62 bits")
    if p.dim < 1:
        raise SecAggAbort(f"vector length must be >= 1 (got {p.dim})")
    k = p.degree
    if not 2 <= k <= p.clients - 1:
        raise SecAggAbort(f"neighbours = {k} with {p.clients} clients: use 2 to {p.clients - 1}")
    if (k * p.clients) % 2:
        raise SecAggAbort(f"no {k}-regular graph exists on {p.clients} clients (k * n must be even): "
                          f"use neighbours = {k + 1}")
    shares = k + 1
    if p.threshold > shares:
        raise SecAggAbort(f"threshold {p.threshold} exceeds the {shares} shares of each secret ({k} neighbours "
                          f"and the client itself): use threshold <= {shares}")
    if 2 * p.threshold <= shares:
        raise SecAggAbort(f"threshold {p.threshold} is not above half of the {shares} shares: a server could gather "
                          f"both the seed and the key shares of one client; use threshold >= {shares // 2 + 1}")


def default_neighbours(clients: int) -> int:
    """SecAgg+'s neighbourhood size: about 3 log2(n), kept even-compatible with n, capped at n - 1."""
    k = min(clients - 1, max(4, 3 * math.ceil(math.log2(max(clients, 2)))))
    if (k * clients) % 2:
        k = k - 1 if k - 1 >= 2 else k + 1
    return k


def default_threshold(degree: int) -> int:
    """Two thirds of the ``degree + 1`` shares (must exceed half): tolerates a third of a neighbourhood dropping."""
    shares = degree + 1
    return max(shares // 2 + 1, math.ceil(2 * shares / 3))


@functools.lru_cache(maxsize=64)
def neighbour_graph(p: SecAggParams) -> list[frozenset[int]]:
    """Each client's neighbours: all others (SecAgg), or a relabelled Harary k-regular graph (SecAgg+)."""
    n, k = p.clients, p.degree
    if k == n - 1:
        return [frozenset(set(range(n)) - {i}) for i in range(n)]
    perm = np.random.default_rng([p.graph_seed, n, k]).permutation(n)
    adj: list[set[int]] = [set() for _ in range(n)]
    for pos in range(n):
        offsets = list(range(1, k // 2 + 1)) + ([n // 2] if k % 2 else [])
        for off in offsets:
            a, b = int(perm[pos]), int(perm[(pos + off) % n])
            adj[a].add(b)
            adj[b].add(a)
    return [frozenset(s) for s in adj]


# ---------------------------------------------------------------- primitives
def _kdf(secret: bytes, purpose: bytes, tag: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"unseen-secagg/" + purpose + b"/" + tag
                ).derive(secret)


def _agree(private: bytes, public: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(public))


def _public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _new_private() -> bytes:
    return X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


@functools.lru_cache(maxsize=4)
def _zeros(n: int) -> bytes:
    return bytes(n)


def prg(seed: bytes, dim: int, dtype: type[np.unsignedinteger], out: np.ndarray | None = None) -> np.ndarray:
    """``dim`` pseudorandom words from a 32-byte seed: an AES-128-CTR keystream (written into ``out`` if given).

    The key is the seed's first 16 bytes: 128-bit security, the level of the X25519 agreements that
    produce the pairwise seeds (AES-256 costs 15% more here and buys nothing they do not already
    cap). The keystream is that of CTR with the initial counter block ``0^96 || 2``, computed through
    OpenSSL's GCM code path (the GCM ciphertext of zeros under the zero nonce; the tag is dropped),
    which OpenSSL runs on vector AES instructions where they exist: 1.3x faster than its CTR path
    here. Each seed is used for one keystream, so the fixed nonce is safe.
    """
    n = dim * np.dtype(dtype).itemsize
    if n > _MAX_KEYSTREAM:
        raise SecAggAbort(f"a vector of {dim} words exceeds one AES-GCM keystream (at most {_MAX_KEYSTREAM} bytes)")
    buf = np.empty(n + 16, dtype=np.uint8) if out is None else out  # update_into wants a block of slack
    Cipher(algorithms.AES(seed[:16]), modes.GCM(bytes(12))).encryptor().update_into(_zeros(n), buf)
    return buf[:n].view(dtype)


_BUFFERS = threading.local()


def _buffer(name: str, nbytes: int) -> np.ndarray:
    """A per-thread buffer kept for the next call (one vector's size each): a fresh multi-megabyte
    array costs page faults on every call, which were measured here to cost as much as the AES."""
    buf = getattr(_BUFFERS, name, None)
    if buf is None or buf.nbytes != nbytes:
        buf = np.empty(nbytes, dtype=np.uint8)
        setattr(_BUFFERS, name, buf)
    return buf


def _add_masks(acc: np.ndarray, masks: list[tuple[bytes, bool]]) -> None:
    scratch = _buffer("keystream", acc.nbytes + 16)
    for seed, add in masks:
        mask = prg(seed, acc.size, acc.dtype.type, scratch)
        (np.add if add else np.subtract)(acc, mask, out=acc)  # wraps mod 2^32 (or 2^64)


_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _mask_pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():  # a forked child does not inherit the parent's threads
        _POOL = (os.getpid(), ThreadPoolExecutor(_MASK_THREADS, thread_name_prefix="unseen-masks"))
    return _POOL[1]


def apply_masks(value: np.ndarray, masks: list[tuple[bytes, bool]], out: np.ndarray | None = None) -> np.ndarray:
    """``value`` plus (or minus) the keystream of each ``(seed, add)``, as a new array (or in ``out``).

    Keystreams and additions release the GIL, so the masks are split over up to ``_MASK_THREADS``
    threads, each summing its share into its own buffer; addition mod 2^w makes the order irrelevant.
    """
    if out is None:
        acc = np.array(value, copy=True)
    else:
        acc = out
        np.copyto(acc, value)
    parts = [masks[i::_MASK_THREADS] for i in range(min(_MASK_THREADS, len(masks)))]
    if len(parts) <= 1 or acc.nbytes < 1 << 20:
        _add_masks(acc, masks)
        return acc
    others = [_buffer(f"partial{i}", acc.nbytes).view(acc.dtype) for i in range(1, len(parts))]
    for other in others:
        other.fill(0)
    for done in [_mask_pool().submit(_add_masks, a, m) for a, m in zip([acc, *others], parts, strict=True)]:
        done.result()
    for other in others:
        np.add(acc, other, out=acc)
    return acc


def _commit(seed: bytes, tag: bytes) -> bytes:
    return hashlib.sha256(b"unseen-secagg/commit/" + tag + seed).digest()


# ---------------------------------------------------------------- Shamir t-of-n over GF(2^521 - 1)
def shamir_split(secret: bytes, threshold: int, holders: list[int]) -> dict[int, bytes]:
    """Shares of a secret of at most 64 bytes for each holder id (x-coordinate = id + 1)."""
    coeffs = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = {}
    for h in holders:
        x, y = h + 1, 0
        for c in reversed(coeffs):
            y = (y * x + c) % PRIME
        shares[h] = y.to_bytes(_SHARE_BYTES, "big")
    return shares


@functools.lru_cache(maxsize=256)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    # The same survivors answer for many clients: compute the coefficients once per set of x-coordinates.
    coeffs = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        coeffs.append(num * pow(den, -1, PRIME) % PRIME)
    return tuple(coeffs)


def shamir_combine(shares: dict[int, bytes], threshold: int, length: int, what: str) -> bytes:
    """The secret from the first ``threshold`` shares (callers check it against a commitment or public key).

    Extra shares are not used: a wrong extra share cannot change the result, and a wrong share among
    those used yields a secret that fails the caller's check, which aborts the round.
    """
    if len(shares) < threshold:
        raise SecAggAbort(f"only {len(shares)} shares of {what} arrived, {threshold} are needed: too many "
                          "neighbours dropped out; the round is aborted and the model is unchanged")
    used = sorted(shares.items())[:threshold]
    lagrange = _lagrange_at_zero(tuple(h + 1 for h, _ in used))
    value = sum(c * int.from_bytes(s, "big") for c, (_, s) in zip(lagrange, used, strict=True)) % PRIME
    if value >= 1 << (8 * length):
        raise SecAggAbort(f"the shares of {what} do not rebuild a valid secret: a share was tampered with")
    return value.to_bytes(length, "big")


# ---------------------------------------------------------------- messages
def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: Any) -> bytes:
    if not isinstance(s, str):
        raise ValueError("expected base64 text")
    return base64.b64decode(s, validate=True)


def pack(kind: str, body: dict[str, Any], blob: bytes | memoryview = b"") -> bytes:
    """One message: magic, header length, JSON header (kind + body), then an optional binary blob."""
    head = json.dumps({"kind": kind, **body}, separators=(",", ":")).encode()
    return b"".join((_MAGIC, struct.pack(">I", len(head)), head, blob))  # one copy of a large blob


def unpack(data: bytes, kind: str, sender: str) -> tuple[dict[str, Any], memoryview]:
    """Parse a message, or abort naming the sender: never guess at a malformed message."""
    try:
        if not isinstance(data, bytes | bytearray) or data[:4] != _MAGIC:
            raise ValueError("not a secure-aggregation message")
        (n,) = struct.unpack(">I", data[4:8])
        head = json.loads(data[8:8 + n])
        if head.get("kind") != kind:
            raise ValueError(f"expected a {kind!r} message, got {head.get('kind')!r}")
        return head, memoryview(data)[8 + n:]  # no copy of a large vector
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        raise SecAggAbort(f"malformed {kind} message from {sender}: {exc}") from exc


# ---------------------------------------------------------------- client
@dataclass
class ClientState:
    """One client's private state across the stages. Never serialized to the server."""

    params: SecAggParams
    id: int
    enc_sk: bytes  # X25519 key to agree share-encryption keys
    mask_sk: bytes  # X25519 key to agree pairwise mask seeds
    seed: bytes  # self-mask seed
    neighbours: frozenset[int] = frozenset()
    keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  # neighbour -> (enc_pk, mask_pk)
    held: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  # neighbour -> (key share, seed share)
    masked_with: frozenset[int] = frozenset()
    share_keys: dict[int, bytes] = field(default_factory=dict)  # neighbour -> AES-GCM key, agreed in stage 2


def client_advertise(params: SecAggParams, client: int) -> tuple[ClientState, bytes]:
    """Stage 1: fresh key pairs and a commitment to the self-mask seed."""
    check_params(params)
    state = ClientState(params, client, _new_private(), _new_private(), os.urandom(32),
                        neighbour_graph(params)[client])
    msg = pack("advertise", {"client": client, "enc_pk": _b64(_public(state.enc_sk)),
                             "mask_pk": _b64(_public(state.mask_sk)),
                             "seed_commit": _b64(_commit(state.seed, params.round_tag))})
    return state, msg


def _aad(p: SecAggParams, sender: int, receiver: int) -> bytes:
    return p.round_tag + struct.pack(">II", sender, receiver)


def client_share_keys(state: ClientState, msg: bytes) -> bytes:
    """Stage 2: Shamir-share the mask key and the self-mask seed, one encrypted share per live neighbour."""
    p = state.params
    head, _ = unpack(msg, "keys", "the server")
    try:
        keys = {int(c): (_unb64(v[0]), _unb64(v[1])) for c, v in head["keys"].items()}
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise SecAggAbort(f"malformed key list sent to client {state.id}: {exc}") from exc
    if not set(keys) <= state.neighbours:
        raise SecAggAbort(f"client {state.id} was sent keys of clients that are not its neighbours")
    if len(keys) + 1 < p.threshold:
        raise SecAggAbort(f"client {state.id} has {len(keys)} live neighbours, too few for the threshold "
                          f"{p.threshold}: aborting rather than share secrets too thinly")
    state.keys = keys
    enc_key = X25519PrivateKey.from_private_bytes(state.enc_sk)
    for v, (enc_pk, _) in keys.items():
        state.share_keys[v] = _kdf(enc_key.exchange(X25519PublicKey.from_public_bytes(enc_pk)), b"share", p.round_tag)
    holders = [*sorted(keys), state.id]
    key_shares = shamir_split(state.mask_sk, p.threshold, holders)
    seed_shares = shamir_split(state.seed, p.threshold, holders)
    state.held[state.id] = (key_shares[state.id], seed_shares[state.id])
    out = {}
    for v in sorted(keys):
        nonce = os.urandom(12)
        plain = struct.pack(">II", state.id, v) + key_shares[v] + seed_shares[v]
        out[str(v)] = _b64(nonce + AESGCM(state.share_keys[v]).encrypt(nonce, plain, _aad(p, state.id, v)))
    return pack("shares", {"client": state.id, "to": out})


def client_masked_input(state: ClientState, msg: bytes, value: np.ndarray) -> bytes:
    """Stage 3: decrypt the shares held for neighbours, then send input + self mask + pairwise masks."""
    p = state.params
    head, _ = unpack(msg, "routed_shares", "the server")
    try:
        routed = {int(u): _unb64(ct) for u, ct in head["from"].items()}
    except (KeyError, ValueError, TypeError) as exc:
        raise SecAggAbort(f"malformed share bundle sent to client {state.id}: {exc}") from exc
    if not set(routed) <= set(state.keys):
        raise SecAggAbort(f"client {state.id} received shares from clients it never exchanged keys with")
    if len(routed) + 1 < p.threshold:
        raise SecAggAbort(f"client {state.id} has {len(routed)} neighbours left after key sharing, too few for "
                          f"the threshold {p.threshold}")
    for u, blob in routed.items():
        try:
            plain = AESGCM(state.share_keys[u]).decrypt(blob[:12], blob[12:], _aad(p, u, state.id))
        except (InvalidTag, ValueError) as exc:
            raise SecAggAbort(f"the share from client {u} to client {state.id} failed authentication: it was "
                              "tampered with in transit") from exc
        sender, receiver = struct.unpack(">II", plain[:8])
        if (sender, receiver) != (u, state.id) or len(plain) != 8 + 2 * _SHARE_BYTES:
            raise SecAggAbort(f"the share from client {u} to client {state.id} is addressed wrongly")
        state.held[u] = (plain[8:8 + _SHARE_BYTES], plain[8 + _SHARE_BYTES:])
    state.masked_with = frozenset(routed)
    value = np.asarray(value)
    if value.shape != (p.dim,) or value.dtype != p.dtype:
        raise SecAggAbort(f"client {state.id}'s input must be a vector of {p.dim} {np.dtype(p.dtype).name} "
                          f"(got {value.shape} {value.dtype}): encode it with unseen.crypto.fixed_point first")
    mask_key = X25519PrivateKey.from_private_bytes(state.mask_sk)
    masks = [(state.seed, True)]
    for u in sorted(state.masked_with):
        shared = mask_key.exchange(X25519PublicKey.from_public_bytes(state.keys[u][1]))
        masks.append((_kdf(shared, b"mask", p.round_tag), state.id < u))  # the lower id adds, the higher subtracts
    # Masked in a reused buffer, then copied once into the message: a fresh vector per client costs
    # page faults, which were measured here to slow the mask threads by a third.
    masked = apply_masks(value, masks, out=_buffer("masked", value.nbytes).view(value.dtype))
    if p.bits < 8 * np.dtype(p.dtype).itemsize:
        masked &= p.dtype((1 << p.bits) - 1)
    return pack("masked", {"client": state.id, "dim": p.dim}, memoryview(masked).cast("B"))


def client_unmask(state: ClientState, msg: bytes) -> bytes:
    """Stage 4: for each neighbour, its seed share if it sent a masked input, else its key share."""
    head, _ = unpack(msg, "survivors", "the server")
    try:
        survivors = {int(c) for c in head["survivors"]}
    except (KeyError, ValueError, TypeError) as exc:
        raise SecAggAbort(f"malformed survivor list sent to client {state.id}: {exc}") from exc
    if state.id not in survivors:
        raise SecAggAbort(f"client {state.id} was left out of the survivor list it is answering")
    _require_min_survivors(state.params, len(survivors), f"client {state.id}")
    live = survivors & state.masked_with
    if len(live) + 1 < state.params.threshold:
        raise SecAggAbort(f"only {len(live)} of client {state.id}'s neighbours survived, too few for the "
                          f"threshold {state.params.threshold}")
    seeds = {str(u): _b64(state.held[u][1]) for u in sorted((state.masked_with & survivors) | {state.id})}
    keys = {str(u): _b64(state.held[u][0]) for u in sorted(state.masked_with - survivors)}
    return pack("unmask", {"client": state.id, "seed_shares": seeds, "key_shares": keys})


def _require_min_survivors(p: SecAggParams, survivors: int, who: str) -> None:
    if survivors < p.min_survivors:
        raise SecAggAbort(f"{who} sees {survivors} masked inputs, fewer than the {p.min_survivors} the distributed "
                          "DP noise is calibrated for: unmasking would release an under-noised sum")


# ---------------------------------------------------------------- server
@dataclass
class ServerState:
    """What the server holds: public keys, commitments, who reached which stage, and the running sum of
    the masked inputs (one vector, whatever the number of clients: each input is added as it arrives)."""

    params: SecAggParams
    graph: list[frozenset[int]]
    public: dict[int, tuple[bytes, bytes, bytes]] = field(default_factory=dict)  # enc_pk, mask_pk, commit
    shared: set[int] = field(default_factory=set)
    masked_from: set[int] = field(default_factory=set)
    masked_sum: np.ndarray | None = None
    masked_closed: bool = False


def _require_neighbours(s: ServerState, live: set[int], clients: set[int], stage: str) -> None:
    for u in sorted(clients):
        have = len((s.graph[u] | {u}) & live)
        if have < s.params.threshold:
            raise SecAggAbort(
                f"after {stage}, client {u} has {have} live share holders, below the threshold {s.params.threshold} "
                f"({len(live)} of {s.params.clients} clients left): the round is aborted and the model is unchanged"
            )


def server_route_keys(params: SecAggParams, msgs: dict[int, bytes]) -> tuple[ServerState, dict[int, bytes]]:
    """Stage 1 -> 2: check the advertised keys and send each client its live neighbours' public keys."""
    check_params(params)
    s = ServerState(params, neighbour_graph(params))
    for c, m in msgs.items():
        head, _ = unpack(m, "advertise", f"client {c}")
        try:
            if head["client"] != c:
                raise ValueError("claims another client's id")
            keys = (_unb64(head["enc_pk"]), _unb64(head["mask_pk"]), _unb64(head["seed_commit"]))
            if any(len(k) != 32 for k in keys):
                raise ValueError("keys and commitment must be 32 bytes")
        except (KeyError, ValueError, TypeError) as exc:
            raise SecAggAbort(f"malformed advertise message from client {c}: {exc}") from exc
        s.public[c] = keys
    live = set(s.public)
    _require_neighbours(s, live, live, "key advertisement")
    out = {c: pack("keys", {"keys": {str(v): [_b64(s.public[v][0]), _b64(s.public[v][1])]
                                     for v in sorted(s.graph[c] & live)}}) for c in sorted(live)}
    return s, out


def server_route_shares(s: ServerState, msgs: dict[int, bytes]) -> dict[int, bytes]:
    """Stage 2 -> 3: forward each encrypted share to its addressee (the server cannot read them)."""
    inbox: dict[int, dict[str, str]] = {}
    for c, m in msgs.items():
        head, _ = unpack(m, "shares", f"client {c}")
        if c not in s.public or head.get("client") != c:
            raise SecAggAbort(f"client {c} sent shares without advertising keys, or under another id")
        try:
            targets = {int(v): ct for v, ct in head["to"].items()}
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise SecAggAbort(f"malformed shares message from client {c}: {exc}") from exc
        expected = s.graph[c] & set(s.public)
        if set(targets) != expected:
            raise SecAggAbort(f"client {c} sent shares to {sorted(targets)}, not to its live neighbours "
                              f"{sorted(expected)}")
        s.shared.add(c)
        for v, ct in targets.items():
            inbox.setdefault(v, {})[str(c)] = ct
    _require_neighbours(s, s.shared, s.shared, "key sharing")
    return {v: pack("routed_shares", {"from": {u: ct for u, ct in inbox.get(v, {}).items() if int(u) in s.shared}})
            for v in sorted(s.shared)}


def server_receive_masked(s: ServerState, client: int, msg: bytes) -> None:
    """Stage 3, one message: check a masked input's sender, shape and range, and add it to the running sum.

    A network server calls this as each input arrives, so it holds one vector rather than one per
    client; :func:`server_close_masked` ends the stage.
    """
    p = s.params
    width = np.dtype(p.dtype).itemsize
    if s.masked_closed:  # a runtime stops reading the stage once it closes it; getting here is its bug
        raise SecAggAbort(f"client {client}'s masked input reached the server after the stage was closed")
    head, blob = unpack(msg, "masked", f"client {client}")
    if client not in s.shared or head.get("client") != client:
        raise SecAggAbort(f"client {client} sent a masked input without sharing its keys, or under another id")
    if client in s.masked_from:
        raise SecAggAbort(f"client {client} sent a second masked input in one round")
    if head.get("dim") != p.dim or len(blob) != p.dim * width:
        raise SecAggAbort(f"client {client}'s masked input has {len(blob) // width} values, expected {p.dim}")
    vec = np.frombuffer(blob, dtype=p.dtype)
    if p.bits < 8 * width and int(vec.max()) >= 1 << p.bits:
        raise SecAggAbort(f"client {client}'s masked input has values outside [0, 2^{p.bits})")
    if s.masked_sum is None:
        s.masked_sum = vec.copy()
    else:
        np.add(s.masked_sum, vec, out=s.masked_sum)  # wraps mod 2^32 (or 2^64)
    s.masked_from.add(client)


def server_close_masked(s: ServerState) -> dict[int, bytes]:
    """Stage 3 -> 4: once the inputs are in, check there are enough; tell the survivors who survived."""
    s.masked_closed = True
    survivors = s.masked_from
    _require_min_survivors(s.params, len(survivors), "the server")
    _require_neighbours(s, survivors, s.shared, "masked input")
    listing = pack("survivors", {"survivors": sorted(survivors)})
    return {c: listing for c in sorted(survivors)}


def server_unmask(s: ServerState, msgs: dict[int, bytes]) -> tuple[np.ndarray, list[int]]:
    """Stage 4 -> sum: rebuild seeds and dropped keys from shares, remove every mask, return the sum."""
    p = s.params
    survivors = set(s.masked_from)
    seed_shares: dict[int, dict[int, bytes]] = {}
    key_shares: dict[int, dict[int, bytes]] = {}
    for v, m in msgs.items():
        head, _ = unpack(m, "unmask", f"client {v}")
        if v not in survivors or head.get("client") != v:
            raise SecAggAbort(f"client {v} answered the unmasking stage without having sent a masked input")
        try:
            seeds = {int(u): _unb64(x) for u, x in head["seed_shares"].items()}
            keys = {int(u): _unb64(x) for u, x in head["key_shares"].items()}
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise SecAggAbort(f"malformed unmask message from client {v}: {exc}") from exc
        if set(seeds) & set(keys):
            raise SecAggAbort(f"client {v} sent both kinds of share for the same client: refusing to use them")
        if not set(seeds) <= survivors or set(keys) & survivors:
            raise SecAggAbort(f"client {v} sent seed shares for dropped clients or key shares for survivors")
        if any(len(x) != _SHARE_BYTES for x in (*seeds.values(), *keys.values())):
            raise SecAggAbort(f"client {v} sent shares of the wrong length")
        for u, x in seeds.items():
            seed_shares.setdefault(u, {})[v] = x
        for u, x in keys.items():
            key_shares.setdefault(u, {})[v] = x
    unmasks: list[tuple[bytes, bool]] = []
    for u in sorted(survivors):
        seed = shamir_combine(seed_shares.get(u, {}), p.threshold, 32, f"client {u}'s self-mask seed")
        if _commit(seed, p.round_tag) != s.public[u][2]:
            raise SecAggAbort(f"the rebuilt self-mask seed of client {u} does not match its commitment: "
                              "a share was tampered with")
        unmasks.append((seed, False))
    for u in sorted(s.shared - survivors):
        partners = s.graph[u] & survivors
        if not partners:
            continue
        key = shamir_combine(key_shares.get(u, {}), p.threshold, 32, f"dropped client {u}'s mask key")
        if _public(key) != s.public[u][1]:
            raise SecAggAbort(f"the rebuilt mask key of dropped client {u} does not match its public key: "
                              "a share was tampered with")
        for v in sorted(partners):
            # v added the mask if v < u and subtracted it otherwise; undo that.
            unmasks.append((_kdf(_agree(key, s.public[v][1]), b"mask", p.round_tag), v > u))
    total = apply_masks(s.masked_sum if s.masked_sum is not None else np.zeros(p.dim, dtype=p.dtype), unmasks)
    if p.bits < 8 * np.dtype(p.dtype).itemsize:
        total &= p.dtype((1 << p.bits) - 1)
    return total, sorted(survivors)


__all__ = [
    "PRIME", "STAGES", "ClientState", "SecAggAbort", "SecAggParams", "ServerState", "apply_masks", "check_params",
    "client_advertise", "client_masked_input", "client_share_keys", "client_unmask", "default_neighbours",
    "default_threshold", "neighbour_graph", "pack", "prg", "server_close_masked", "server_receive_masked",
    "server_route_keys", "server_route_shares", "server_unmask", "shamir_combine", "shamir_split", "unpack",
]
