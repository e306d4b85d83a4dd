"""Sums of per-sample clipped gradients in one backward pass (book-keeping; Bu et al., ICML 2023).

DP-SGD needs ``sum_i clip(g_i)``. Opacus either materializes every ``g_i`` with hooks on top of an
ordinary backward (which also forms the unclipped sum, then throws it away) or runs backward twice
(ghost clipping). Here one forward records each layer's input, one backward asks autograd only for
the gradients of each layer's *output* (parameter gradients are never formed), and then, per layer,
the same two pieces give both the per-sample norm and the clipped sum:

- ``Linear`` on ``(batch, features)``: the norm of ``a_i g_i^T`` is ``|a_i| |g_i|`` (ghost norm,
  almost free); the clipped sum is one matmul, ``(c * g)^T a``.
- ``Conv2d`` (and ``Linear`` on sequences): per-sample gradients by one batched matmul of the output
  gradients with the unfolded input, or the ghost norm ``<U U^T, G G^T>`` when that is cheaper
  (many output channels, few positions); the clipped sum reuses them.

Models with other parameterized layers (norm layers, embeddings, grouped convolutions) are left to
Opacus: :func:`unsupported_layers` names them. The arithmetic is that of Opacus (clip factor
``min(1, C / (|g_i| + 1e-6))``), and a test checks the two agree.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from unseen.errors import ModelError

_EPS = 1e-6  # Opacus's: clip factor = C / (norm + 1e-6), at most 1


def unsupported_layers(model: nn.Module) -> list[str]:
    """Trainable layers this module cannot clip per sample, as ``"name (Type)"``; empty if none."""
    bad = []
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        ok = isinstance(module, nn.Linear) or (
            type(module) is nn.Conv2d and module.groups == 1 and module.padding_mode == "zeros"
            and not isinstance(module.padding, str))
        if not ok:
            bad.append(f"{name or 'model'} ({type(module).__name__})")
    return bad


def _trainable(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]


# Per-layer work buffers on the CPU, kept from one step to the next: a convolution's unfolded input
# and its per-sample gradients run to hundreds of MB, and fresh arrays of that size cost page faults
# that took longer than the arithmetic here (1.66M-parameter CNN, batch 256: 105 -> 47 ms for its
# second convolution). One set per layer, because a step keeps every layer's pieces until the end.
_WORK: weakref.WeakKeyDictionary[nn.Module, dict[str, torch.Tensor]] = weakref.WeakKeyDictionary()


def _work(module: nn.Module, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """An uninitialized tensor of ``shape`` (``like``'s dtype and device), reused across steps on the CPU."""
    if like.device.type != "cpu":  # accelerators' caching allocators already reuse memory
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    store = _WORK.setdefault(module, {})
    n = math.prod(shape)
    buf = store.get(name)
    if buf is None or buf.numel() < n or buf.dtype != like.dtype:
        buf = store[name] = torch.empty(n + n // 8, dtype=like.dtype)  # slack for larger Poisson batches
    return buf[:n].view(shape)


def _input_columns(module: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """A layer's input as (B, K, T): K the weight's fan-in, T the positions (or tokens) it is applied at."""
    if not isinstance(module, nn.Conv2d):
        return a.reshape(a.shape[0], -1, a.shape[-1]).transpose(1, 2)
    # F.unfold's im2col loops over samples on CPU; a strided view and one copy is 1.2-14x faster here.
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = module.kernel_size, module.stride, module.dilation, module.padding
    if ph or pw:
        a = F.pad(a, (pw, pw, ph, ph))
    patches = a.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)  # (B, C, Ho, Wo, kh', kw')
    if dh > 1 or dw > 1:
        patches = patches[..., ::dh, ::dw]
    batch, channels, ho, wo = patches.shape[:4]
    columns = _work(module, "columns", (batch, channels, kh, kw, ho, wo), a)
    columns.copy_(patches.permute(0, 1, 4, 5, 2, 3))
    return columns.view(batch, channels * kh * kw, ho * wo)


def _output_columns(module: nn.Module, g: torch.Tensor) -> torch.Tensor:
    """A layer's output gradient as (B, O, T): sample i's weight gradient is ``g_i u_i^T``."""
    if isinstance(module, nn.Conv2d):
        return g.flatten(2)
    return g.reshape(g.shape[0], -1, g.shape[-1]).transpose(1, 2)


def _grouped(columns: torch.Tensor, copies: int) -> torch.Tensor:
    """(B*copies, X, T) -> (B, X, copies*T): each record's views as extra positions."""
    if copies == 1:
        return columns
    rows, width, positions = columns.shape
    return columns.view(rows // copies, copies, width, positions).transpose(1, 2).reshape(
        rows // copies, width, copies * positions)


# Per-sample convolution weight gradients have two CPU/GPU kernels whose speed depends on the shapes
# (measured 3x apart either way on MNIST CNNs): unfold + batched matmul, or one grouped convolution
# with the batch as groups. Like cudnn.benchmark, time both once per layer shape and keep the faster.
_CONV_CHOICE: dict[tuple, str] = {}


def _per_sample_bmm(module: nn.Module, go: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """(B, O, T) x (B, K, T) -> (B, O, K), into the layer's reused buffer."""
    out = _work(module, "per_sample", (go.shape[0], go.shape[1], columns.shape[1]), go)
    return torch.bmm(go, columns.transpose(1, 2), out=out)


def _conv_unfold(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return _per_sample_bmm(module, g.flatten(2), _input_columns(module, a))


def _conv_grouped(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    # Sample b's gradient is input_b correlated with grad_b: a convolution over the batch as groups,
    # stride and dilation swapped (as torch.nn.utils._expanded_weights does it).
    batch, out_ch, kh, kw = a.shape[0], g.shape[1], *module.kernel_size
    w = F.conv2d(a.transpose(0, 1), g.reshape(batch * out_ch, 1, *g.shape[2:]), None, stride=module.dilation,
                 padding=module.padding, dilation=module.stride, groups=batch)
    w = w[:, :, :kh, :kw].reshape(a.shape[1], batch, out_ch, kh, kw).movedim(0, 2)
    return w.reshape(batch, out_ch, -1)


def _conv_per_sample(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-sample weight gradients (B, O, C*k*k) of one convolution, by the faster kernel for its shape."""
    # Not the batch size: Poisson batches vary in size, and re-timing each would cost more than it saves.
    key = (tuple(a.shape[1:]), tuple(g.shape[1:]), module.kernel_size, module.stride, module.padding, module.dilation,
           a.device.type, a.dtype)
    choice = _CONV_CHOICE.get(key)
    if choice is None:
        timings = {}
        for name, fn in (("unfold", _conv_unfold), ("grouped", _conv_grouped)):
            fn(module, a, g)  # warm-up
            best = math.inf
            for _ in range(3):  # best of three: one timing is at the mercy of the scheduler
                if a.is_cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                fn(module, a, g)
                if a.is_cuda:
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - start)
            timings[name] = best
        choice = _CONV_CHOICE[key] = min(timings, key=timings.__getitem__)
    return (_conv_unfold if choice == "unfold" else _conv_grouped)(module, a, g)


def clipped_grad_sum(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    max_norm: float,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    copies: int = 1,
) -> tuple[dict[nn.Parameter, torch.Tensor], torch.Tensor, torch.Tensor]:
    """``sum_i min(1, C / |g_i|) g_i`` for every trainable parameter, the per-sample gradient norms
    (before clipping) and the per-sample losses.

    ``loss_fn(logits, y)`` must return one loss per sample (default: cross-entropy). Samples must be
    independent: no layer may mix the batch (BatchNorm), as for any per-sample clipping.

    ``copies = k > 1`` (augmentation multiplicity, De et al. 2022): rows ``i*k`` to ``i*k + k - 1`` of
    ``x`` are k views of record i, and ``g_i`` is the mean of their gradients, clipped once: the record's
    contribution stays bounded by C. Norms come back per record, losses per view.
    """
    bad = unsupported_layers(model)
    if bad:
        raise ModelError(f"per-sample clipping here supports Linear and Conv2d layers only, not {', '.join(bad)}; "
                         "use runtime.grad_sample_mode = 'ghost' (Opacus)")
    layers = _trainable(model)
    records: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []

    def keep(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        records.append((module, inputs[0].detach(), output))

    handles = [m.register_forward_hook(keep) for m in layers]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    if len({id(m) for m, _, _ in records}) != len(records):
        raise ModelError("a layer ran twice in one forward pass (shared weights): per-sample clipping here "
                         "assumes each layer runs once; use runtime.grad_sample_mode = 'ghost'")
    losses = (loss_fn or (lambda z, t: F.cross_entropy(z, t, reduction="none")))(logits, y)
    if copies < 1 or x.shape[0] % copies:
        raise ValueError(f"copies = {copies} must be >= 1 and divide the batch ({x.shape[0]} rows)")
    # Only the layers' output gradients: autograd skips every parameter-gradient kernel.
    out_grads = torch.autograd.grad(losses.sum() / copies, [out for _, _, out in records])

    batch = x.shape[0] // copies
    sq_norms = torch.zeros(batch, dtype=losses.dtype, device=x.device)
    pieces = []  # per layer: what the clipped sum needs once the clip factors are known
    for (module, a, _), g in zip(records, out_grads, strict=True):
        g = g.detach()
        weight, bias = module.weight, module.bias
        if copies > 1 and isinstance(module, nn.Linear):
            # A record's views act like positions of one sequence: (B*k, [T,] F) -> (B, k*T, F).
            a, g = a.reshape(batch, -1, a.shape[-1]), g.reshape(batch, -1, g.shape[-1])
        if isinstance(module, nn.Linear) and a.dim() == 2:
            if weight.requires_grad:
                sq_norms += a.square().sum(1) * g.square().sum(1)
            if bias is not None and bias.requires_grad:
                sq_norms += g.square().sum(1)
            pieces.append((module, "dense", a, g))
            continue
        views = copies if isinstance(module, nn.Conv2d) else 1  # Linear inputs were regrouped above
        go = _grouped(_output_columns(module, g), views)  # (B, O, T): a record's views side by side
        o, t, k = go.shape[1], go.shape[2], weight[0].numel()
        if weight.requires_grad:
            if o * k <= t * (o + k):  # materializing is cheaper than the T x T Gram matrices
                if isinstance(module, nn.Conv2d):
                    per_sample = _conv_per_sample(module, a, g)  # (B*copies, O, K)
                    if views > 1:
                        per_sample = per_sample.view(batch, views, *per_sample.shape[1:]).sum(1)
                else:
                    per_sample = _per_sample_bmm(module, go, _input_columns(module, a))
                sq_norms += torch.linalg.vector_norm(per_sample, dim=(1, 2)).square()
                pieces.append((module, "materialized", per_sample, go))
            else:
                u = _grouped(_input_columns(module, a), views)  # (B, K, T)
                sq_norms += (torch.bmm(u.transpose(1, 2), u) * torch.bmm(go.transpose(1, 2), go)).sum((1, 2))
                pieces.append((module, "ghost", u, go))
        else:
            pieces.append((module, "bias-only", None, go))
        if bias is not None and bias.requires_grad:
            sq_norms += go.sum(2).square().sum(1)

    norms = sq_norms.sqrt()
    clip = (max_norm / (norms + _EPS)).clamp(max=1.0)
    grads: dict[nn.Parameter, torch.Tensor] = {}
    for module, kind, first, go in pieces:
        weight, bias = module.weight, module.bias
        if kind == "dense":
            cg = go * clip[:, None]
            if weight.requires_grad:
                grads[weight] = cg.t() @ first
            if bias is not None and bias.requires_grad:
                grads[bias] = cg.sum(0)
            continue
        if weight.requires_grad:
            if kind == "materialized":
                summed = torch.einsum("b,bok->ok", clip, first)
            else:
                cg = go * clip[:, None, None]  # (B, O, T)
                summed = cg.transpose(0, 1).reshape(go.shape[1], -1) @ first.transpose(1, 2).reshape(-1, first.shape[1])
            grads[weight] = summed.view_as(weight)
        if bias is not None and bias.requires_grad:
            grads[bias] = (go.sum(2) * clip[:, None]).sum(0)
    return grads, norms, losses.detach()
