"""The spec, the run folder, resume, robustness: the foundation's end-to-end behaviour."""

from __future__ import annotations

import json

import pytest
import torch

import unseen
from tests.conftest import needs, run_and_interrupt
from unseen.experiment import apply_overrides, demo_spec, load_spec, parse_spec, resume, run, run_demo
from unseen.runtime import wire

# Each malformed spec and the text its error must contain (the field, and where useful the fix).
MALFORMED = [
    ({"federated": {"rouns": 5}}, ["federated.rouns", "did you mean 'federated.rounds'"]),
    ({"trainig": {"lr": 0.1}}, ["trainig", "did you mean 'train'"]),
    ({"federated": {"rounds": "ten"}}, ["federated.rounds", "whole number"]),
    ({"federated": {"rounds": -3}}, ["federated.rounds", "at least 1"]),
    ({"data": {"partition": {"method": "dirichlet", "alpha": 0}}}, ["data.partition.alpha", "greater than 0"]),
    ({"data": {"name": "mnsit"}}, ["data.name", "did you mean 'mnist'"]),
    ({"model": {"name": "resnet"}}, ["model.name", "'logreg'"]),
    ({"train": {"lr": 0}}, ["train.lr"]),
    ({"train": {"batch_size": 2.5}}, ["train.batch_size"]),
    ({"data": {"test_fraction": 1.5}}, ["data.test_fraction", "less than 1"]),
    ({"data": {"partition": {"method": "natural"}}}, ["data.partition.method", "'natural' needs silos"]),
    ({"federated": {"clients": 4, "aggregation": "krum", "byzantine": 1}}, ["federated.aggregation", "2 * byzantine + 2"]),
    ({"data": {"name": "file", "path": "x.csv"}}, ["data", "target"]),
    ({"audit": {"attacks": ["shadow_models"]}}, ["audit.attacks"]),
    ({"data": {"features": "wavelets"}}, ["data.features", "'scattering'"]),
]


@pytest.mark.parametrize("raw,expected", MALFORMED, ids=[str(m[0]) for m in MALFORMED])
def test_malformed_specs_name_the_field(raw, expected):
    with pytest.raises(unseen.SpecError) as info:
        parse_spec(raw)
    message = str(info.value)
    for text in expected:
        assert text in message, message
    assert "Traceback" not in message and "pydantic" not in message.lower()


