"""Privacy mechanisms, accountants and the typed guarantee every run reports.

- :class:`PrivacyGuarantee`: one immutable object per mechanism (unit, noise, sampling, steps,
  accountant, (epsilon, delta), threat model), or an explicit "no formal guarantee" with the reason.
- :mod:`~unseen.privacy.accounting`: epsilon and noise calibration for subsampled Gaussian steps on
  dp-accounting (PLD by default, RDP available), and the :class:`GaussianLedger` runs keep.
- :mod:`~unseen.privacy.dpsgd`: record-level DP-SGD on Opacus, with Poisson sampling.
- :mod:`~unseen.privacy.dp_fedavg`: user-level DP-FedAvg with fixed or adaptive clipping.
"""

from unseen.privacy.accounting import ACCOUNTANTS, GaussianLedger, calibrate_noise, epsilon_for
from unseen.privacy.guarantee import PrivacyGuarantee

__all__ = ["ACCOUNTANTS", "GaussianLedger", "PrivacyGuarantee", "calibrate_noise", "epsilon_for"]
