"""The command line, as a user runs it: real subprocesses, real exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.conftest import needs
from unseen.experiment import load_spec, run

CLI = [sys.executable, "-m", "unseen.cli"]


def unseen(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, env=os.environ.copy(), timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_run_spec_with_overrides_json(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('name = "cli"\n[data]\nname = "digits"\n[federated]\nrounds = 10\nclients = 3\n')
    proc = unseen("run", str(spec), "--set", "federated.rounds=2", "--output", str(tmp_path / "runs"), "--format", "json")
    results = json.loads(proc.stdout)
    assert [m["round"] for m in results["rounds"]] == [1, 2]
    assert results["spec"]["federated"]["clients"] == 3
    (folder,) = list((tmp_path / "runs").iterdir())
    assert load_spec(folder / "spec.toml").federated.rounds == 2


def test_table_output_shows_results_and_progress(tmp_path):
    proc = unseen("run", "--set", "federated.rounds=3", "--output", str(tmp_path))
    assert "test accuracy" in proc.stdout and "no formal guarantee" in proc.stdout
    assert "rounds" in proc.stderr and "3/3" in proc.stderr  # progress bars go to stderr


def test_malformed_spec_is_one_paragraph_without_traceback(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text("[federated]\nrounds = -1\n[data.partition]\nmethod = 'dirichlet'\nalpha = 0\n")
    proc = unseen("run", str(spec), check=False)
    assert proc.returncode == 2
    assert "federated.rounds" in proc.stderr and "data.partition.alpha" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_missing_dataset_offline_is_a_clear_error(tmp_path):
    env_dir = tmp_path / "empty"
    env_dir.mkdir()
    proc = subprocess.run([*CLI, "run", "--set", "data.name=mnist", "--set", "model.name=cnn"],
                          capture_output=True, text=True, env={**os.environ, "UNSEEN_DATA_DIR": str(env_dir)})
    assert proc.returncode == 2 and "mnist/" in proc.stderr and "Traceback" not in proc.stderr


def test_datasets_lists_availability():
    listing = {d["name"]: d for d in json.loads(unseen("datasets", "--format", "json").stdout)}
    assert listing["breast_cancer"]["available"] is True
    assert listing["mnist"]["available"] is (Path(os.environ["UNSEEN_DATA_DIR"]) / "mnist").is_dir()
    assert "where unseen looked" in unseen("datasets").stdout


def test_demo_prints_both_accuracies(tmp_path):
    proc = unseen("demo", "--output", str(tmp_path))
    assert "federated vs pooled" in proc.stdout and "central logistic regression" in proc.stdout
    (folder,) = list(tmp_path.iterdir())
    assert "baseline" in json.loads((folder / "results.json").read_text())


def test_killed_run_resumes_to_the_same_model(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('name = "kill"\nseed = 3\n[data]\nname = "digits"\n[model]\nname = "mlp"\nhidden = [512, 512]\n'
                    "[federated]\nclients = 8\nrounds = 30\nfraction = 0.5\nalgorithm = 'fedyogi'\n")
    proc = subprocess.Popen([*CLI, "run", str(spec), "--output", str(tmp_path / "runs")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    checkpoints: list[Path] = []
    while time.time() < deadline and not checkpoints:
        checkpoints = list((tmp_path / "runs").glob("*/checkpoints/round-*.pt"))
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: as a crash or a lost machine
    proc.wait()
    (folder,) = list((tmp_path / "runs").iterdir())
    assert not (folder / "results.json").exists(), "the run finished before it could be killed"
    unseen("run", "--resume", str(folder))
    reference = run(load_spec(spec), output_dir=tmp_path / "reference")
    assert torch.equal(torch.load(folder / "model.pt"), reference.params)
    resumed = json.loads((folder / "results.json").read_text())
    assert len(resumed["rounds"]) == 30


def test_sweep_command_json(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('name = "s"\n[data]\nname = "digits"\n[federated]\nclients = 3\n')
    proc = unseen("sweep", str(spec), "--vary", "federated.rounds=1,3", "--output", str(tmp_path / "sw"),
                  "--format", "json")
    summary = json.loads(proc.stdout)["summary"]
    assert [row["settings"]["federated.rounds"] for row in summary] == [1, 3]
    assert (tmp_path / "sw" / "sweep.html").is_file()
    assert "--vary" in unseen("sweep", str(spec), check=False).stderr


def _people_csv(path: Path) -> Path:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    pd.DataFrame({"age": rng.integers(18, 90, 600), "zip": rng.choice(["100", "101", "102", "200"], 600),
                  "sex": rng.choice(["F", "M"], 600), "diagnosis": rng.choice(["a", "b", "c"], 600)}).to_csv(path, index=False)
    return path


def test_anonymize_and_reconstruct_any_table(tmp_path):
    table = _people_csv(tmp_path / "people.csv")
    report = json.loads(unseen("anonymize", "--csv", str(table), "--qi", "age,zip,sex", "--k", "5",
                               "--sensitive", "diagnosis", "-o", str(tmp_path / "release.csv"), "--format", "json",
                               "--suppress", "0.05", "--report", str(tmp_path / "rep")).stdout)
    assert report["smallest_class"] >= 5 and report["reidentification_after"] <= 0.2
    assert report["reidentification_before"] > report["reidentification_after"]
    assert (tmp_path / "release.csv").is_file()
    assert report["suppressed_rows"] >= 5 and json.loads((tmp_path / "rep" / "anonymize.json").read_text()) == report
    assert 'id="summary"' in (tmp_path / "rep" / "anonymize.html").read_text()
    rec = json.loads(unseen("attack", "reconstruct", "--csv", str(table), "--column", "sex", "--rows", "200",
                            "--format", "json", "--report", str(tmp_path / "rep")).stdout)
    assert "recovered from exact counts" in (tmp_path / "rep" / "reconstruction.html").read_text()
    assert rec["recovered_from_exact_counts"] >= 0.95 and rec["recovered_from_dp_counts_eps_1"] <= 0.7
    bad = unseen("anonymize", "--csv", str(table), "--qi", "height", check=False)
    assert bad.returncode == 2 and "height" in bad.stderr and "Traceback" not in bad.stderr


def test_he_train_logreg_reports_accuracy_beside_plaintext_and_refuses_images(tmp_path):
    proc = unseen("he", "train-logreg", "--dataset", "breast_cancer", "--iterations", "2", "--format", "json",
                  "--report", str(tmp_path))
    values = json.loads(proc.stdout)
    assert values["records"] > 400 and values["features"] == 30
    assert abs(values["encrypted_accuracy"] - values["plaintext_poly3_accuracy"]) <= 0.01
    assert values["encrypted_accuracy"] > 0.85 and values["upload_bytes"] > 0
    assert json.loads((tmp_path / "he_logreg.json").read_text())["iterations"] == 2
    bad = unseen("he", "train-logreg", "--dataset", "digits", check=False)
    assert bad.returncode == 2 and "binary tabular" in " ".join(bad.stderr.split())


@needs("mnist")
def test_he_infer_latency_mode_on_a_trained_he_cnn(tmp_path):
    spec = tmp_path / "he.toml"
    spec.write_text('name = "he"\nmode = "central"\n[data]\nname = "mnist"\n[model]\nname = "he_cnn"\n'
                    '[train]\nepochs = 1\nbatch_size = 64\noptimizer = "adamw"\nlr = 0.002\n')
    unseen("run", str(spec), "--output", str(tmp_path / "runs"), "--format", "json")
    (run_dir,) = (tmp_path / "runs").iterdir()
    proc = unseen("he", "infer", "--model", str(run_dir), "--n", "5", "--mode", "latency", "--format", "json")
    values = json.loads(proc.stdout)
    assert values["images"] == 5 and values["argmax_agreement"] == 1.0
    assert values["upload_kb_per_image"] < 250 and values["evaluation_key_mb"] < 20
    bad = unseen("he", "infer", "--model", str(run_dir), "--dataset", "adult", check=False)
    assert bad.returncode == 2 and "shape" in bad.stderr
