"""Fixed-point encoding of clipped float updates into integers modulo 2^k, for secure aggregation.

Secure aggregation adds integers modulo ``2^k``. A client clips its update to L2 norm ``clip``
(so every coordinate lies in ``[-clip, clip]``), multiplies by ``scale`` and rounds. The planner
picks ``scale`` so that the sum of ``n`` such vectors, plus any integer noise, can never wrap around
the modulus; when no scale can give the asked precision it raises before the round starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from unseen.errors import UnseenError


class EncodingError(UnseenError):
    """The modulus cannot hold the sum at a useful precision: names the numbers and the fix."""


@dataclass(frozen=True)
class FixedPoint:
    """How floats map to integers mod ``2^bits``: ``round(x * scale)`` in two's complement.

    ``max_error`` is the largest possible error of one decoded coordinate of the sum of ``clients``
    vectors (rounding to nearest: half a unit per client).
    """

    bits: int
    scale: float
    clip: float
    clients: int
    noise_std: float = 0.0  # of the summed integer noise, in integer units (distributed DP)

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        return np.uint32 if self.bits <= 32 else np.uint64

    @property
    def max_error(self) -> float:
        return self.clients * 0.5 / self.scale

    def to_dict(self) -> dict[str, float | int]:
        return {"bits": self.bits, "scale": self.scale, "clip": self.clip, "clients": self.clients,
                "max_error_per_coordinate": self.max_error}


def plan_fixed_point(clients: int, clip: float, bits: int = 32, noise_multiplier: float = 0.0,
                     tail_sigmas: float = 12.0, max_error: float | None = None) -> FixedPoint:
    """The largest ``scale`` for which the sum of ``clients`` clipped vectors (and noise) cannot overflow.

    The summed integers stay within ``clients * (clip * scale + 1) + tail_sigmas * noise_std`` of zero,
    where the summed noise has standard deviation ``noise_multiplier * clip * scale``; this must stay
    below ``2^(bits-1)``. ``max_error``, if given, is the largest acceptable error per coordinate.
    """
    if not 8 <= bits <= 62:
        raise EncodingError(f"secure aggregation modulus of 2^{bits}: use 8 to 62 bits (32 is the usual choice)")
    if clients < 1 or not clip > 0:
        raise EncodingError(f"fixed-point plan needs clients >= 1 and clip > 0 (got {clients}, {clip})")
    half = 2.0 ** (bits - 1)
    scale = (half - clients - 1) / (clip * (clients + tail_sigmas * noise_multiplier))
    if scale <= 0:
        raise EncodingError(f"a 2^{bits} modulus cannot hold the sum of {clients} clients: use more bits")
    plan = FixedPoint(bits, scale, clip, clients, noise_multiplier * clip * scale)
    if max_error is not None and plan.max_error > max_error:
        need = bits + math.ceil(math.log2(plan.max_error / max_error))
        raise EncodingError(
            f"a 2^{bits} modulus gives an error of up to {plan.max_error:.3g} per coordinate for {clients} clients "
            f"with clip {clip:g}, above the {max_error:g} asked: use at least {need} bits, or a smaller clip"
        )
    return plan


def clip_l2(x: np.ndarray, clip: float) -> np.ndarray:
    """``x`` scaled down to L2 norm ``clip`` if longer (float64)."""
    x = np.asarray(x, dtype=np.float64)
    norm = float(np.linalg.norm(x))
    return x * (clip / norm) if norm > clip else x


def encode(x: np.ndarray, plan: FixedPoint) -> np.ndarray:
    """A clipped float vector as integers mod ``2^bits`` (the caller clips; values past ``clip`` are refused)."""
    x = np.asarray(x, dtype=np.float64)
    bound = max(float(x.max()), -float(x.min())) if x.size else 0.0  # NaN and inf reach the max: no extra pass
    if not math.isfinite(bound):
        raise EncodingError("cannot encode an update with NaN or infinite values")
    if bound > plan.clip * (1 + 1e-9):
        raise EncodingError(f"a coordinate exceeds the clip {plan.clip:g}: clip the update before encoding it")
    scaled = np.multiply(x, plan.scale)
    np.rint(scaled, out=scaled)
    if plan.bits <= 32:  # the planner keeps |values| < 2^(bits-1), so they fit int32; the uint32 view is mod 2^32
        residues = scaled.astype(np.int32).view(np.uint32)
        if plan.bits < 32:
            residues &= np.uint32((1 << plan.bits) - 1)
        return residues
    return to_modular(scaled.astype(np.int64), plan.bits)


def encode_update(x: np.ndarray, clip: float, plan: FixedPoint, weight: float | None = None) -> np.ndarray:
    """``x`` clipped to L2 norm ``clip`` and times ``weight`` (in [0, 1], if given), encoded; the encoded
    weight appended as the last word.

    This is ``encode(clip_l2(x, clip) * weight, plan)`` (followed by ``weight``) in one pass over the
    vector after its norm: clip, weight and scale fold into one factor, and a clipped vector needs no
    range check (every coordinate is at most its norm). Results may differ from the composed form by
    one unit where a product lands on a rounding midpoint.
    """
    x = np.asarray(x, dtype=np.float64)
    if not 0 < clip <= plan.clip * (1 + 1e-9):
        raise EncodingError(f"clip {clip:g} must be > 0 and at most the plan's {plan.clip:g}")
    w = 1.0 if weight is None else float(weight)
    if not 0.0 <= w <= min(1.0, plan.clip):
        raise EncodingError(f"a client's weight must lie in [0, 1] once divided by the public cap (got {w:g})")
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite norms are handled below
        norm = math.sqrt(float(np.dot(x, x)))
    if not math.isfinite(norm):
        if not np.isfinite(x).all():
            raise EncodingError("cannot encode an update with NaN or infinite values")
        top = float(np.abs(x).max())  # finite values whose squares overflow: take the norm of x / top
        norm = top * math.sqrt(float(np.dot(x / top, x / top)))
    factor = (clip / norm if norm > clip else 1.0) * w * plan.scale
    scaled = np.multiply(x, factor)
    np.rint(scaled, out=scaled)
    ints = np.empty(x.size + (weight is not None), dtype=np.int32 if plan.bits <= 32 else np.int64)
    np.copyto(ints[:x.size], scaled, casting="unsafe")  # exact: whole numbers within the planned range
    if weight is not None:
        ints[-1] = int(np.rint(w * plan.scale))
    if plan.bits > 32:
        return to_modular(ints, plan.bits)
    residues = ints.view(np.uint32)  # two's complement: the uint32 view is the residue mod 2^32
    if plan.bits < 32:
        residues &= np.uint32((1 << plan.bits) - 1)
    return residues


def to_modular(ints: np.ndarray, bits: int) -> np.ndarray:
    """Signed integers as their residues mod ``2^bits`` (two's complement)."""
    dtype = np.uint32 if bits <= 32 else np.uint64
    return (ints.astype(np.uint64) & np.uint64((1 << bits) - 1)).astype(dtype)


def from_modular(residues: np.ndarray, bits: int) -> np.ndarray:
    """Residues mod ``2^bits`` back to signed integers in ``[-2^(bits-1), 2^(bits-1))``."""
    r = residues.astype(np.uint64) & np.uint64((1 << bits) - 1)
    signed = r.astype(np.int64)
    return np.where(signed >= (1 << (bits - 1)), signed - (1 << bits), signed)


def decode_sum(total: np.ndarray, plan: FixedPoint) -> np.ndarray:
    """The float sum from the integer sum mod ``2^bits``."""
    return from_modular(total, plan.bits).astype(np.float64) / plan.scale


__all__ = ["EncodingError", "FixedPoint", "clip_l2", "decode_sum", "encode", "encode_update", "from_modular",
           "plan_fixed_point", "to_modular"]
