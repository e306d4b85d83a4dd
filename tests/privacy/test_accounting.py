"""Our epsilon against an independent implementation (Opacus), and calibration round trips."""

from __future__ import annotations

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from unseen.errors import SpecError
from unseen.privacy import GaussianLedger, calibrate_noise, epsilon_for

GRID = [  # (sampling rate, noise multiplier, steps, delta)
    (0.004, 1.1, 10_000, 1e-5),
    (0.01, 0.8, 1_000, 1e-5),
    (0.01, 2.0, 5_000, 1e-6),
    (0.1, 1.5, 500, 1e-5),
    (0.25, 3.0, 200, 1e-5),
    (1.0, 5.0, 50, 1e-5),
    (0.05, 1.0, 3_000, 1e-5),
]


def _opacus(kind, q, z, steps, delta):
    acc = RDPAccountant() if kind == "rdp" else PRVAccountant()
    acc.history = [(z, q, steps)]
    return acc.get_epsilon(delta)


@pytest.mark.parametrize("q,z,steps,delta", GRID)
def test_rdp_matches_opacus_rdp(q, z, steps, delta):
    ours = epsilon_for(z, q, steps, delta, "rdp")
    assert ours == pytest.approx(_opacus("rdp", q, z, steps, delta), rel=0.01)


@pytest.mark.parametrize("q,z,steps,delta", GRID)
def test_pld_matches_opacus_prv(q, z, steps, delta):
    # Two different numerical methods (privacy loss distributions vs random variables): 1% apart at most.
    ours = epsilon_for(z, q, steps, delta, "pld")
    assert ours == pytest.approx(_opacus("prv", q, z, steps, delta), rel=0.01)
    assert ours <= epsilon_for(z, q, steps, delta, "rdp") * 1.001  # PLD is tighter than RDP


def test_pinned_value():
    # Abadi et al.-style MNIST: q = 256/60000, z = 1.1, 60 epochs. Pinned so a silent change shows.
    assert epsilon_for(1.1, 256 / 60000, 60 * 235, 1e-5, "rdp") == pytest.approx(2.6003, abs=2e-3)


@pytest.mark.parametrize("target", [0.5, 1.0, 3.0, 8.0])
@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_calibration_round_trip(target, accountant):
    q, steps, delta = 0.01, 2_000, 1e-5
    noise = calibrate_noise(target, delta, q, steps, accountant)
    eps = epsilon_for(noise, q, steps, delta, accountant)
    assert eps <= target * (1 + 1e-6)
    assert eps == pytest.approx(target, rel=0.01)


def test_unreachable_target_and_bad_inputs():
    with pytest.raises(SpecError, match="unreachable"):
        calibrate_noise(1e-4, 1e-5, 1.0, 10_000)
    with pytest.raises(SpecError, match="delta"):
        epsilon_for(1.0, 0.1, 10, 1.5)
    with pytest.raises(SpecError, match="sampling rate"):
        epsilon_for(1.0, 0.0, 10, 1e-5)
    with pytest.raises(SpecError, match="epsilon"):
        calibrate_noise(-1.0, 1e-5, 0.1, 10)


def test_ledger_composes_segments_and_round_trips():
    ledger = GaussianLedger("rdp")
    for _ in range(3):
        ledger.record(1.0, 0.1, 100)
    ledger.record(2.0, 0.1, 50)
    assert ledger.steps == 350 and len(ledger.segments) == 2
    restored = GaussianLedger.from_dict(ledger.to_dict())
    assert restored.epsilon(1e-5) == ledger.epsilon(1e-5)
    # Composition is monotone: more steps, more epsilon.
    assert ledger.epsilon(1e-5, extra=(1.0, 0.1, 1)) > ledger.epsilon(1e-5)
    assert epsilon_for(1.0, 0.1, 300, 1e-5, "rdp") < ledger.epsilon(1e-5)
