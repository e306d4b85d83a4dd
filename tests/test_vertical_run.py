"""A vertical run end to end: PSI alignment, split training, label-leakage attacks, results and report."""

from __future__ import annotations

import json

import pytest

from unseen import experiment
from unseen.data.vertical import party_records
from unseen.errors import CheckpointError, DataError, SpecError

MEAN = ["mean radius", "mean texture", "mean perimeter", "mean area", "mean smoothness"]
WORST = ["worst radius", "worst texture", "worst perimeter", "worst area", "worst smoothness", "worst concavity"]


def _spec(**overrides):
    raw = {"name": "vertical", "mode": "vertical", "seed": 0, "data": {"name": "breast_cancer"},
           "vertical": {"parties": [MEAN, WORST], "overlap": 0.9, "embedding": 8},
           "train": {"epochs": 8, "batch_size": 16, "lr": 0.05, "momentum": 0.9}}
    raw.update(overrides)
    return experiment.parse_spec(raw)


def test_a_vertical_run_aligns_trains_and_measures_label_leakage(tmp_path):
    result = experiment.run(_spec(), output_dir=tmp_path)
    r = result.results
    rows, _ = party_records(r["dataset"]["train_samples"], 2, 0.9, seed=0)
    common = set(rows[0].tolist()) & set(rows[1].tolist())
    assert r["vertical"]["aligned_people"] == len(common) < r["dataset"]["train_samples"]
    assert [p["people_held"] for p in r["vertical"]["parties"]] == [len(rows[0]), len(rows[1])]
    assert r["final"]["test_accuracy"] > 0.9
    assert 0.5 < r["vertical"]["label_party_alone_accuracy"] <= 1.0
    # No formal claim, and the threat model says what crosses.
    (g,) = r["privacy"]["guarantees"]
    assert g["mechanism"] == "none" and "Private set intersection" in g["threat_model"]
    # The passive party reads the labels off its gradients: the cosine attack is near perfect.
    assert r["audit"]["label_leakage_cosine"]["auc"] > 0.9
    assert 0.0 <= r["audit"]["label_leakage_norm"]["auc"] <= 1.0
    assert all(set(m["label_leakage_auc"]) == {"norm", "cosine"} for m in r["rounds"])
    # Bytes: every epoch moves embeddings up and gradients down; PSI adds to the total.
    assert all(m["bytes_up"] > 0 and m["bytes_down"] > m["bytes_up"] for m in r["rounds"])
    assert r["costs"]["bytes_down"] == sum(m["bytes_down"] for m in r["rounds"]) + r["vertical"]["psi_bytes"]
    assert json.loads((result.run_dir / "results.json").read_text())["vertical"] == r["vertical"]
    assert "label_leakage_cosine" in (result.run_dir / "report.html").read_text()
    # What federated runs can do afterwards is refused with the reason, not a traceback.
    for later in (experiment.resume, experiment.audit_run, experiment.load_trained_model):
        with pytest.raises(CheckpointError, match="this is a vertical run"):
            later(result.run_dir)


def test_the_same_seed_gives_the_same_vertical_run(tmp_path):
    a = experiment.run(_spec(train={"epochs": 2, "batch_size": 32, "lr": 0.05}), output_dir=tmp_path / "a").results
    b = experiment.run(_spec(train={"epochs": 2, "batch_size": 32, "lr": 0.05}), output_dir=tmp_path / "b").results
    assert a["rounds"][-1]["test_loss"] == b["rounds"][-1]["test_loss"]
    assert a["vertical"]["aligned_people"] == b["vertical"]["aligned_people"]


def test_label_dp_by_randomized_response_is_claimed_and_the_audit_stays_under_it(tmp_path):
    spec = _spec(privacy={"mechanism": "randomized_response", "epsilon": 1.0})
    r = experiment.run(spec, output_dir=tmp_path).results
    label, rest = r["privacy"]["guarantees"]
    assert (label["mechanism"], label["unit"], label["epsilon"], label["delta"]) == ("randomized_response", "label",
                                                                                       1.0, 0.0)
    assert rest["mechanism"] == "none" and "labels only" in rest["reason"]
    # Leakage scores also reflect the features, which predict labels whatever the mechanism: no eps-hat from them.
    assert r["audit"]["label_leakage_cosine"]["epsilon_lower_bound"] is None
    # Without label DP the same run's cosine attack is near perfect; with it, far from it.
    assert r["audit"]["label_leakage_cosine"]["auc"] < 0.8
    assert r["final"]["test_accuracy"] > 0.8  # training on randomized labels still learns


def test_label_canaries_bound_epsilon_from_below_and_stay_under_the_label_dp_claim(tmp_path):
    # Without label DP the canaries' random labels are read off the gradients: a large eps-hat.
    plain = experiment.run(_spec(audit={"canaries": 200}), output_dir=tmp_path / "plain").results
    c = plain["audit"]["canary"]
    assert c["canaries"] == 200 and c["formal_epsilon"] is None and c["epsilon_lower_bound"] > 1.0
    assert "fair-coin label" in c["threat_model"]
    # With randomized response at epsilon 1 the same audit stays under the claim.
    dp = experiment.run(_spec(audit={"canaries": 200}, privacy={"mechanism": "randomized_response", "epsilon": 1.0}),
                        output_dir=tmp_path / "dp").results
    c = dp["audit"]["canary"]
    assert c["formal_epsilon"] == 1.0 and c["epsilon_lower_bound"] <= 1.0 and not c["violation"]
    assert dp["status"] == "completed"


@pytest.mark.parametrize("raw, message", [
    ({"mode": "vertical"}, "needs vertical.parties"),
    ({"mode": "vertical", "vertical": {"parties": [MEAN, WORST]}, "privacy": {"mechanism": "dp_sgd", "epsilon": 1}},
     "does not support privacy.mechanism"),
    ({"vertical": {"parties": [MEAN, WORST]}}, "are for mode = 'vertical'"),
    ({"privacy": {"mechanism": "randomized_response", "epsilon": 1}}, "applies to mode = 'vertical'"),
    ({"mode": "vertical", "vertical": {"parties": [MEAN, WORST]}, "privacy": {"mechanism": "randomized_response"}},
     "needs privacy.epsilon"),
])
def test_vertical_specs_are_checked_before_anything_runs(raw, message):
    with pytest.raises(SpecError, match=message):
        experiment.parse_spec(raw)


def test_a_vertical_run_on_images_is_refused_with_the_reason(tmp_path):
    spec = _spec(data={"name": "mnist"}, vertical={"parties": [["a"], ["b"]]})
    with pytest.raises(SpecError, match="is not a table"):
        experiment.run(spec, output_dir=tmp_path)


def test_unknown_columns_name_the_party(tmp_path):
    spec = _spec(vertical={"parties": [MEAN, ["worst radius", "tumour size"]]})
    with pytest.raises(DataError, match=r"vertical.parties\[1\]: no column 'tumour size'"):
        experiment.run(spec, output_dir=tmp_path)
