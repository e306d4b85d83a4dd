"""DP inside real runs: the guarantee in results.json, budget halting, exact resume, early refusals."""

from __future__ import annotations

import json

import pytest
import torch

import unseen
from tests.conftest import run_and_interrupt
from unseen.experiment import parse_spec, resume, run
from unseen.privacy import epsilon_for


def _spec(privacy: dict, **federated) -> dict:
    return {"data": {"name": "digits"}, "model": {"name": "logreg"}, "train": {"lr": 0.2},
            "federated": {"clients": 20, "fraction": 0.5, "rounds": 6, **federated}, "privacy": privacy}


def test_user_level_dp_fedavg_reports_a_user_guarantee(tmp_path):
    result = run(parse_spec(_spec({"mechanism": "dp_fedavg", "epsilon": 8.0, "clip": 0.5})), output_dir=tmp_path)
    results = json.loads((result.run_dir / "results.json").read_text())
    (g,) = results["privacy"]["guarantees"]
    assert g["unit"] == "user" and g["sampling"] == "poisson" and g["sampling_rate"] == 0.5 and g["steps"] == 6
    assert g["epsilon"] == pytest.approx(8.0, rel=0.01) and g["epsilon"] <= 8.0 * (1 + 1e-6)
    assert g["epsilon"] == pytest.approx(epsilon_for(g["noise_multiplier"], 0.5, 6, g["delta"]), rel=1e-9)
    assert g["accountant"] == "dp-accounting PLD" and "seeded" in g["noise_source"]
    eps = [m["epsilon"] for m in results["rounds"]]
    assert eps == sorted(eps) and eps[-1] == pytest.approx(g["epsilon"])  # the ledger, round by round
    assert results["status"] == "completed" and result.accuracy > 0.5


def test_calibrated_run_spends_its_budget_without_stopping_early(tmp_path):
    # All clients every round (q = 1): the budget check must agree with the calibration to the last round.
    result = run(parse_spec(_spec({"mechanism": "dp_fedavg", "epsilon": 8.0}, fraction=1.0, rounds=30)),
                 output_dir=tmp_path)
    (g,) = result.results["privacy"]["guarantees"]
    assert result.results["status"] == "completed" and g["steps"] == 30
    assert g["epsilon"] == pytest.approx(8.0, rel=1e-3)


def test_dp_sgd_in_clients_gives_each_client_its_own_guarantee(tmp_path):
    result = run(parse_spec(_spec({"mechanism": "dp_sgd", "epsilon": 3.0}, clients=4, fraction=1.0, rounds=3)),
                 output_dir=tmp_path)
    guarantees = result.results["privacy"]["guarantees"]
    assert [g["scope"] for g in guarantees] == ["client 0", "client 1", "client 2", "client 3"]
    assert all(g["unit"] == "record" and g["sampling"] == "poisson" for g in guarantees)
    assert max(g["epsilon"] for g in guarantees) <= 3.0 * (1 + 1e-6)


def test_central_dp_sgd(tmp_path):
    spec = parse_spec({"mode": "central", "data": {"name": "digits"}, "model": {"name": "logreg"},
                       "train": {"epochs": 3, "batch_size": 64, "lr": 0.5},
                       "privacy": {"mechanism": "dp_sgd", "epsilon": 2.0, "secure_rng": True}})
    result = run(spec, output_dir=tmp_path)
    (g,) = result.results["privacy"]["guarantees"]
    assert g["scope"] is None and g["noise_source"] == "OS CSPRNG" and g["epsilon"] <= 2.0 * (1 + 1e-6)
    assert result.accuracy > 0.6


def test_central_dp_sgd_with_augmentation_multiplicity_keeps_the_guarantee(tmp_path):
    def central(k: int, out: str):
        spec = parse_spec({"mode": "central", "data": {"name": "mnist"}, "model": {"name": "logreg"},
                           "train": {"epochs": 1, "batch_size": 1024, "lr": 2.0},
                           "privacy": {"mechanism": "dp_sgd", "epsilon": 2.0, "augmentation_multiplicity": k}})
        return run(spec, output_dir=tmp_path / out)

    one, three = central(1, "one"), central(3, "three")
    (g1,), (g3,) = one.results["privacy"]["guarantees"], three.results["privacy"]["guarantees"]
    for key in ("epsilon", "noise_multiplier", "steps", "sampling_rate", "clipping_bound", "unit"):
        assert g1[key] == g3[key], key  # the views change the gradients, not the accounting
    assert three.results["status"] == "completed" and three.accuracy > 0.7
    assert one.results["rounds"][-1]["train_loss"] != three.results["rounds"][-1]["train_loss"]
    with pytest.raises(unseen.SpecError, match="digits has tabular features"):
        run(parse_spec({"mode": "central", "data": {"name": "digits"},
                        "privacy": {"mechanism": "dp_sgd", "epsilon": 2.0, "augmentation_multiplicity": 2}}),
            output_dir=tmp_path / "digits")


