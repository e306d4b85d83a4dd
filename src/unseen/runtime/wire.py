"""The message boundary: tensors as bytes, exactly as they would cross a network.

The simulator encodes every broadcast and every client update and decodes it on the other side, so
byte counts are those of real payloads and the server only ever validates what it decoded. The
format is NumPy's ``.npy`` (self-describing dtype and shape, loaded with ``allow_pickle=False`` so a
malicious payload cannot execute code).
"""

from __future__ import annotations

import io

import numpy as np
import torch


class WireError(ValueError):
    """A payload could not be decoded."""


def encode(tensor: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, tensor.detach().cpu().numpy(), allow_pickle=False)
    return buffer.getvalue()


def decode(payload: bytes) -> torch.Tensor:
    try:
        array = np.load(io.BytesIO(payload), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise WireError(f"malformed payload ({len(payload)} bytes): {exc}") from exc
    return torch.from_numpy(np.array(array))  # copy: frombuffer arrays are read-only
