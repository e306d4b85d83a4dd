"""Fixed augmented views for augmentation multiplicity: the image first, then its one-pixel shifts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unseen.data.scattering import scatter
from unseen.data.views import SHIFTS, shifted_views


def test_views_are_the_image_then_its_one_pixel_shifts():
    images = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    views = shifted_views(images, 5)
    assert views.shape == (3, 5, 1, 8, 8) and SHIFTS[1] == (1, 0)
    assert np.array_equal(views[:, 0], images)
    assert np.array_equal(views[:, 1, :, :, 1:], images[:, :, :, :-1])  # one column to the right
    assert np.array_equal(views[:, 3, :, 1:], images[:, :, :-1])  # one row down
    with pytest.raises(ValueError, match="between 1 and 9"):
        shifted_views(images, 10)


def test_scattering_views_are_the_scattering_of_each_shifted_image(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    images = np.random.default_rng(1).random((4, 1, 16, 16), dtype=np.float32)
    views = shifted_views(images, 3, "scattering")
    assert views.shape == (4, 3, 81, 4, 4)
    for k, (dx, dy) in enumerate(SHIFTS[:3]):
        want = scatter(torch.from_numpy(np.roll(images, (dy, dx), axis=(-2, -1)).copy())).numpy()
        assert np.allclose(views[:, k], want, atol=1e-5)
    assert not np.allclose(views[:, 0], views[:, 1])
