"""Models as flat parameter vectors: what clients and servers exchange and aggregate."""

from __future__ import annotations

import torch
from torch import nn


def get_flat(model: nn.Module) -> torch.Tensor:
    """All trainable parameters of ``model`` as one detached float32 vector (a copy)."""
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()


def set_flat(model: nn.Module, flat: torch.Tensor) -> None:
    """Copy a flat vector (as returned by :func:`get_flat`) into ``model``'s parameters."""
    # vector_to_parameters would make the parameters views of ``flat``: training would then write
    # into the caller's tensor (the global model). Copy instead.
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            n = p.numel()
            p.copy_(flat[offset : offset + n].view_as(p))
            offset += n


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