def test_overrides_and_toml(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text('name = "t"\n[data]\nname = "digits"\n[federated]\nrounds = 3\n')
    spec = load_spec(path, ["federated.rounds=20", "data.partition.alpha=0.1", "data.partition.method=dirichlet"])
    assert spec.federated.rounds == 20 and spec.data.partition.alpha == 0.1
    assert spec.data.partition.method == "dirichlet" and spec.data.name == "digits"
    with pytest.raises(unseen.SpecError, match="section.key=value"):
        apply_overrides({}, ["rounds"])
    path.write_text("[data\n")
    with pytest.raises(unseen.SpecError, match="not valid TOML"):
        load_spec(path)
    with pytest.raises(unseen.SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")


def _small(**federated) -> dict:
    return {"name": "small", "data": {"name": "digits"}, "model": {"name": "mlp", "hidden": [32]},
            "train": {"lr": 0.2, "epochs": 3}, "federated": {"clients": 6, "rounds": 4, **federated}}


def test_run_folder_and_results_json(tmp_path):
    spec = parse_spec(_small())
    result = run(spec, output_dir=tmp_path)
    folder = result.run_dir
    assert folder.parent == tmp_path and folder.name.startswith("small-")
    for name in ("results.json", "spec.toml", "log.txt", "model.pt"):
        assert (folder / name).is_file(), name
    assert list((folder / "checkpoints").glob("round-*.pt"))
    results = json.loads((folder / "results.json").read_text())
    assert load_spec(folder / "spec.toml") == spec  # the resolved spec round-trips
    assert results["seed"] == 0 and results["versions"]["torch"] == torch.__version__
    assert [m["round"] for m in results["rounds"]] == [1, 2, 3, 4]
    assert results["final"]["test_accuracy"] > 0.8 and len(results["final"]["per_client"]) == 6
    # Bytes are the real payload sizes: each round broadcasts the model to 6 clients, each sends one back.
    payload = len(wire.encode(result.params))
    assert all(m["bytes_down"] == 6 * payload and m["bytes_up"] == 6 * payload for m in results["rounds"])
    for m in results["rounds"]:  # time per stage accounts for (almost) all of the round
        assert set(m["stage_seconds"]) == {"client_training", "serialize", "secure_aggregation", "screen_and_aggregate",
                                           "evaluate", "accounting"}
        assert 0.5 * m["seconds"] <= sum(m["stage_seconds"].values()) <= m["seconds"] + 1e-6
    (guarantee,) = results["privacy"]["guarantees"]
    assert guarantee["mechanism"] == "none" and guarantee["epsilon"] is None and guarantee["reason"]
    assert "server sees each client's model update" in guarantee["threat_model"]


def test_central_mode_trains_on_pooled_data(tmp_path):
    result = run(parse_spec({"mode": "central", "data": {"name": "digits"}, "train": {"epochs": 3}}),
                 output_dir=tmp_path)
    assert result.accuracy > 0.9 and result.results["costs"]["bytes_up"] == 0
    assert len(result.results["rounds"]) == 3


def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path):
    # FedAdam (server state) and client sampling (RNG per round) both have to survive the restart.
    raw = _small(rounds=6, fraction=0.5, algorithm="fedadam")
    full = run(parse_spec(raw), output_dir=tmp_path / "a")
    interrupted = run_and_interrupt(raw, tmp_path / "b", after_round=3)
    assert not (interrupted / "results.json").exists()
    resumed = resume(interrupted)
    assert torch.equal(resumed.params, full.params)
    assert [m["test_accuracy"] for m in resumed.results["rounds"]] == [m["test_accuracy"] for m in full.results["rounds"]]


def test_resume_with_server_momentum_equals_uninterrupted_run(tmp_path):
    # FedAvgM's buffer is server state: it must be checkpointed, and it must change the result.
    raw = _small(rounds=5, server_momentum=0.9, server_lr=0.5)
    full = run(parse_spec(raw), output_dir=tmp_path / "a")
    resumed = resume(run_and_interrupt(raw, tmp_path / "b", after_round=2))
    assert torch.equal(resumed.params, full.params)
    plain = run(parse_spec(_small(rounds=5, server_lr=0.5)), output_dir=tmp_path / "c")
    assert not torch.allclose(plain.params, full.params)


def test_server_momentum_with_an_adaptive_server_is_refused():
    with pytest.raises(unseen.SpecError, match="federated.server_momentum.*beta1"):
        parse_spec(_small(algorithm="fedadam", server_momentum=0.9))


def test_resume_of_a_non_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(unseen.UnseenError, match="not a run folder"):
        resume(tmp_path)


@pytest.mark.parametrize("kind,factor,reason", [
    ("nan", 0.0, "non-finite"), ("wrong_shape", 0.0, "shape"), ("scale", 1000.0, "median"),
])
def test_malicious_updates_are_rejected_and_reported(tmp_path, kind, factor, reason):
    result = run(parse_spec(_small(adversary={"count": 1, "kind": kind, "factor": factor})), output_dir=tmp_path)
    rejected = result.results["rejected_updates"]
    assert len(rejected) == 4 and all(r["client"] == 0 and reason in r["reason"] for r in rejected)
    assert all(m["accepted"] == 5 and m["rejected"] == 1 for m in result.results["rounds"])
    assert result.accuracy > 0.8  # the honest clients' model, untouched by the bad updates


def _byzantine_run(tmp_path, aggregation: str, attackers: int, **extra) -> float:
    raw = {"data": {"name": "digits"}, "model": {"name": "logreg"}, "train": {"lr": 0.1},
           "federated": {"clients": 10, "rounds": 15, "aggregation": aggregation, **extra,
                         "adversary": {"count": attackers, "kind": "scale", "factor": -10.0}}}
    return run(parse_spec(raw), output_dir=tmp_path).accuracy


def test_robust_aggregation_survives_scaled_updates_fedavg_collapses(tmp_path):
    clean = _byzantine_run(tmp_path, "mean", 0)
    assert clean > 0.9
    assert _byzantine_run(tmp_path, "mean", 2) < 0.5  # two sign-flipped 10x updates wreck the average
    for aggregation, extra in (("median", {}), ("trimmed_mean", {"trim_fraction": 0.2}),
                               ("krum", {"byzantine": 2}), ("multi_krum", {"byzantine": 2})):
        accuracy = _byzantine_run(tmp_path, aggregation, 2, **extra)
        assert accuracy >= clean - 0.02, (aggregation, accuracy, clean)


@pytest.mark.parametrize("dataset", [
    "breast_cancer", pytest.param("heart_disease", marks=needs("heart-disease")),
])
def test_demo_federated_within_two_points_of_pooled(tmp_path, dataset):
    result, pooled = run_demo(demo_spec(dataset), output_dir=tmp_path)
    assert result.accuracy >= pooled - 0.02, (result.accuracy, pooled)
    assert json.loads((result.run_dir / "results.json").read_text())["baseline"]["pooled_logistic_regression_accuracy"] == pooled
    if dataset == "heart_disease":
        assert [c["silo"] for c in result.results["final"]["per_client"]] == [
            "Cleveland", "Hungary", "Switzerland", "VA Long Beach"]


def test_scattering_features_and_their_model_are_refused_where_they_do_not_apply(tmp_path):
    from unseen.errors import DataError, ModelError

    with pytest.raises(DataError, match="data.features = 'scattering' needs images"):
        run(parse_spec({"data": {"name": "breast_cancer", "features": "scattering"}}), output_dir=tmp_path)
    with pytest.raises(ModelError, match="Set data.features = 'scattering'"):
        unseen.models.build_model("scatter_cnn", (1, 28, 28), 10)


def test_guarantee_object_refuses_inconsistent_claims():
    with pytest.raises(ValueError):
        unseen.PrivacyGuarantee(mechanism="none", unit="none", threat_model="t", epsilon=1.0, reason="r")
    with pytest.raises(ValueError):
        unseen.PrivacyGuarantee(mechanism="gaussian", unit="record", threat_model="t", epsilon=1.0)
    g = unseen.PrivacyGuarantee.none("nothing configured", "server sees all")
    assert not g.is_formal and g.describe() == "no formal guarantee: nothing configured"


def test_public_api():
    for name in unseen.__all__:
        assert hasattr(unseen, name), name
    assert callable(unseen.run) and callable(unseen.data.load)


@pytest.mark.parametrize("path", sorted((__import__("pathlib").Path(__file__).parents[1] / "examples").glob("*.toml")),
                         ids=lambda p: p.name)
def test_examples_are_valid_specs(path):
    assert load_spec(path).name
