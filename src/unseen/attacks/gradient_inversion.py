"""Gradient inversion of federated updates: reconstruct a client's training images from what it sent.

Threat model: an honest-but-curious server sees one client's FedSGD update (the gradient of the
loss on the client's batch at the current global model) and knows the model. It recovers the label
analytically (iDLG, Zhao et al. 2020: the true class is the only one whose last-layer bias gradient
is negative for a single image) and the image by optimisation (Inverting Gradients, Geiping et al.
2020: maximise the cosine similarity between the dummy image's gradient and the observed one, with
a total-variation prior). Multi-step FedAvg updates are attacked by unrolling the same local steps
on the dummy batch. Under secure aggregation the server sees only the sum of the clients' updates:
a sum of single-image updates is one batch gradient and still gives its images away; sums of
many-record updates do not (docs/audit.md has the figures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad

THREAT_MODEL = ("An honest-but-curious server that knows the model sees one client's FedSGD update and "
                "reconstructs its training image and label (iDLG label recovery, Inverting Gradients).")


def _loss_fn(model: nn.Module, names: list[str]):  # type: ignore[no-untyped-def]
    def loss(params: tuple[torch.Tensor, ...], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, dict(zip(names, params, strict=True)), (x,))
        return nn.functional.cross_entropy(logits, y)
    return loss


def client_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """The FedSGD update a client sends for batch (x, y): the loss gradient at the current weights."""
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach() for _, p in model.named_parameters())
    return list(grad(_loss_fn(model, names))(params, x, y))


def recover_label(gradients: list[torch.Tensor]) -> int:
    """iDLG: for one image, the last layer's bias gradient is softmax - onehot: negative only at the label."""
    return int(torch.argmin(gradients[-1]))


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


@dataclass(frozen=True)
class Reconstruction:
    image: torch.Tensor  # one image, or a batch when several were reconstructed
    label: int | list[int]
    final_loss: float


def local_update_delta(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float
                       ) -> list[torch.Tensor]:
    """The multi-step FedAvg update a client sends: weights after ``steps`` SGD steps on (x, y), minus before."""
    names = [n for n, _ in model.named_parameters()]
    start = tuple(p.detach() for _, p in model.named_parameters())
    return [w - w0 for w, w0 in zip(_unrolled(model, names, start, x, y, steps, lr), start, strict=True)]


def _unrolled(model: nn.Module, names: list[str], params: tuple[torch.Tensor, ...], x: torch.Tensor,
              y: torch.Tensor, steps: int, lr: float) -> tuple[torch.Tensor, ...]:
    grad_fn = grad(_loss_fn(model, names))
    for _ in range(steps):
        params = tuple(p - lr * g for p, g in zip(params, grad_fn(params, x, y), strict=True))
    return params


def invert_gradients(
    model: nn.Module, gradients: list[torch.Tensor], shape: tuple[int, ...], *, label: int | None = None,
    labels: list[int] | None = None, local_steps: int | None = None, local_lr: float = 0.1,
    steps: int = 1000, lr: float = 0.1, tv_weight: float = 1e-4, bounds: tuple[float, float] = (-0.43, 2.83),
    seed: int = 0,
) -> Reconstruction:
    """Find images whose update matches the observed one (1 - cosine similarity + TV prior).

    One image by default (label from iDLG if not given). ``labels`` reconstructs a batch of that many
    images (the attacker is given the labels, the usual assumption for batches). With ``local_steps``
    set, the observed update is a FedAvg update (weights after minus before, as from
    :func:`local_update_delta`) and the attack unrolls as many SGD steps of rate ``local_lr`` on the
    dummy batch (Geiping et al.); otherwise it is a FedSGD gradient.
    """
    if labels is None:
        labels = [recover_label(gradients) if label is None else label]
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach() for _, p in model.named_parameters())
    grad_fn = grad(_loss_fn(model, names))
    target = torch.cat([g.reshape(-1) for g in gradients])
    dummy = (torch.randn((len(labels), *shape), generator=torch.Generator().manual_seed(seed)) * 0.5
             ).requires_grad_(True)
    optimizer = torch.optim.Adam([dummy], lr=lr)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(steps * f) for f in (0.375, 0.625, 0.875)], 0.1)
    y = torch.tensor(labels)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        optimizer.zero_grad()
        if local_steps is None:
            g = torch.cat([t.reshape(-1) for t in grad_fn(params, dummy, y)])
        else:
            after = _unrolled(model, names, params, dummy, y, local_steps, local_lr)
            g = torch.cat([(w - w0).reshape(-1) for w, w0 in zip(after, params, strict=True)])
        loss = 1 - nn.functional.cosine_similarity(g, target, dim=0) + tv_weight * total_variation(dummy)
        loss.backward()
        dummy.grad.sign_()  # signed gradients, as in Geiping et al., are robust to scale
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            dummy.clamp_(*bounds)
    images = dummy.detach()
    if len(labels) == 1:
        return Reconstruction(images[0], labels[0], float(loss.detach()))
    return Reconstruction(images, labels, float(loss.detach()))


def matched_psnr(reconstructions: torch.Tensor, originals: torch.Tensor, data_range: float = 1.0) -> list[float]:
    """For each original image, the PSNR of its best-matching reconstruction (batch order is unknown)."""
    return [max(psnr(r, o, data_range) for r in reconstructions) for o in originals]


def psnr(reconstruction: torch.Tensor, original: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB (images in the same scale, range ``data_range``)."""
    mse = float(((reconstruction - original) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, window: int = 7, sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004) of two images (C, H, W), Gaussian window, mean over the map."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    coords = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = (g[:, None] * g[None, :] / g.sum() ** 2).expand(a.shape[0], 1, window, window)
    x, y = a.double()[None], b.double()[None]

    def blur(t: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(t, kernel, groups=a.shape[0])

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())
