"""Many clients' copies of one ``nn.Sequential`` model evaluated as one computation.

Each parameter is stacked over K clients (``[K, *shape]``) and a batch of inputs is ``[K, B, *sample]``.
Convolutions run as one grouped convolution over the clients in channels-last layout, linear layers as
batched matrix products, pooling and activations on all clients' channels at once. Because client k's
output depends only on client k's parameters, the gradient of the sum of the clients' losses with
respect to the stacked parameters is every client's own gradient: one backward pass serves all clients.

This does what ``vmap(functional_call(model, ...))`` does, in a layout chosen for CPU kernels: ``vmap``
turns the clients' convolutions into a grouped convolution in the default (channels-first) layout, for
which oneDNN's CPU kernels are slower than a single client's (LeNet: 1.2x a loop over the clients); in
channels-last layout the same grouped convolution is several times faster (docs/performance.md).
Supported: Conv2d (zero padding), Linear, MaxPool2d, AvgPool2d, Flatten, Identity and parameter-free
elementwise activations, nested ``nn.Sequential``. Other models use ``vmap``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from unseen.models import Square

# Parameter-free layers that act on each element alone, so on all clients' channels at once.
_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus,
                nn.Identity, Square)
_POOL = (nn.MaxPool2d, nn.AvgPool2d)


def _layers(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The leaf layers of a (nested) Sequential with their parameter-name prefixes, in order."""
    out: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential):
            out += _layers(child, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", child))
    return out


def why_not_stacked(model: nn.Module, sample_shape: Sequence[int]) -> str | None:
    """Why ``model`` cannot run stacked on samples of ``sample_shape`` (then ``vmap`` is used), or None."""
    if not isinstance(model, nn.Sequential):
        return f"{type(model).__name__} is not an nn.Sequential"
    layout = "image" if len(sample_shape) == 3 else "flat" if len(sample_shape) == 1 else "other"
    for name, layer in _layers(model):
        if isinstance(layer, nn.Conv2d):
            if layer.padding_mode != "zeros" or isinstance(layer.padding, str) or layout != "image":
                return f"layer {name} ({layer}) needs zero padding given as numbers, on image input"
        elif isinstance(layer, _POOL):
            if layout != "image":
                return f"layer {name} ({type(layer).__name__}) is not applied to images"
        elif isinstance(layer, nn.Flatten):
            if (layer.start_dim, layer.end_dim) != (1, -1):
                return f"layer {name} flattens dimensions {layer.start_dim}..{layer.end_dim}, not 1..-1"
            layout = "flat"
        elif isinstance(layer, nn.Linear):
            if layout != "flat":
                return f"layer {name} (Linear) is applied to input that is not flat"
        elif not isinstance(layer, _ELEMENTWISE):
            return f"layer {name} ({type(layer).__name__}) has no stacked implementation"
    return None if layout == "flat" else "the model's output is not flat"


def stacked_forward(model: nn.Sequential, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Every client's model on its own inputs: ``x`` is ``[K, B, *sample]``, the result ``[K, B, out]``.

    ``params`` maps ``model``'s parameter names to tensors stacked over the K clients.
    """
    k, b = x.shape[:2]
    h = x
    grouped = False  # whether h is [B, K*C, H, W] (channels-last memory) rather than [K, B, ...]
    for name, layer in _layers(model):
        if isinstance(layer, (nn.Conv2d, *_POOL)) and not grouped:  # client k holds channels k*C .. (k+1)*C - 1
            h = h.transpose(0, 1).reshape(b, -1, *h.shape[3:]).contiguous(memory_format=torch.channels_last)
            grouped = True
        if isinstance(layer, nn.Conv2d):
            w = params[f"{name}.weight"]
            bias = params.get(f"{name}.bias")
            h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), None if bias is None else bias.reshape(-1),
                         layer.stride, layer.padding, layer.dilation, layer.groups * k)
        elif isinstance(layer, nn.Flatten):  # to [K, B, C*H*W] in the model's (C, H, W) order
            h = h.reshape(b, k, -1).transpose(0, 1) if grouped else h.reshape(k, b, -1)
            grouped = False
        elif isinstance(layer, nn.Linear):
            w = params[f"{name}.weight"]
            bias = params.get(f"{name}.bias")
            h = torch.bmm(h, w.transpose(1, 2)) if bias is None else torch.baddbmm(bias.unsqueeze(1), h, w.transpose(1, 2))
        else:  # pooling and elementwise layers act per channel or per element
            h = layer(h)
    return h


__all__ = ["stacked_forward", "why_not_stacked"]
