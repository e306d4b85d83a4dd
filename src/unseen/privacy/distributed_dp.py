"""Distributed discrete Gaussian DP under secure aggregation (Kairouz, Liu & Steinke, ICML 2021).

No party is trusted to add noise: each client clips its update to L2 norm ``clip``, scales it to
integers with conditional randomized rounding (so its integer norm stays below a known bound
``sensitivity``), and adds discrete Gaussian noise of variance ``sigma_total^2 / min_survivors``.
Secure aggregation reveals only the sum, which then carries at least ``sigma_total^2`` of noise as
long as ``min_survivors`` clients finish the round; a round with fewer survivors is aborted rather
than released under-noised.

Privacy (Kairouz et al. 2021, Theorem 1): the sum of ``m`` independent N_Z(0, s^2) vectors added to a
vector of L2 sensitivity ``D`` is (1/2) eps^2-zCDP with
``eps = sqrt(D^2 / (m s^2) + tau * d / 2)``, ``tau = 10 * sum_{k=1}^{m-1} exp(-2 pi^2 s^2 k / (k+1))``.
For the noise levels used here ``tau * d`` is negligible and the bound equals the Gaussian
mechanism's RDP at noise multiplier ``z = sigma_total / D``; rounds compose on dp-accounting's RDP
accountant, which this module feeds as a Gaussian event of the same RDP curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from unseen.crypto.fixed_point import FixedPoint, clip_l2, to_modular
from unseen.errors import SpecError

BETA = math.exp(-0.5)  # rounding retries: each attempt fails with probability at most beta


@dataclass(frozen=True)
class DistributedDP:
    """Public parameters of the distributed discrete Gaussian mechanism for one round."""

    noise_multiplier: float  # z: summed noise std over the integer L2 sensitivity
    clip: float
    dim: int
    clients: int  # clients that start the round
    min_survivors: int  # noise is calibrated for this many; fewer survivors abort the round
    scale: float  # integers per unit of update (from the fixed-point plan)

    @property
    def sensitivity(self) -> float:
        """L2 norm bound of one client's rounded integer vector (Kairouz et al., conditional rounding)."""
        c = self.clip * self.scale
        d = self.dim
        return math.sqrt(min(c**2 + d / 4 + math.sqrt(2 * math.log(1 / BETA)) * (c + math.sqrt(d) / 2),
                             (c + math.sqrt(d)) ** 2))

    @property
    def sigma_total(self) -> float:
        return self.noise_multiplier * self.sensitivity

    @property
    def sigma_client(self) -> float:
        return self.sigma_total / math.sqrt(self.min_survivors)

    @property
    def tau(self) -> float:
        s2 = self.sigma_client**2
        return 10 * sum(math.exp(-2 * math.pi**2 * s2 * k / (k + 1)) for k in range(1, self.min_survivors))

    @property
    def zcdp_epsilon(self) -> float:
        """The per-round eps of the (1/2) eps^2-zCDP bound, at the worst allowed survivor count."""
        return math.sqrt(self.sensitivity**2 / (self.min_survivors * self.sigma_client**2) + self.tau * self.dim / 2)

    @property
    def equivalent_noise_multiplier(self) -> float:
        """The Gaussian noise multiplier with the same RDP curve: what the accountant composes."""
        return 1.0 / self.zcdp_epsilon


def plan_distributed(noise_multiplier: float, clip: float, dim: int, clients: int, min_survivors: int,
                     bits: int = 32, tail_sigmas: float = 12.0) -> tuple[DistributedDP, FixedPoint]:
    """Pick the largest scale whose noisy integer sum cannot wrap mod ``2^bits``; refuse if none can."""
    if not 1 <= min_survivors <= clients:
        raise SpecError(f"distributed DP: min_survivors must be in [1, {clients}], got {min_survivors}")
    half = 2.0 ** (bits - 1)
    # |sum| <= clients * (clip*scale + 1) + tail * z * (clip*scale + sqrt(d)) * sqrt(clients / min_survivors)
    spread = tail_sigmas * noise_multiplier * math.sqrt(clients / min_survivors)
    scale = (half - clients - spread * math.sqrt(dim)) / (clip * (clients + spread))
    if scale * clip < 10 * math.sqrt(dim):
        raise SpecError(
            f"distributed DP: a 2^{bits} modulus leaves {scale * clip:.3g} integer units for a clipped update of "
            f"{dim} values, too coarse (rounding would dominate the noise): use more privacy.secagg_bits"
        )
    dd = DistributedDP(noise_multiplier, clip, dim, clients, min_survivors, scale)
    plan = FixedPoint(bits, scale, clip, clients, dd.sigma_total)
    return dd, plan


def discrete_gaussian(size: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Samples of N_Z(0, sigma^2) by rejection from the discrete Laplace (Canonne, Kamath & Steinke 2020).

    Vectorized with floating-point arithmetic, as the reference implementations are; exactness is
    up to double precision.
    """
    t = math.floor(sigma) + 1
    p = -math.expm1(-1.0 / t)  # geometric success probability of the discrete Laplace with scale t
    out = np.empty(size, dtype=np.int64)
    filled = 0
    while filled < size:
        n = int((size - filled) * 1.7) + 16
        y = (rng.geometric(p, n) - rng.geometric(p, n)).astype(np.int64)
        accept = rng.random(n) < np.exp(-((np.abs(y) - sigma**2 / t) ** 2) / (2 * sigma**2))
        take = y[accept][: size - filled]
        out[filled:filled + len(take)] = take
        filled += len(take)
    return out


def conditional_round(x: np.ndarray, bound: float, rng: np.random.Generator, tries: int = 1000) -> np.ndarray:
    """Unbiased randomized rounding of ``x``, redrawn until the result's L2 norm is at most ``bound``."""
    low = np.floor(x)
    frac = x - low
    for _ in range(tries):
        r = low + (rng.random(x.shape) < frac)
        if float(np.dot(r, r)) <= bound**2:
            return r.astype(np.int64)
    raise SpecError("conditional rounding failed 1000 times: the sensitivity bound is inconsistent with the scale")


def client_encode(update: np.ndarray, dd: DistributedDP, plan: FixedPoint, rng: np.random.Generator) -> np.ndarray:
    """One client's contribution: clip, scale, round within the sensitivity bound, add its noise share, mod 2^bits."""
    scaled = clip_l2(update, dd.clip) * dd.scale
    noisy = conditional_round(scaled, dd.sensitivity, rng) + discrete_gaussian(update.size, dd.sigma_client, rng)
    return to_modular(noisy, plan.bits)


__all__ = ["DistributedDP", "client_encode", "conditional_round", "discrete_gaussian", "plan_distributed"]
