"""`PrivacyGuarantee`: what a mechanism protects, against whom, and the (epsilon, delta) it gives.

A guarantee is never a bare float. Every mechanism in a run contributes one immutable object to
``results.json``; a run without a formal guarantee says so explicitly (``mechanism="none"``) and why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

PrivacyUnit = Literal["record", "user", "label", "none"]


@dataclass(frozen=True)
class PrivacyGuarantee:
    """One mechanism's privacy guarantee.

    Attributes
    ----------
    mechanism : name of the mechanism ("none" when nothing formal is claimed).
    unit : what one unit of privacy protects: a record, a user (client), a label, or nothing.
    epsilon, delta : the (epsilon, delta)-DP guarantee, or None when there is none.
    noise_multiplier, clipping_bound : Gaussian-mechanism parameters, when used.
    sampling : how batches or clients are sampled ("poisson", ...), with ``sampling_rate``.
    steps : how many times the mechanism ran.
    accountant : which accountant computed epsilon (library and method).
    threat_model : one sentence: who sees what, and what is protected from them.
    reason : for ``mechanism="none"``, why there is no formal guarantee.
    scope : what the guarantee covers when a run has several (e.g. "client 3"); None for the whole run.
    noise_source : where the noise came from: the OS CSPRNG, or a seeded PRNG (reproducible research runs).
    """

    mechanism: str
    unit: PrivacyUnit
    threat_model: str
    epsilon: float | None = None
    delta: float | None = None
    noise_multiplier: float | None = None
    clipping_bound: float | None = None
    sampling: str | None = None
    sampling_rate: float | None = None
    steps: int | None = None
    accountant: str | None = None
    reason: str | None = None
    scope: str | None = None
    noise_source: str | None = None

    def __post_init__(self) -> None:
        # Enforced with exceptions, not assert: a guarantee must stay checked under `python -O`.
        if self.mechanism == "none":
            if self.epsilon is not None or self.delta is not None:
                raise ValueError("a guarantee with mechanism='none' cannot carry epsilon or delta")
            if not self.reason:
                raise ValueError("a guarantee with mechanism='none' must say why (reason=...)")
        else:
            if self.epsilon is None or self.delta is None:
                raise ValueError(f"mechanism {self.mechanism!r} must report both epsilon and delta")
            if not (self.epsilon >= 0 and not math.isnan(self.epsilon)):
                raise ValueError(f"epsilon must be >= 0, got {self.epsilon}")
            if not (0 <= self.delta < 1):
                raise ValueError(f"delta must be in [0, 1), got {self.delta}")

    @classmethod
    def none(cls, reason: str, threat_model: str) -> PrivacyGuarantee:
        """A run (or part of one) that makes no formal privacy claim, and why."""
        return cls(mechanism="none", unit="none", threat_model=threat_model, reason=reason)

    @property
    def is_formal(self) -> bool:
        return self.mechanism != "none"

    def describe(self) -> str:
        """One line for people: the numbers, or the plain statement that there are none."""
        if not self.is_formal:
            return f"no formal guarantee: {self.reason}"
        return f"({self.epsilon:.3g}, {self.delta:.1e})-DP per {self.unit} via {self.mechanism}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