def test_budget_halts_cleanly_with_the_model_so_far(tmp_path):
    # Noise fixed, epsilon a budget: the run stops before the round that would overspend it.
    spec = parse_spec(_spec({"mechanism": "dp_fedavg", "noise_multiplier": 3.0, "epsilon": 3.0}, rounds=50))
    result = run(spec, output_dir=tmp_path)
    rounds = len(result.results["rounds"])
    assert 0 < rounds < 50 and result.results["status"] == "budget_exhausted"
    assert "over the budget privacy.epsilon = 3" in result.results["privacy"]["halted"]
    assert result.results["rounds"][-1]["epsilon"] <= 3.0
    assert epsilon_for(3.0, 0.5, rounds + 1, result.results["privacy"]["guarantees"][0]["delta"]) > 3.0
    assert (result.run_dir / "model.pt").is_file()


def test_dp_run_resumes_exactly_with_its_accountant_state(tmp_path):
    raw = _spec({"mechanism": "dp_fedavg", "epsilon": 6.0, "adaptive_clip": True}, algorithm="fedadam")
    full = run(parse_spec(raw), output_dir=tmp_path / "a")
    folder = run_and_interrupt(raw, tmp_path / "b", after_round=3)
    resumed = resume(folder)
    assert torch.equal(resumed.params, full.params)
    assert resumed.results["privacy"] == full.results["privacy"]
    assert [m["clip"] for m in resumed.results["rounds"]] == [m["clip"] for m in full.results["rounds"]]


BAD = [
    ({"mechanism": "dp_sgd"}, "privacy.epsilon"),
    ({"mechanism": "dp_sgd", "epsilon": -1.0}, "privacy.epsilon"),
    ({"mechanism": "dp_sgd", "epsilon": 1.0, "clip": 0}, "privacy.clip"),
    ({"mechanism": "dp_fedavg", "epsilon": 1.0, "delta": 0.2}, "privacy.delta = 0.2 is not below 1/n = 1/20"),
    ({"mechanism": "dp_sgd", "epsilon": 1.0, "delta": 0.05}, "privacy.delta = 0.05 is not below 1/n = 1/67"),
    ({"mechanism": "dp_fedavg", "epsilon": 1e-4}, "unreachable"),
    ({"mechanism": "dp_fedavg", "epsilon": float("inf")}, "mechanism = 'none'"),
    ({"mechanism": "dp_sgd", "epsilon": 1.0, "adaptive_clip": True}, "adaptive_clip"),
    ({"mechanism": "dp_sgd", "epsilon": 1.0, "augmentation_multiplicity": 4}, "set mode = 'central'"),
    ({"mechanism": "dp_sgd", "epsilon": 1.0, "augmentation_multiplicity": 10}, "augmentation_multiplicity"),
]


@pytest.mark.parametrize("privacy,message", BAD, ids=[m for _, m in BAD])
def test_bad_privacy_configs_fail_before_training(tmp_path, privacy, message):
    with pytest.raises(unseen.UnseenError) as info:
        run(parse_spec(_spec(privacy, rounds=100, fraction=1.0)), output_dir=tmp_path)
    assert message in str(info.value)
    assert not list(tmp_path.glob("*/checkpoints/*.pt"))  # nothing was trained


def test_dp_fedavg_refuses_robust_aggregation_and_central_mode():
    with pytest.raises(unseen.SpecError, match="aggregation = 'mean'"):
        parse_spec(_spec({"mechanism": "dp_fedavg", "epsilon": 1.0}, aggregation="median"))
    with pytest.raises(unseen.SpecError, match="mode = 'federated'"):
        parse_spec({"mode": "central", "privacy": {"mechanism": "dp_fedavg", "epsilon": 1.0}})


def test_augmentation_multiplicity_refuses_opacus_paths_and_audits():
    base = {"mode": "central", "data": {"name": "digits"},
            "privacy": {"mechanism": "dp_sgd", "epsilon": 1.0, "augmentation_multiplicity": 3}}
    with pytest.raises(unseen.SpecError, match="grad_sample_mode = 'auto' or 'bk'"):
        parse_spec({**base, "runtime": {"grad_sample_mode": "ghost"}})
    with pytest.raises(unseen.SpecError, match="audit a run with multiplicity 1"):
        parse_spec({**base, "audit": {"canaries": 10}})
