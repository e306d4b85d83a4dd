"""Wavelet scattering features for images (Mallat 2012; Bruna & Mallat 2013), as used for DP-SGD by
Tramèr & Boneh (2021, "Differentially private learning needs better features").

A scattering transform is a fixed cascade of Morlet wavelet convolutions, complex moduli and a
Gaussian low-pass: no parameter is learned from data, so computing it costs no privacy, and a small
model trained privately on it learns faster from the same noisy gradients than one trained on pixels.
With ``J = 2`` scales and ``L = 8`` orientations a ``C x H x W`` image becomes ``81 C`` channels of
``H/4 x W/4``: 1 low-pass, 16 first-order and 64 second-order coefficients per input channel.

The filter bank follows Kymatio's ``Scattering2D`` definitions (Andreux et al. 2020: Morlet filters
``0.8 * 2^j`` wide at frequency ``3/4 pi / 2^j``, slant ``4 / L``, periodized, reflect padding).
Kymatio itself is not a dependency: its last release (0.3.0, 2022) no longer imports with current
SciPy. Every step is computed at full resolution by FFT and subsampled once at the end.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from unseen.data.datasets import Dataset
from unseen.data.sources import cache_dir
from unseen.errors import DataError

_DTYPE = torch.float32  # float64 changes features by < 1e-6 relative, at twice the cost


def _gabor(size: int, sigma: float, theta: float, xi: float, slant: float = 1.0) -> np.ndarray:
    """A periodized 2-D Gabor filter in space (Kymatio's ``gabor_2d``)."""
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    curv = rot @ np.diag([1.0, slant**2]) @ rot.T / (2 * sigma**2)
    out = np.zeros((size, size), np.complex128)
    for ex in range(-2, 3):
        for ey in range(-2, 3):
            xx, yy = np.mgrid[ex * size : (ex + 1) * size, ey * size : (ey + 1) * size]
            arg = (-(curv[0, 0] * xx * xx + (curv[0, 1] + curv[1, 0]) * xx * yy + curv[1, 1] * yy * yy)
                   + 1j * xi * (xx * np.cos(theta) + yy * np.sin(theta)))
            out += np.exp(arg)
    return out / (2 * np.pi * sigma**2 / slant)


def _morlet(size: int, sigma: float, theta: float, xi: float, slant: float) -> np.ndarray:
    """Gabor minus a Gaussian envelope, so the filter has zero mean."""
    wave = _gabor(size, sigma, theta, xi, slant)
    envelope = _gabor(size, sigma, theta, 0.0, slant)
    return wave - wave.sum() / envelope.sum() * envelope


@lru_cache(maxsize=8)
def filter_bank(size: int, J: int = 2, L: int = 8) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Fourier transforms (real, as the filters are symmetric) of the wavelets ``(J * L, size, size)``,
    of the low-pass ``(size, size)``, and each wavelet's scale ``j``."""
    psi, scales = [], []
    for j in range(J):
        for t in range(L):
            theta = (int(L - L / 2 - 1) - t) * np.pi / L
            psi.append(np.real(np.fft.fft2(_morlet(size, 0.8 * 2**j, theta, 0.75 * np.pi / 2**j, 4.0 / L))))
            scales.append(j)
    phi = np.real(np.fft.fft2(_gabor(size, 0.8 * 2 ** (J - 1), 0.0, 0.0)))
    return np.stack(psi), phi, tuple(scales)


def output_shape(input_shape: tuple[int, int, int], J: int = 2, L: int = 8) -> tuple[int, int, int]:
    c, h, w = input_shape
    return c * (1 + J * L + L * L * J * (J - 1) // 2), h // 2**J, w // 2**J


def scatter(images: torch.Tensor, J: int = 2, L: int = 8) -> torch.Tensor:
    """Scattering coefficients of ``(B, C, H, W)`` images (square, sides divisible by ``2^J``):
    ``(B, C * K, H / 2^J, W / 2^J)`` with ``K = 1 + J L + L^2 J (J - 1) / 2`` (81 for J=2, L=8)."""
    b, c, h, w = images.shape
    step = 2**J
    if h != w or h % step:
        raise ValueError(f"scattering needs square images with sides divisible by {step}; got {h} x {w}")
    size = (h // step + 2) * step  # Kymatio's padding: room for the filters' support, a multiple of 2^J
    pad = (size - h) // 2
    x = F.pad(images.reshape(b * c, 1, h, w).to(_DTYPE), (pad, size - h - pad, pad, size - h - pad), mode="reflect")
    psi_np, phi_np, scales = filter_bank(size, J, L)
    psi = torch.from_numpy(psi_np).to(_DTYPE).to(images.device)
    phi = torch.from_numpy(phi_np).to(_DTYPE).to(images.device)

    def low_pass(u_hat: torch.Tensor) -> torch.Tensor:
        # Smooth, subsample by 2^J (in Fourier: average the spectrum's aliases, then a small inverse
        # FFT), cut the padding.
        v = (u_hat * phi).unflatten(-1, (step, size // step)).unflatten(-3, (step, size // step)).mean((-4, -2))
        s = torch.fft.ifft2(v).real
        return s[..., pad // step : pad // step + h // step, pad // step : pad // step + w // step]

    x_hat = torch.fft.fft2(x[:, 0])  # (BC, size, size)
    order0 = low_pass(x_hat)[:, None]
    u1_hat = torch.fft.fft2(torch.fft.ifft2(x_hat[:, None] * psi).abs())  # (BC, J L, size, size)
    order1 = low_pass(u1_hat)
    order2 = []
    for n1, j1 in enumerate(scales):
        later = [n2 for n2, j2 in enumerate(scales) if j2 > j1]
        if later:
            u2_hat = torch.fft.fft2(torch.fft.ifft2(u1_hat[:, n1 : n1 + 1] * psi[later]).abs())
            order2.append(low_pass(u2_hat))
    out = torch.cat([order0, order1, *order2], dim=1)
    return out.reshape(b, -1, *out.shape[-2:]).to(images.dtype)


def scatter_array(images: np.ndarray, J: int = 2, L: int = 8, batch: int = 256) -> np.ndarray:
    """:func:`scatter` over a large float32 array, a batch at a time (bounded memory)."""
    out = np.empty((len(images), *output_shape(images.shape[1:], J, L)), np.float32)
    with torch.no_grad():
        for start in range(0, len(images), batch):
            chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch]))
            out[start : start + len(chunk)] = scatter(chunk, J, L).numpy()
    return out


def _cache_path(split_x: np.ndarray, J: int, L: int) -> Path:
    digest = hashlib.sha256(np.ascontiguousarray(split_x).tobytes()).hexdigest()[:24]
    return cache_dir().parent / "features" / f"scattering-J{J}-L{L}-{digest}.npy"


def scatter_cached(x: np.ndarray, J: int = 2, L: int = 8) -> np.ndarray:
    """Scattering features of images ``(n, C, H, W)``, kept on disk (keyed by the images' bytes, J and L):
    MNIST's 70,000 images take about 90 s on 2 cores."""
    path = _cache_path(x, J, L)
    if path.exists():
        cached = np.load(path)
        if cached.shape == (len(x), *output_shape(x.shape[1:], J, L)):
            return cached
    features = scatter_array(x, J, L)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, features)
    tmp.replace(path)  # atomic: a concurrent run never reads half a file
    return features


def scattering_dataset(dataset: Dataset, J: int = 2, L: int = 8) -> Dataset:
    """The same dataset with every image replaced by its scattering coefficients."""
    if len(dataset.input_shape) != 3:
        raise DataError(f"data.features = 'scattering' needs images; {dataset.name} has tabular features. "
                        "Use data.features = 'pixels' (the default).")
    _, h, w = dataset.input_shape
    if h != w or h % 2**J:
        raise DataError(f"data.features = 'scattering' needs square images with sides divisible by {2**J}; "
                        f"{dataset.name} has {h} x {w}.")
    return replace(dataset, train=replace(dataset.train, x=scatter_cached(dataset.train.x, J, L)),
                   test=replace(dataset.test, x=scatter_cached(dataset.test.x, J, L)),
                   input_shape=output_shape(dataset.input_shape, J, L))
