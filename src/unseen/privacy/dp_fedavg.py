"""User-level DP-FedAvg (McMahan et al. 2018) with adaptive clipping (Andrew et al. 2021).

Pure functions over stacked client updates. Each round: clients are Poisson-sampled (the runner
does that, at rate q); every update is clipped to L2 norm ``clip``; the server adds Gaussian noise
of standard deviation ``noise_multiplier * clip`` to the sum and divides by the *expected* number of
clients ``q * N`` (a fixed denominator, so one client changes the result by at most ``clip / (qN)``).
The accountant composes one Poisson-subsampled Gaussian step per round at rate q.

Adaptive clipping tracks a quantile of update norms: the fraction of clients whose norm is within
the clip is itself released with Gaussian noise (``count_stddev``) and the clip moves geometrically
towards the target quantile. Both releases are accounted together by running the update sum at
noise multiplier ``(z^-2 - (2 * count_stddev)^-2)^-1/2`` (Andrew et al., Theorem 1), so the pair
costs exactly what one Gaussian step at ``z`` costs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from unseen.errors import SpecError
from unseen.privacy.noise import gaussian_noise


@dataclass(frozen=True)
class DPFedAvg:
    noise_multiplier: float
    clip: float
    client_rate: float  # Poisson sampling rate of clients per round
    num_clients: int
    adaptive: bool = False
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    count_stddev: float | None = None  # default: spend 10% of the round's privacy on the count
    secure_rng: bool = False
    # Set when the clients add the noise under secure aggregation (distributed DP): the noise multiplier
    # the accountant composes, with no amplification by client sampling claimed.
    distributed_noise_multiplier: float | None = None

    @property
    def distributed(self) -> bool:
        return self.distributed_noise_multiplier is not None

    @property
    def ledger_step(self) -> tuple[float, float]:
        """(noise multiplier, sampling rate) of one round, as the accountant composes it."""
        if self.distributed_noise_multiplier is not None:
            return self.distributed_noise_multiplier, 1.0
        return self.noise_multiplier, self.client_rate

    @property
    def expected_clients(self) -> float:
        return self.client_rate * self.num_clients

    @property
    def count_noise(self) -> float:
        # (2 s)^-2 = 0.1 z^-2: the count takes a tenth of the budget and the update noise grows by only
        # 1/sqrt(0.9). (Andrew et al.'s m/20 assumes cohorts of hundreds; it fails for small ones.)
        if self.count_stddev is not None:
            return self.count_stddev
        return self.noise_multiplier * math.sqrt(10) / 2

    @property
    def update_noise_multiplier(self) -> float:
        """Noise multiplier for the update sum (smaller than z when part of the budget goes to the count)."""
        if not self.adaptive:
            return self.noise_multiplier
        rest = self.noise_multiplier**-2 - (2 * self.count_noise) ** -2
        if rest <= 0:
            raise SpecError(
                f"privacy.noise_multiplier = {self.noise_multiplier:.4g} is too small for adaptive clipping with "
                f"count noise {self.count_noise:.4g}: raise the noise (or epsilon budget), or set "
                f"privacy.adaptive_clip = false."
            )
        return rest**-0.5


def clip_updates(updates: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale each row to L2 norm at most ``clip``; return the clipped rows and the original norms."""
    norms = torch.linalg.vector_norm(updates, dim=1)
    factors = torch.clamp(clip / (norms + 1e-12), max=1.0)
    return updates * factors[:, None], norms


def dp_fedavg_aggregate(
    updates: torch.Tensor, config: DPFedAvg, clip: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, float]:
    """The noisy average of clipped updates, and the new clip (unchanged unless adaptive).

    ``updates`` may have zero rows (no client sampled): the result is then pure noise, as the
    accountant assumes.
    """
    d = updates.shape[1]
    clipped, norms = clip_updates(updates, clip)
    noise = gaussian_noise((d,), config.update_noise_multiplier * clip, generator=generator, secure=config.secure_rng)
    delta = (clipped.sum(0) + noise) / config.expected_clients
    new_clip = clip
    if config.adaptive:
        within = float((norms <= clip).sum())
        count_noise = float(gaussian_noise((1,), config.count_noise, generator=generator, secure=config.secure_rng))
        fraction = (within + count_noise) / config.expected_clients
        new_clip = clip * math.exp(-config.clip_lr * (fraction - config.target_quantile))
    return delta, new_clip


def dp_fedavg_from_sum(
    clipped_sum: torch.Tensor, config: DPFedAvg, clip: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, float]:
    """The noisy average from a sum of already-clipped updates (what secure aggregation gives the server).

    Adaptive clipping needs the noisy count of unclipped updates, which a plain secure sum does not
    carry, so it is refused here.
    """
    if config.adaptive:
        raise SpecError("adaptive clipping needs each client's clipping bit, which secure aggregation hides: set "
                        "privacy.adaptive_clip = false, or privacy.secure_aggregation = 'none'")
    noise = gaussian_noise(tuple(clipped_sum.shape), config.noise_multiplier * clip, generator=generator,
                           secure=config.secure_rng)
    return (clipped_sum + noise) / config.expected_clients, clip
