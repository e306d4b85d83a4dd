"""Gaussian noise for DP mechanisms: seeded (reproducible simulation) or from the OS CSPRNG.

With ``secure=True`` the uniforms come from ``os.urandom`` (the kernel's cryptographically secure
generator) and each Gaussian is the scaled sum of four Box-Muller samples, the mitigation of
floating-point attacks on Gaussian noise that Opacus's secure mode also uses (Holohan et al. 2021,
n = 2). Seeded noise is fine for research simulation and makes runs reproducible; it is not safe
against an adversary who can learn the seed.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch


def _secure_uniform(n: int) -> np.ndarray:
    """``n`` float64 uniforms in (0, 1], 53 random bits each, from the OS CSPRNG."""
    bits = np.frombuffer(os.urandom(8 * n), dtype=np.uint64) >> np.uint64(11)
    return (bits.astype(np.float64) + 1.0) * 2.0**-53


def _secure_standard_normal(n: int) -> np.ndarray:
    total = np.zeros(n)
    for _ in range(4):
        u1, u2 = _secure_uniform(n), _secure_uniform(n)
        total += np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)
    return total / 2.0  # sum of 4 standard normals has variance 4


def gaussian_noise(
    shape: torch.Size | tuple[int, ...],
    std: float,
    *,
    generator: torch.Generator | None = None,
    secure: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """N(0, std^2) noise of ``shape``; from the CSPRNG when ``secure``, else from ``generator``."""
    if std == 0:
        return torch.zeros(shape, dtype=dtype)
    if secure:
        n = int(np.prod(shape)) if len(shape) else 1
        return torch.from_numpy(_secure_standard_normal(n) * std).to(dtype).reshape(shape)
    return torch.normal(0.0, std, size=tuple(shape), generator=generator, dtype=dtype)
