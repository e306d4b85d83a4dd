"""Fixed augmented views of training images, for DP-SGD with augmentation multiplicity.

De et al. (2022) average each record's gradient over several augmented views before clipping: the
record's contribution stays bounded by the clip, so the privacy guarantee is unchanged, and the
averaged gradient is less noisy relative to the DP noise. Here the views are fixed: the image and
its translations by one pixel (circular, so MNIST's blank border wraps onto itself), computed once.
On scattering features each view is scattered (and cached) like the original.
"""

from __future__ import annotations

import numpy as np

# (dx, dy): the image, then its four one-pixel neighbours, then the diagonals.
SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1))


def shift(images: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Images (n, C, H, W) translated by dx columns and dy rows, wrapping around the border."""
    return np.ascontiguousarray(np.roll(images, (dy, dx), axis=(-2, -1)))


def shifted_views(images: np.ndarray, copies: int, features: str = "pixels") -> np.ndarray:
    """(n, copies, ...): the first ``copies`` of :data:`SHIFTS` of every image, as pixels or scattering features."""
    if not 1 <= copies <= len(SHIFTS):
        raise ValueError(f"copies must be between 1 and {len(SHIFTS)}, got {copies}")
    if features == "scattering":
        from unseen.data.scattering import output_shape, scatter_cached

        shape, transform = output_shape(images.shape[1:]), scatter_cached
    else:
        shape, transform = images.shape[1:], lambda v: v  # noqa: E731
    out = np.empty((len(images), copies, *shape), np.float32)
    for k, (dx, dy) in enumerate(SHIFTS[:copies]):
        out[:, k] = transform(shift(images, dx, dy) if (dx, dy) != (0, 0) else images)
    return out
