"""`unseen audit RUN_DIR`: attacks a finished run and extends its results and report."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from unseen.cli import app
from unseen.experiment import parse_spec, run


def test_unseen_audit_adds_reference_attacks_to_a_finished_run(tmp_path):
    spec = parse_spec({"data": {"name": "digits"}, "model": {"name": "mlp", "hidden": [128]},
                       "train": {"lr": 0.1, "epochs": 5}, "federated": {"clients": 3, "rounds": 6},
                       "audit": {"attacks": ["loss"], "canaries": 50}})
    run_dir = run(spec, output_dir=tmp_path).run_dir
    result = CliRunner().invoke(app, ["audit", str(run_dir), "--attacks", "loss,rmia,lira", "--references", "2",
                                      "--records", "300"])
    assert result.exit_code == 0, result.output
    assert "membership inference audit" in result.output and "rmia" in result.output
    audit = json.loads((run_dir / "results.json").read_text())["audit"]
    assert {"loss", "rmia", "lira", "canary"} <= set(audit)
    assert audit["rmia"]["references"] == 2 and audit["rmia"]["n_members"] == 300
    assert audit["rmia"]["auc"] > 0.5 and audit["loss"]["auc"] > 0.5  # an overfit MLP leaks
    html = (run_dir / "report.html").read_text()
    assert "rmia" in html and 'id="canary"' in html


def test_unseen_audit_refuses_unknown_attacks_and_unfinished_runs(tmp_path):
    from tests.test_cli import unseen

    proc = unseen("audit", str(tmp_path), "--attacks", "magic", check=False)
    assert proc.returncode == 2 and "unknown" in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    proc = unseen("audit", str(tmp_path), check=False)
    text = " ".join((proc.stdout + proc.stderr).replace("│", " ").split())  # the error panel wraps lines
    assert proc.returncode == 2 and "not a finished run folder" in text


def test_reference_attacks_from_the_spec_run_after_training(tmp_path):
    spec = parse_spec({"data": {"name": "digits"}, "model": {"name": "mlp", "hidden": [64]},
                       "train": {"lr": 0.1, "epochs": 3}, "federated": {"clients": 2, "rounds": 4},
                       "audit": {"attacks": ["rmia", "lira_offline"], "references": 2, "max_records": 200}})
    audit = run(spec, output_dir=tmp_path).results["audit"]
    assert set(audit) == {"rmia", "lira_offline"}
    assert audit["rmia"]["n_members"] == 200 and audit["rmia"]["references"] == 2
