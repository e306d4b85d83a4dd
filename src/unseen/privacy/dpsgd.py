"""Record-level DP-SGD (Abadi et al. 2016) on Opacus: per-sample clipping and Gaussian noise.

``dp_sgd_update`` is the private twin of :func:`unseen.federated.local_update`: same inputs and
output, but batches are Poisson-sampled (each record independently with rate q, as the accountant
for subsampled Gaussian steps assumes), per-sample gradients are clipped to ``max_grad_norm`` and
Gaussian noise of std ``noise_multiplier * max_grad_norm`` is added to their sum, which is divided
by the expected batch size. An empty batch still takes a noise-only step: the accountant counts
every step.

How the clipped sum is computed is a performance setting (``grad_sample_mode``): "bk" is
:mod:`unseen.privacy.per_sample` (one backward pass; Linear and Conv2d models), the others are
Opacus's ``GradSampleModule`` variants with its ``DPOptimizer``. "auto" takes "bk" where it applies
and Opacus's ghost clipping elsewhere. All give the same update for the same generator.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from opacus.grad_sample import GradSampleModuleFastGradientClipping, get_gsm_class
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
from opacus.validators import ModuleValidator
from torch import nn
from torch.nn import functional as F

from unseen.errors import ModelError
from unseen.federated.client import (
    ClientResult,
    LocalTraining,
    OptimizerState,
    export_optimizer_state,
    import_optimizer_state,
)
from unseen.federated.params import get_flat, set_flat
from unseen.privacy.noise import gaussian_noise
from unseen.privacy.per_sample import clipped_grad_sum, unsupported_layers


def _noise_only_step(optimizer: DPOptimizer) -> None:
    """Take a DP-SGD step on an empty batch: the update is pure noise / expected batch size."""
    for p in optimizer.params:
        p.summed_grad = torch.zeros_like(p)
    optimizer.add_noise()
    optimizer.scale_grad()
    optimizer.original_optimizer.step()
    for p in optimizer.params:
        p.summed_grad = None


@dataclass(frozen=True)
class DPSGD:
    noise_multiplier: float
    max_grad_norm: float
    sampling_rate: float  # Poisson rate q = expected batch size / records
    secure_rng: bool = False
    # Performance only: how per-sample clipped sums are computed. "bk": one backward pass, here
    # (Linear/Conv2d models); "ghost": Opacus ghost clipping (two backward passes); "hooks",
    # "functorch", "ew": Opacus materializing per-sample gradients. "auto": "bk" where it applies.
    grad_sample_mode: str = "auto"
    # Augmentation multiplicity (De et al. 2022): x holds k views per record, (n, k, ...); each record's
    # gradient is the mean over its views, clipped once, so the sensitivity (and the guarantee) is unchanged.
    copies: int = 1


def steps_per_epoch(sampling_rate: float) -> int:
    """Poisson-sampled steps that make one expected pass over the data."""
    return max(1, math.ceil(1 / sampling_rate))


def check_model(model: nn.Module) -> None:
    """Refuse models whose accounting would be wrong under DP-SGD, naming the layer and the fix."""
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ModelError(
            "this model cannot be trained with DP-SGD: " + "; ".join(str(e).split(".")[0] for e in errors)
            + ". Replace BatchNorm with GroupNorm (opacus.validators.ModuleValidator.fix does it) or use "
            "another model."
        )


def _noise_like(reference: torch.Tensor, std: float, secure: bool, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise shaped like ``reference``: from the OS CSPRNG when ``secure``, else drawn from
    ``generator`` exactly as Opacus's DPOptimizer draws it (so both DP-SGD paths agree for one seed)."""
    if secure:
        return gaussian_noise(reference.shape, std, secure=True, dtype=reference.dtype).to(reference.device)
    if std == 0:
        return torch.zeros_like(reference)
    return torch.normal(0.0, std, size=reference.shape, device=reference.device, generator=generator,
                        dtype=reference.dtype)


def _noise_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """A generator on ``device`` (where the noise is drawn), seeded from ours."""
    return torch.Generator(device=device).manual_seed(int(torch.randint(2**62, (1,), generator=generator)))


