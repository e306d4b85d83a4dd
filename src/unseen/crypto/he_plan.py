"""CKKS parameter planning: ring degree, modulus chain and scale from a computation's depth, checked first.

A CKKS computation of multiplicative depth ``D`` at scale ``2^s`` needs a coefficient modulus chain
``[s + integer_bits, s x D, special]``: the first prime holds the integer part of the final values
above the scale, each of the ``D`` middle primes is consumed by one rescale, and the special prime
(at least as large as any other) serves key switching. The ring degree ``N`` is the smallest power of
two whose 128-bit-security bound on the total modulus (HomomorphicEncryption.org standard, classical
attacks, ternary secrets) holds the chain and whose ``N / 2`` slots fit the data.

``plan_ckks`` explains, before anything is encrypted, why a configuration cannot work, instead of the
backend's "scale out of bounds" or "end of modulus switching chain reached" halfway through.
"""

from __future__ import annotations

from dataclasses import dataclass

import tenseal as ts

from unseen.errors import UnseenError

# Largest total coefficient modulus (bits) for 128-bit classical security, per ring degree (HE standard).
MAX_COEFF_BITS = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
MAX_PRIME_BITS = 60  # SEAL's limit on one prime of the chain


class HEPlanError(UnseenError):
    """CKKS parameters that cannot run the computation securely, with what to change."""


@dataclass(frozen=True)
class HEPlan:
    """Parameters for one CKKS computation, with the reasons they were chosen."""

    poly_degree: int
    coeff_bits: tuple[int, ...]
    scale_bits: int
    depth: int

    @property
    def slots(self) -> int:
        return self.poly_degree // 2

    @property
    def modulus_bits(self) -> int:
        return sum(self.coeff_bits)

    @property
    def security_limit_bits(self) -> int:
        return MAX_COEFF_BITS[self.poly_degree]

    def describe(self) -> str:
        return (f"N = {self.poly_degree} ({self.slots} slots), modulus {self.modulus_bits} of at most "
                f"{self.security_limit_bits} bits for 128-bit security, chain {list(self.coeff_bits)}, "
                f"scale 2^{self.scale_bits}, depth {self.depth}")

    def to_dict(self) -> dict[str, object]:
        return {"poly_degree": self.poly_degree, "coeff_bits": list(self.coeff_bits), "scale_bits": self.scale_bits,
                "depth": self.depth, "slots": self.slots, "modulus_bits": self.modulus_bits,
                "security_limit_bits": self.security_limit_bits, "security": "128-bit (HE standard)"}


def plan_ckks(depth: int, *, scale_bits: int = 40, integer_bits: int = 20, min_slots: int = 1,
              min_degree: int = 1024, special_bits: int | None = None) -> HEPlan:
    """The smallest 128-bit-secure CKKS parameters for ``depth`` rescales at scale ``2^scale_bits``.

    ``integer_bits`` bounds the magnitude of every intermediate value (|x| < 2^integer_bits);
    ``min_slots`` is how many values one ciphertext must hold. ``special_bits`` sets the key-switching
    prime (default: as large as the largest other prime); rotations add noise in proportion to the
    largest data prime over it, so computations with many rotations want it larger.
    """
    if depth < 0:
        raise HEPlanError(f"depth must be >= 0, got {depth}")
    first = scale_bits + integer_bits
    if first > MAX_PRIME_BITS:
        raise HEPlanError(f"scale 2^{scale_bits} with values up to 2^{integer_bits} needs a {first}-bit first "
                          f"prime; primes are limited to {MAX_PRIME_BITS} bits: lower scale_bits (precision) or "
                          f"bound the values more tightly (integer_bits)")
    if scale_bits < 20:
        raise HEPlanError(f"scale 2^{scale_bits} leaves almost no precision after encryption noise: use >= 20 bits")
    special = max(first, scale_bits) if special_bits is None else special_bits
    if special > MAX_PRIME_BITS or special < max(first, scale_bits):
        raise HEPlanError(f"the special prime must have {max(first, scale_bits)} to {MAX_PRIME_BITS} bits, "
                          f"got {special}")
    chain = (first, *([scale_bits] * depth), special)
    total = sum(chain)
    for degree, limit in MAX_COEFF_BITS.items():
        if degree >= min_degree and total <= limit and degree // 2 >= min_slots:
            return HEPlan(degree, chain, scale_bits, depth)
    largest = max(MAX_COEFF_BITS)
    if total > MAX_COEFF_BITS[largest]:
        most = (MAX_COEFF_BITS[largest] - first - special) // scale_bits
        raise HEPlanError(
            f"depth {depth} at scale 2^{scale_bits} needs a {total}-bit modulus ({list(chain)}), beyond the "
            f"{MAX_COEFF_BITS[largest]} bits that the largest ring (N = {largest}) allows at 128-bit security. "
            f"At this scale at most depth {most} fits: use fewer multiplications (lower-degree activations, "
            f"fewer layers), a smaller scale, or refresh ciphertexts (decrypt and re-encrypt) between stages")
    raise HEPlanError(f"{min_slots} values per ciphertext need N >= {2 * min_slots}, beyond N = {largest}: "
                      f"split the data over more ciphertexts")


def check(plan: HEPlan, depth: int = 0) -> None:
    """Refuse a hand-made plan that is below 128-bit security or too shallow for ``depth``."""
    limit = MAX_COEFF_BITS.get(plan.poly_degree)
    if limit is None:
        raise HEPlanError(f"poly_degree {plan.poly_degree}: use a power of two from 1024 to 32768")
    if plan.modulus_bits > limit:
        raise HEPlanError(f"a {plan.modulus_bits}-bit modulus at N = {plan.poly_degree} is below 128-bit security "
                          f"(at most {limit} bits): use plan_ckks, or a larger poly_degree")
    if max(plan.coeff_bits) > MAX_PRIME_BITS:
        raise HEPlanError(f"primes are limited to {MAX_PRIME_BITS} bits, the chain has {max(plan.coeff_bits)}")
    if len(plan.coeff_bits) - 2 < depth:
        raise HEPlanError(f"the computation rescales {depth} times but the chain {list(plan.coeff_bits)} has only "
                          f"{len(plan.coeff_bits) - 2} primes to consume: plan with plan_ckks({depth}, ...)")


def context(plan: HEPlan, *, galois: bool = False, threads: int = 0) -> ts.Context:
    """A secret-key CKKS context for ``plan`` (symmetric encryption: seeded ciphertexts, half the bytes)."""
    check(plan)
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, plan.poly_degree, coeff_mod_bit_sizes=list(plan.coeff_bits),
                     encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC, n_threads=threads)
    ctx.global_scale = 2.0**plan.scale_bits
    ctx.auto_relin, ctx.auto_rescale, ctx.auto_mod_switch = True, True, True
    if galois:
        ctx.generate_galois_keys()
    return ctx


def evaluation_context(ctx: ts.Context, *, galois: bool = False) -> bytes:
    """What the server gets: parameters and evaluation keys (relinearization, Galois if asked), no secret key."""
    return ctx.serialize(save_public_key=False, save_secret_key=False, save_galois_keys=galois,
                         save_relin_keys=True)


__all__ = ["HEPlan", "HEPlanError", "MAX_COEFF_BITS", "check", "context", "evaluation_context", "plan_ckks"]
