"""Secure aggregation with CKKS homomorphic encryption (TenSEAL): the server adds ciphertexts it cannot read.

The clients share one CKKS secret key (a key dealer among them makes it and passes it to the others
over channels the server does not see); the server receives only a public context with no secret
key, no public key and no Galois keys, because addition needs none of them. Each client encrypts
its update in slot-sized chunks, the server adds the ciphertexts of every client that sent one, and
any client decrypts the sum.

Threat model: the server and outsiders learn nothing but the (approximate) sum, and dropouts need no
recovery. Any client holds the secret key, so a server that colludes with one client can decrypt
every individual update: weaker than pairwise masking, where collusion with fewer than
``threshold`` neighbours reveals nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import tenseal as ts

from unseen.crypto.he_plan import MAX_COEFF_BITS
from unseen.crypto.secagg import SecAggAbort


@dataclass(frozen=True)
class CKKSPlan:
    """CKKS parameters for addition only: one data prime, scale ``2^scale_bits``, 128-bit security.

    ``poly_degree`` 4096 allows a coefficient modulus of at most 109 bits (HE standard, 128-bit
    classical security); 54 + 55 bits uses it. Values of the sum must stay below
    ``2^(54 - scale_bits - 1)`` in magnitude.
    """

    poly_degree: int = 4096
    coeff_bits: tuple[int, ...] = (54, 55)
    scale_bits: int = 40

    @property
    def slots(self) -> int:
        return self.poly_degree // 2

    @property
    def max_magnitude(self) -> float:
        return 2.0 ** (self.coeff_bits[0] - self.scale_bits - 1)


def check_plan(plan: CKKSPlan, max_abs_sum: float) -> None:
    """Refuse, before anything is encrypted, parameters below 128-bit security or too small for the sum."""
    limit = MAX_COEFF_BITS.get(plan.poly_degree)
    if limit is None:
        raise SecAggAbort(f"CKKS poly_degree {plan.poly_degree}: use a power of two from 1024 to 32768")
    if sum(plan.coeff_bits) > limit:
        raise SecAggAbort(f"CKKS modulus of {sum(plan.coeff_bits)} bits at degree {plan.poly_degree} is below "
                          f"128-bit security (at most {limit} bits): use a larger poly_degree")
    if max_abs_sum >= plan.max_magnitude:
        raise SecAggAbort(f"the sum can reach {max_abs_sum:g}, beyond what CKKS with scale 2^{plan.scale_bits} "
                          f"and a {plan.coeff_bits[0]}-bit prime holds ({plan.max_magnitude:g}): lower scale_bits")


def secret_context(plan: CKKSPlan) -> ts.Context:
    """The clients' context, with the secret key (made by the key dealer; never sent to the server)."""
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, plan.poly_degree, coeff_mod_bit_sizes=list(plan.coeff_bits),
                     encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC)
    ctx.global_scale = 2.0**plan.scale_bits
    return ctx


def public_context(ctx: ts.Context) -> bytes:
    """What the server gets: parameters only, no secret, public, relinearization or Galois keys."""
    return ctx.serialize(save_public_key=False, save_secret_key=False, save_galois_keys=False,
                         save_relin_keys=False)


def encrypt(ctx: ts.Context, vector: np.ndarray, slots: int) -> list[bytes]:
    """One client's vector as serialized ciphertexts of ``slots`` values each."""
    return [ts.ckks_vector(ctx, vector[i:i + slots].tolist()).serialize() for i in range(0, len(vector), slots)]


def add_ciphertexts(public: bytes, uploads: Mapping[int, list[bytes]]) -> list[bytes]:
    """The server's work: chunk-wise sums of every upload, under the public context only."""
    ctx = ts.context_from(public)
    if ctx.is_private():
        raise SecAggAbort("the context given to the server holds a secret key: refusing to aggregate")
    lengths = {len(u) for u in uploads.values()}
    if len(lengths) != 1:
        raise SecAggAbort(f"clients sent different numbers of ciphertexts {sorted(lengths)}: refusing to add them")
    sums: list[ts.CKKSVector] = []
    for c, chunks in sorted(uploads.items()):
        try:
            vectors = [ts.ckks_vector_from(ctx, b) for b in chunks]
        except Exception as exc:  # TenSEAL raises bare ValueError/RuntimeError on bad bytes
            raise SecAggAbort(f"malformed ciphertext from client {c}: {exc}") from exc
        sums = vectors if not sums else [s + v for s, v in zip(sums, vectors, strict=True)]
    return [s.serialize() for s in sums]


def decrypt(ctx: ts.Context, chunks: list[bytes], dim: int) -> np.ndarray:
    """A client decrypts the summed ciphertexts."""
    values = [ts.ckks_vector_from(ctx, b).decrypt() for b in chunks]
    return np.concatenate([np.asarray(v) for v in values])[:dim]


def encrypted_sum(vectors: Mapping[int, np.ndarray], plan: CKKSPlan | None = None,
                  max_abs_sum: float | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """Sum the clients' vectors under CKKS, counting bytes each way and client and server seconds."""
    plan = plan or CKKSPlan()
    if not vectors:
        raise SecAggAbort("no client sent an encrypted update: nothing to aggregate")
    dim = len(next(iter(vectors.values())))
    bound = max_abs_sum if max_abs_sum is not None else sum(float(np.max(np.abs(v))) for v in vectors.values())
    check_plan(plan, bound)
    t = time.perf_counter()
    ctx = secret_context(plan)
    public = public_context(ctx)
    setup = time.perf_counter() - t
    t = time.perf_counter()
    uploads = {c: encrypt(ctx, np.asarray(v, dtype=np.float64), plan.slots) for c, v in vectors.items()}
    client_seconds = setup + time.perf_counter() - t
    t = time.perf_counter()
    summed = add_ciphertexts(public, uploads)
    server_seconds = time.perf_counter() - t
    t = time.perf_counter()
    total = decrypt(ctx, summed, dim)
    client_seconds += time.perf_counter() - t
    up = sum(len(b) for chunks in uploads.values() for b in chunks)
    down = len(public) + sum(len(b) for b in summed)  # the context to the server, the sum to the decryptor
    n = len(vectors)
    return total, {"survivors": n, "bytes_up": up, "bytes_down": down, "bytes_up_per_client": up / n,
                   "client_seconds": client_seconds, "client_seconds_per_client": client_seconds / n,
                   "server_seconds": server_seconds, "public_context_bytes": len(public)}


__all__ = ["CKKSPlan", "add_ciphertexts", "check_plan", "decrypt", "encrypt", "encrypted_sum", "public_context",
           "secret_context"]
