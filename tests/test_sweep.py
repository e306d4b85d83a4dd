"""Sweeps: the grid, resumability, inf = no DP, and the sweep page in a real browser."""

from __future__ import annotations

import json

import pytest

from tests.report.test_report import CHROMIUM, console_errors, render_in_chromium
from unseen.errors import SpecError
from unseen.sweep import parse_vary, point_spec, run_sweep

BASE = {"name": "sw", "data": {"name": "digits"}, "model": {"name": "logreg"}, "train": {"lr": 0.2},
        "federated": {"clients": 10, "rounds": 6}, "privacy": {"mechanism": "dp_fedavg", "epsilon": 4.0},
        "audit": {"attacks": ["loss"], "max_records": 300}}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    # The demonstration: 4 epsilons x 2 seeds, in seconds on digits.
    return folder, run_sweep(BASE, parse_vary(["privacy.epsilon=0.5,2,8,inf"]), 2, folder)


def test_grid_summary_and_files(sweep):
    folder, result = sweep
    assert len(result["points"]) == 8 and len(result["summary"]) == 4
    on_disk = json.loads((folder / "sweep.json").read_text())
    assert [row["settings"]["privacy.epsilon"] for row in on_disk["summary"]] == [0.5, 2, 8, "inf"]
    by_eps = {row["settings"]["privacy.epsilon"]: row for row in result["summary"]}
    assert by_eps[0.5]["epsilon"] == pytest.approx(0.5, rel=0.01) and by_eps[float("inf")]["epsilon"] == float("inf")
    # More budget, more accuracy (means over 2 seeds), and the seeds really differ.
    means = [by_eps[e]["accuracy_mean"] for e in (0.5, 2, 8, float("inf"))]
    assert means == sorted(means) and means[-1] - means[0] > 0.3
    assert {p["seed"] for p in result["points"]} == {0, 1}
    assert all((folder / "points" / p).is_dir() for p in ("privacy.epsilon=inf,seed=0", "privacy.epsilon=0.5,seed=1"))
    html = (folder / "sweep.html").read_text()
    assert html.count("<svg") == 3 and "<script" not in html  # accuracy, attack success, cost
    assert all(0 <= row["attack_auc_mean"] <= 1 and row["eps_hat_max"] >= 0 for row in result["summary"])


def test_finished_points_are_not_rerun_and_interrupted_ones_resume(sweep):
    folder, first = sweep
    point = folder / "points" / "privacy.epsilon=8,seed=0"
    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("points/*/results.json") if p.parent != point}
    (point / "results.json").unlink()  # as if the sweep was killed during this point's last round
    again = run_sweep(BASE, parse_vary(["privacy.epsilon=0.5,2,8,inf"]), 2, folder)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert (point / "results.json").is_file()
    assert [p["test_accuracy"] for p in again["points"]] == [p["test_accuracy"] for p in first["points"]]


def test_inf_turns_dp_off_and_bad_vary_is_refused():
    raw = point_spec(BASE, {"privacy.epsilon": float("inf")}, 1)
    assert raw["privacy"] == {"mechanism": "none"} and raw["seed"] == 1
    with pytest.raises(SpecError, match="--vary"):
        parse_vary(["privacy.epsilon"])
    with pytest.raises(SpecError, match="needs a DP mechanism"):
        run_sweep({"data": {"name": "digits"}}, parse_vary(["privacy.epsilon=1,2"]), 1, "unused")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_sweep_page_renders_in_a_real_browser(sweep):
    folder, result = sweep
    dom, log, image = render_in_chromium(folder / "sweep.html")
    assert console_errors(log) == []
    best = max(result["summary"], key=lambda r: r["accuracy_mean"])
    assert f"{100 * best['accuracy_mean']:.2f}%" in dom
    assert float(image[..., :3].std()) > 0.05
