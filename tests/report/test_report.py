"""The HTML report: self-contained, complete, and what a browser actually shows."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from html import unescape
from pathlib import Path

import numpy as np
import pytest

from unseen.experiment import parse_spec, run
from unseen.report.html import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory):
    spec = parse_spec({"name": "rep", "data": {"name": "digits"}, "federated": {"clients": 6, "rounds": 4},
                       "privacy": {"mechanism": "dp_fedavg", "epsilon": 4.0}, "audit": {"attacks": ["loss"]}})
    return run(spec, output_dir=tmp_path_factory.mktemp("runs"))


def test_run_writes_a_self_contained_report(dp_run):
    html = (dp_run.run_dir / "report.html").read_text()
    for section in ("Summary", "Training curves", "Per-client accuracy", "Privacy ledger", "Audit", "Cost", "Reproduce"):
        assert f"<h2>{section}</h2>" in html
    assert html.count("<svg") == 5  # curves, clients, ledger, costs, ROC
    assert 'id="audit"' in html and 'id="eps-hat"' in html and 'class="vulnerable"' in html
    assert len(dp_run.results["audit"]["loss"]["most_vulnerable"]) == 10
    assert 'id="stages"' in html and "client training" in html
    # Opens offline: no scripts, no external stylesheets, images or fonts.
    assert "<script" not in html and "<link" not in html and not re.search(r'(src|href)="(https?:)?//', html)
    results = json.loads((dp_run.run_dir / "results.json").read_text())
    assert f"{100 * results['final']['test_accuracy']:.2f}%" in html
    assert "per user" in html and 'name = "rep"' in unescape(html)


def test_report_without_privacy_says_so(tmp_path):
    result = run(parse_spec({"data": {"name": "digits"}, "federated": {"rounds": 2}}), output_dir=tmp_path)
    html = write_report(result.run_dir).read_text()
    assert "no formal guarantee" in html and html.count("<svg") == 3  # no ledger plot


def test_report_of_an_unfinished_run_is_a_clear_error(tmp_path):
    from unseen.errors import UnseenError

    with pytest.raises(UnseenError, match="has not finished"):
        write_report(tmp_path)


def render_in_chromium(page: Path) -> tuple[str, str, np.ndarray]:
    """DOM, console log and screenshot of ``page`` in headless Chromium (no network)."""
    from matplotlib.image import imread

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--enable-logging=stderr", "--v=0", "--window-size=1100,1600"]
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([CHROMIUM, *flags, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                             capture_output=True, text=True, timeout=120)
        shot = page.with_suffix(".png")
        subprocess.run([CHROMIUM, *flags, f"--user-data-dir={profile}", f"--screenshot={shot}", page.as_uri()],
                       capture_output=True, text=True, timeout=120)
    return dom.stdout, dom.stderr, imread(shot)


def console_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if "CONSOLE" in line and ("ERROR" in line or "Uncaught" in line)]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_report_renders_in_a_real_browser(dp_run):
    results = dp_run.results
    dom, log, image = render_in_chromium(dp_run.run_dir / "report.html")
    assert console_errors(log) == []
    assert f"{100 * results['final']['test_accuracy']:.2f}%" in dom
    assert results["status"] in dom and "Privacy ledger" in dom
    assert image.shape[0] > 500 and float(image[..., :3].std()) > 0.05  # not a blank page