def _poisson_batch(n: int, rate: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Indices of one Poisson-sampled batch: each of ``n`` records independently with probability ``rate``."""
    return (torch.rand(n, generator=generator) < rate).nonzero().squeeze(1).to(device)


class _SecureNoise:
    """Mixin: Opacus's noise step with noise drawn from the OS CSPRNG (see :mod:`unseen.privacy.noise`)."""

    def add_noise(self) -> None:
        for p in self.params:  # type: ignore[attr-defined]
            std = self.noise_multiplier * self.max_grad_norm  # type: ignore[attr-defined]
            p.grad = (p.summed_grad + _noise_like(p.summed_grad, std, True, self.generator)).view_as(p)  # type: ignore[attr-defined]


class _SecureDPOptimizer(_SecureNoise, DPOptimizer):
    pass


class _SecureDPOptimizerGhost(_SecureNoise, DPOptimizerFastGradientClipping):
    pass


def dp_sgd_update(
    model: nn.Module,
    global_params: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    config: LocalTraining,
    dp: DPSGD,
    generator: torch.Generator,
    optimizer_state: OptimizerState | None = None,
) -> ClientResult:
    """``config.epochs`` epochs of DP-SGD from ``global_params``; returns the (private) update.

    ``optimizer_state`` carries momentum across calls as in :func:`unseen.federated.local_update`
    (the momentum buffer holds only noised, clipped gradients: carrying it is post-processing)."""
    if config.sam_rho:
        raise ValueError("DP-SGD with sharpness-aware minimization: SAM's ascent step uses the unclipped batch "
                         "gradient, which the accounting does not cover. Use sam_rho = 0")
    set_flat(model, global_params)
    model.train()
    n = len(y)
    mode = dp.grad_sample_mode
    if mode == "auto":
        mode = "ghost" if unsupported_layers(model) else "bk"
    if dp.copies > 1 and mode != "bk":
        raise ModelError(f"augmentation multiplicity needs unseen's one-pass clipping (grad_sample_mode 'bk'), "
                         f"not {mode!r}" + (f"; it cannot clip {', '.join(unsupported_layers(model))}"
                                            if unsupported_layers(model) else ""))
    if mode == "bk":
        return _dp_sgd_one_pass(model, global_params, x, y, config, dp, generator, optimizer_state)
    ghost = mode == "ghost"
    if ghost:
        gsm = GradSampleModuleFastGradientClipping(model, max_grad_norm=dp.max_grad_norm, use_ghost_clipping=True,
                                                   loss_reduction="mean")
        optimizer_cls = _SecureDPOptimizerGhost if dp.secure_rng else DPOptimizerFastGradientClipping
    else:
        kwargs = {"force_functorch": True} if mode == "functorch" else {}
        gsm = get_gsm_class(mode)(model, loss_reduction="mean", **kwargs)
        optimizer_cls = _SecureDPOptimizer if dp.secure_rng else DPOptimizer
    noise_gen = _noise_generator(generator, x.device)
    optimizer = optimizer_cls(
        torch.optim.SGD(gsm.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay),
        noise_multiplier=dp.noise_multiplier, max_grad_norm=dp.max_grad_norm,
        expected_batch_size=max(1, round(dp.sampling_rate * n)), loss_reduction="mean", generator=noise_gen,
    )
    params = list(gsm.parameters())
    import_optimizer_state(optimizer.original_optimizer, params, optimizer_state)
    criterion = (DPLossFastGradientClipping(gsm, optimizer, nn.CrossEntropyLoss(), loss_reduction="mean")
                 if ghost else None)
    steps = config.epochs * steps_per_epoch(dp.sampling_rate)
    total_loss = 0.0
    try:
        for _ in range(steps):
            idx = _poisson_batch(n, dp.sampling_rate, generator, x.device)
            optimizer.zero_grad(set_to_none=True)
            if len(idx) == 0:
                # An empty Poisson batch: no gradient, but the step (and its noise) still happens.
                _noise_only_step(optimizer)
                continue
            logits = gsm(x[idx])
            with warnings.catch_warnings():
                # Expected for the first layer (inputs need no gradient); Opacus still sees every sample.
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                if criterion is not None:
                    loss = criterion(logits, y[idx])
                else:
                    loss = F.cross_entropy(logits, y[idx])
                loss.backward()
            optimizer.step()
            total_loss += float(loss.detach()) if not ghost else float(loss.loss_per_sample.detach().mean())
    finally:
        gsm._close()  # remove Opacus hooks: the model is reused as a plain workspace
    delta = get_flat(model) - global_params.to(x.device)
    carried = (export_optimizer_state(optimizer.original_optimizer, params) if optimizer_state is not None
               else None)
    return ClientResult(delta.cpu(), n, total_loss / steps, steps, carried)


def _dp_sgd_one_pass(
    model: nn.Module,
    global_params: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    config: LocalTraining,
    dp: DPSGD,
    generator: torch.Generator,
    optimizer_state: OptimizerState | None = None,
) -> ClientResult:
    """The same steps as the Opacus path (same Poisson masks, same noise draws for the same
    generator), with the clipped sums from :func:`unseen.privacy.per_sample.clipped_grad_sum`."""
    n = len(y)
    noise_gen = _noise_generator(generator, x.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    import_optimizer_state(optimizer, params, optimizer_state)
    expected_batch = max(1, round(dp.sampling_rate * n))
    std = dp.noise_multiplier * dp.max_grad_norm
    steps = config.epochs * steps_per_epoch(dp.sampling_rate)
    total_loss = 0.0
    for _ in range(steps):
        idx = _poisson_batch(n, dp.sampling_rate, generator, x.device)
        if len(idx):
            xb, yb = x[idx], y[idx]
            if dp.copies > 1:  # (b, k, ...) views -> b*k rows, record by record
                xb, yb = xb.flatten(0, 1), yb.repeat_interleave(dp.copies)
            sums, _, losses = clipped_grad_sum(model, xb, yb, dp.max_grad_norm, copies=dp.copies)
            total_loss += float(losses.mean())
        else:  # an empty Poisson batch: no gradient, but the step (and its noise) still happens
            sums = {}
        for p in params:
            summed = sums[p] if p in sums else torch.zeros_like(p)
            p.grad = (summed + _noise_like(p, std, dp.secure_rng, noise_gen)) / expected_batch
        optimizer.step()
    delta = get_flat(model) - global_params.to(x.device)
    carried = export_optimizer_state(optimizer, params) if optimizer_state is not None else None
    return ClientResult(delta.cpu(), n, total_loss / steps, steps, carried)
