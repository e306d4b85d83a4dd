"""Wavelet scattering features: the transform Kymatio computes, stable to small shifts, cached, and
refused where it does not apply."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unseen.data.scattering import output_shape, scatter, scattering_dataset
from unseen.errors import DataError

# Per-channel L2 norms of Kymatio 0.3.0's Scattering2D(J=2, shape=(28, 28)) on
# np.random.default_rng(0).normal(size=(1, 1, 28, 28)), in Kymatio's channel order: low-pass,
# 16 first-order (scale, then angle), 64 second-order. (Kymatio no longer imports with current SciPy,
# so it cannot be a dependency; it computed these with its 3-D module stubbed out.)
KYMATIO_NORMS = [
    1.269, 1.544, 1.393, 1.39, 1.504, 1.547, 1.484, 1.432, 1.473, 0.8913, 0.7702, 0.7571, 0.7605, 0.736, 0.7971,
    0.7449, 0.7737, 0.2424, 0.1709, 0.1332, 0.1131, 0.107, 0.1124, 0.1408, 0.1877, 0.1638, 0.1699, 0.1376, 0.134,
    0.1188, 0.1098, 0.1209, 0.1342, 0.1487, 0.154, 0.145, 0.1586, 0.1348, 0.09222, 0.1033, 0.1483, 0.1627, 0.1978,
    0.2442, 0.2188, 0.2324, 0.1886, 0.1309, 0.1441, 0.09472, 0.1047, 0.1242, 0.183, 0.1958, 0.1795, 0.1283, 0.1119,
    0.1103, 0.1102, 0.1018, 0.131, 0.175, 0.2111, 0.1693, 0.1321, 0.1461, 0.1084, 0.1198, 0.1258, 0.1546, 0.1573,
    0.181, 0.1829, 0.1885, 0.1417, 0.1203, 0.1162, 0.1337, 0.1456, 0.1835, 0.239,
]


def test_coefficients_match_kymatio_channel_by_channel():
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 1, 28, 28)).astype(np.float32))
    out = scatter(x)
    assert out.shape == (1, 81, 7, 7) == (1, *output_shape((1, 28, 28)))
    norms = out[0].flatten(1).norm(dim=1).numpy()
    # Kymatio subsamples between layers; computing at full resolution moves a few coefficients by < 3%.
    np.testing.assert_allclose(norms, KYMATIO_NORMS, rtol=0.03)


def test_a_one_pixel_shift_moves_the_features_much_less_than_the_pixels():
    yy, xx = np.mgrid[:28, :28]
    ring = np.exp(-((np.hypot(yy - 14, xx - 13) - 7) ** 2) / 0.5).astype(np.float32)  # a thin ring
    images = torch.from_numpy(np.stack([ring, np.roll(ring, 1, axis=1)]))[:, None]
    pixels_moved = (images[0] - images[1]).norm() / images[0].norm()
    feats = scatter(images)
    features_moved = (feats[0] - feats[1]).norm() / feats[0].norm()
    # Measured: pixels 0.86, features 0.24 (invariance grows to shifts of 2^J = 4 pixels).
    assert pixels_moved > 0.8 and features_moved < 0.35 * pixels_moved


def test_a_scattering_dataset_is_cached_and_refused_where_it_does_not_apply(tmp_path, monkeypatch):
    from unseen.data import load
    from unseen.data.datasets import Dataset, Split

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    rng = np.random.default_rng(0)
    images = Dataset("toy", Split(rng.random((12, 1, 8, 8), np.float32), np.arange(12) % 2),
                     Split(rng.random((4, 1, 8, 8), np.float32), np.arange(4) % 2), 2, (1, 8, 8))
    first = scattering_dataset(images)
    assert first.input_shape == (81, 2, 2) and first.train.x.shape == (12, 81, 2, 2)
    assert first.train.y is images.train.y and first.test.x.dtype == np.float32
    assert np.allclose(first.test.x[1], scatter(torch.from_numpy(images.test.x[1:2]))[0].numpy(), atol=1e-6)
    cached = sorted((tmp_path / "unseen" / "features").iterdir())
    assert len(cached) == 2  # train and test
    stamps = [p.stat().st_mtime_ns for p in cached]
    again = scattering_dataset(images)
    assert np.array_equal(again.train.x, first.train.x) and [p.stat().st_mtime_ns for p in cached] == stamps
    with pytest.raises(DataError, match="needs images"):
        scattering_dataset(load("breast_cancer", seed=0))
    with pytest.raises(ValueError, match="divisible by 4"):
        scatter(torch.zeros(1, 1, 10, 10))
