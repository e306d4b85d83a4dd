"""Secure aggregation inside real runs: same model as plain FedAvg, loud failed rounds, early refusals."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from unseen.cli import app
from unseen.errors import SpecError
from unseen.experiment import parse_spec, run
from unseen.federated import get_flat
from unseen.models import init_model


def _spec(secure: str, **federated) -> dict:
    return {"data": {"name": "digits"}, "model": {"name": "mlp", "hidden": [32]}, "train": {"lr": 0.1},
            "federated": {"clients": 10, "rounds": 3, **federated},
            "privacy": {"secure_aggregation": secure, "secagg_clip": 100.0}}


@pytest.mark.parametrize("backend", ["secagg", "secagg+", "ckks"])
def test_secure_aggregation_trains_the_same_model_as_plain_fedavg(tmp_path, backend):
    plain = run(parse_spec(_spec("none", dropout=0.2)), output_dir=tmp_path / "plain")
    secure = run(parse_spec(_spec(backend, dropout=0.2)), output_dir=tmp_path / backend)
    # Same seed, same clients, same dropouts: only fixed-point (or CKKS) rounding differs.
    assert torch.max(torch.abs(plain.params - secure.params)).item() < 1e-5
    assert secure.accuracy == pytest.approx(plain.accuracy, abs=1e-9)
    r = secure.results
    assert r["status"] == "completed" and r["failed_rounds"] == []
    assert r["secure_aggregation"]["backend"] == backend
    assert all(m["secure_aggregation"]["survivors"] == 8 and m["dropped"] == 2 for m in r["rounds"])
    assert r["costs"]["stage_seconds"]["secure_aggregation"] > 0
    assert r["costs"]["bytes_up"] > plain.results["costs"]["bytes_up"]  # keys, shares (or ciphertexts) cost bytes
    (g,) = r["privacy"]["guarantees"]
    assert g["mechanism"] == "none" and "only the sum" in g["threat_model"]


def test_too_many_dropouts_fail_the_round_loudly_and_leave_the_model_unchanged(tmp_path):
    raw = _spec("secagg", dropout=0.5)
    result = run(parse_spec(raw), output_dir=tmp_path / "a")
    r = result.results
    assert r["status"] == "completed_with_failed_rounds"
    assert [f["round"] for f in r["failed_rounds"]] == [1, 2, 3]
    assert all("below the threshold" in f["reason"] for f in r["failed_rounds"])
    initial = get_flat(init_model("mlp", (64,), 10, seed=0, hidden=(32,)))
    assert torch.equal(result.params, initial)  # no round moved the model
    cli = CliRunner().invoke(app, ["run", "--set", "privacy.secure_aggregation=secagg", "--set", "federated.clients=8",
                                   "--set", "federated.dropout=0.5", "--set", "federated.rounds=1",
                                   "--output", str(tmp_path / "c")])
    assert cli.exit_code == 3 and "failed rounds" in cli.output


def test_a_nan_update_is_refused_by_its_client_and_never_summed(tmp_path):
    raw = _spec("secagg+")
    raw["federated"]["adversary"] = {"count": 1, "kind": "nan"}
    r = run(parse_spec(raw), output_dir=tmp_path).results
    assert r["status"] == "completed" and len(r["rejected_updates"]) == 3
    assert all("client-side check" in j["reason"] and j["client"] == 0 for j in r["rejected_updates"])
    assert all(m["secure_aggregation"]["survivors"] == 9 for m in r["rounds"])


def test_dp_fedavg_under_secure_aggregation_keeps_its_epsilon_and_says_the_server_sees_the_sum(tmp_path):
    privacy = {"mechanism": "dp_fedavg", "noise_multiplier": 1.0, "clip": 0.5}
    plain = run(parse_spec({**_spec("none"), "privacy": privacy}), output_dir=tmp_path / "p").results
    secure = run(parse_spec({**_spec("none"), "privacy": {**privacy, "secure_aggregation": "secagg+"}}),
                 output_dir=tmp_path / "s").results
    (gp,), (gs,) = plain["privacy"]["guarantees"], secure["privacy"]["guarantees"]
    assert gs["epsilon"] == pytest.approx(gp["epsilon"]) and gs["clipping_bound"] == 0.5
    assert "only the sum" in gs["threat_model"] and "in the clear" in gp["threat_model"]
    assert secure["secure_aggregation"]["clip"] == 0.5


@pytest.mark.parametrize(
    ("privacy", "federated", "message"),
    [
        ({"secure_aggregation": "secagg"}, {"aggregation": "median"}, "needs every update in the clear"),
        ({"secure_aggregation": "secagg", "mechanism": "dp_fedavg", "noise_multiplier": 1.0, "adaptive_clip": True},
         {}, "clipping bit"),
        ({"secure_aggregation": "secagg+", "secagg_threshold": 2}, {}, "not above half"),
        ({"secure_aggregation": "secagg"}, {"clients": 2}, "at least 3 clients"),
    ],
)
def test_secure_aggregation_settings_that_cannot_work_are_refused_before_training(tmp_path, privacy, federated,
                                                                                   message):
    raw = _spec("none", **federated)
    raw["privacy"] = privacy
    with pytest.raises((SpecError, ValueError), match=message):
        run(parse_spec(raw), output_dir=tmp_path)
