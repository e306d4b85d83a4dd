"""Models as flat parameter vectors: what clients and servers exchange and aggregate."""

from __future__ import annotations

import torch
from torch import nn


def get_flat(model: nn.Module) -> torch.Tensor:
    """All trainable parameters of ``model`` as one detached float32 vector (a copy)."""
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()


def unflatten(model: nn.Module, flat: torch.Tensor) -> list[torch.Tensor]:
    """A flat vector cut into views shaped like ``model``'s parameters (on their devices)."""
    params = list(model.parameters())
    pieces = torch.split(flat, [p.numel() for p in params])
    return [piece.view_as(p).to(p.device) for piece, p in zip(pieces, params, strict=True)]


def set_flat(model: nn.Module, flat: torch.Tensor) -> None:
    """Copy a flat vector (as returned by :func:`get_flat`) into ``model``'s parameters."""
    # vector_to_parameters would make the parameters views of ``flat``: training would then write
    # into the caller's tensor (the global model). Copy instead.
    with torch.no_grad():
        for p, piece in zip(model.parameters(), unflatten(model, flat), strict=True):
            p.copy_(piece)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
