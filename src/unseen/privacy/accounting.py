"""Privacy accounting for the (Poisson-subsampled) Gaussian mechanism, on Google's dp-accounting.

The default accountant is PLD (privacy loss distributions: tight numerical composition); RDP is
available too. unseen does not implement an accountant of its own: these functions only build
dp-accounting events. The tests cross-check the results with Opacus's independent RDP and PRV
accountants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import dp_accounting
from dp_accounting import pld, rdp

from unseen.errors import SpecError

ACCOUNTANTS = ("pld", "rdp")
MAX_NOISE_MULTIPLIER = 1000.0  # beyond this the model learns nothing: call the target unreachable


def _event(noise_multiplier: float, sampling_rate: float, steps: int) -> dp_accounting.DpEvent:
    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
    step = gaussian if sampling_rate >= 1.0 else dp_accounting.PoissonSampledDpEvent(sampling_rate, gaussian)
    return dp_accounting.SelfComposedDpEvent(step, steps)


def make_accountant(kind: str = "pld") -> dp_accounting.PrivacyAccountant:
    if kind == "pld":
        return pld.PLDAccountant(value_discretization_interval=1e-3)
    if kind == "rdp":
        return rdp.RdpAccountant()
    raise SpecError(f"privacy.accountant = {kind!r} is unknown; use one of {', '.join(ACCOUNTANTS)}.")


def accountant_name(kind: str) -> str:
    return {"pld": "dp-accounting PLD", "rdp": "dp-accounting RDP"}[kind]


def epsilon_for(
    noise_multiplier: float, sampling_rate: float, steps: int, delta: float, accountant: str = "pld"
) -> float:
    """Epsilon of ``steps`` Poisson-subsampled Gaussian steps (add/remove-one neighbouring)."""
    _check(noise_multiplier=noise_multiplier, sampling_rate=sampling_rate, steps=steps, delta=delta)
    if steps == 0:
        return 0.0
    acc = make_accountant(accountant)
    acc.compose(_event(noise_multiplier, sampling_rate, steps))
    return float(acc.get_epsilon(delta))


def calibrate_noise(
    target_epsilon: float, delta: float, sampling_rate: float, steps: int, accountant: str = "pld"
) -> float:
    """The smallest noise multiplier whose ``steps`` steps stay within ``(target_epsilon, delta)``."""
    _check(sampling_rate=sampling_rate, steps=steps, delta=delta)
    if not target_epsilon > 0 or math.isinf(target_epsilon):
        raise SpecError(f"privacy.epsilon must be a finite number > 0, got {target_epsilon}.")
    if epsilon_for(MAX_NOISE_MULTIPLIER, sampling_rate, steps, delta, accountant) > target_epsilon:
        raise SpecError(
            f"privacy.epsilon = {target_epsilon} is unreachable: even noise multiplier {MAX_NOISE_MULTIPLIER:g} "
            f"spends more over {steps} steps at sampling rate {sampling_rate:.3g}. Raise the target, take fewer "
            f"steps (epochs/rounds), or sample less (smaller batches or client fraction)."
        )
    # Bracket by doubling from 1: tiny noise multipliers make PLD composition explode in size.
    def eps(z: float) -> float:
        return epsilon_for(z, sampling_rate, steps, delta, accountant)

    low, high = 0.5, 1.0
    while eps(high) > target_epsilon:
        low, high = high, high * 2
    while low > 0.05 and eps(low) <= target_epsilon:
        low, high = low / 2, low
    noise = dp_accounting.calibrate_dp_mechanism(
        lambda: make_accountant(accountant),
        lambda z: _event(z, sampling_rate, steps),
        target_epsilon,
        delta,
        bracket_interval=dp_accounting.ExplicitBracketInterval(low, min(high, MAX_NOISE_MULTIPLIER)),
        tol=1e-4,
    )
    return float(noise)


@lru_cache(maxsize=4096)
def _composed_epsilon(accountant: str, segments: tuple[tuple[float, ...], ...], delta: float) -> float:
    # Cached: many clients share a history, and budget checks ask the same question every round.
    if not segments:
        return 0.0
    acc = make_accountant(accountant)
    for z, q, n in segments:
        acc.compose(_event(z, q, int(n)))
    return float(acc.get_epsilon(delta))


def _check(**values: float) -> None:
    if "noise_multiplier" in values and not values["noise_multiplier"] > 0:
        raise SpecError(f"privacy.noise_multiplier must be > 0, got {values['noise_multiplier']}.")
    if "sampling_rate" in values and not 0 < values["sampling_rate"] <= 1:
        raise SpecError(f"the sampling rate must be in (0, 1], got {values['sampling_rate']}.")
    if "steps" in values and values["steps"] < 0:
        raise SpecError(f"the number of steps must be >= 0, got {values['steps']}.")
    if "delta" in values and not 0 < values["delta"] < 1:
        raise SpecError(f"privacy.delta must be in (0, 1), got {values['delta']}.")


@dataclass
class GaussianLedger:
    """Remembers the privacy spent so far; composes it on demand. The one ledger type of unseen.

    Training records subsampled Gaussian steps (``[noise_multiplier, sampling_rate, steps]``, composed
    by dp-accounting); DP statistics record pure-DP releases (``pure``: their epsilons, added by basic
    composition to the Gaussian part). Plain data, so a checkpoint or a query session can store it
    and a resumed run continues with exactly the same epsilon.
    """

    accountant: str = "pld"
    segments: list[list[float]] = field(default_factory=list)
    pure: list[float] = field(default_factory=list)

    def record_pure(self, epsilon: float) -> None:
        """A pure epsilon-DP release (a DP query answer)."""
        self.pure.append(float(epsilon))

    def record(self, noise_multiplier: float, sampling_rate: float, steps: int = 1) -> None:
        if self.segments and self.segments[-1][:2] == [noise_multiplier, sampling_rate]:
            self.segments[-1][2] += steps
        else:
            self.segments.append([noise_multiplier, sampling_rate, steps])

    @property
    def steps(self) -> int:
        return int(sum(s[2] for s in self.segments))

    def epsilon(self, delta: float, extra: tuple[float, float, int] | None = None) -> float:
        """Epsilon spent so far (plus ``extra`` steps, to ask "what if I take one more round?")."""
        segments = [list(seg) for seg in self.segments]
        if extra is not None:
            # Merge like `record` does: composing [z, q, n] + [z, q, 1] separately is numerically a hair
            # off composing [z, q, n + 1], enough to halt a calibrated run one round early.
            if segments and segments[-1][:2] == [extra[0], extra[1]]:
                segments[-1][2] += extra[2]
            else:
                segments.append(list(extra))
        return sum(self.pure) + _composed_epsilon(self.accountant, tuple(tuple(s) for s in segments), delta)

    def to_dict(self) -> dict[str, Any]:
        return {"accountant": self.accountant, "segments": [list(s) for s in self.segments], "pure": list(self.pure)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GaussianLedger:
        return cls(d["accountant"], [list(s) for s in d["segments"]], [float(e) for e in d.get("pure", [])])
