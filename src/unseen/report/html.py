"""HTML reports: one self-contained file per run (and per sweep) that opens offline.

Figures are inline SVG from matplotlib, styles are inline, there are no scripts and no network
requests. ``render_report`` is a pure function of results.json and the resolved spec.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2

from unseen.errors import UnseenError
from unseen.report import plots
from unseen.report.console import privacy_summary

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("unseen.report", "templates"), autoescape=jinja2.select_autoescape(["html", "j2"]),
)


def render_report(results: dict[str, Any], spec_toml: str) -> str:
    """The report page for one run's results."""
    formal = [g for g in results["privacy"]["guarantees"] if g["mechanism"] != "none"]
    rounds = results["rounds"]
    membership = {k: v for k, v in (results.get("audit") or {}).items() if "roc" in v}
    return _ENV.get_template("report.html.j2").render(
        r=results,
        formal=bool(formal),
        worst=max(formal, key=lambda g: g["epsilon"]) if formal else None,
        privacy_text=privacy_summary(results["privacy"]),
        mb_up=f"{results['costs']['bytes_up'] / 1e6:.2f}",
        mb_down=f"{results['costs']['bytes_down'] / 1e6:.2f}",
        curves=plots.training_curves(rounds) if rounds else "<p>No round finished.</p>",
        clients=plots.per_client(results["final"]["per_client"]),
        ledger=plots.privacy_ledger(rounds, results["privacy"].get("budget_epsilon"))
        if any("epsilon" in m for m in rounds) else "",
        costs=plots.costs(rounds) if rounds else "",
        audit=membership,
        canary=(results.get("audit") or {}).get("canary"),
        secure=results.get("secure_aggregation"),
        failed_rounds=results.get("failed_rounds") or [],
        strongest=max(((k, v) for k, v in membership.items() if v["epsilon_lower_bound"] is not None),
                      key=lambda kv: kv[1]["epsilon_lower_bound"], default=None),
        roc=plots.roc({k: (v["roc"]["fpr"], v["roc"]["tpr"]) for k, v in membership.items()},
                      max((g["epsilon"] for g in formal), default=None),
                      formal[0]["delta"] if formal else 0.0) if membership else "",
        spec_toml=spec_toml,
    )


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` into a finished run folder and return its path."""
    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise UnseenError(f"{run_dir} has no results.json: the run has not finished. Resume it with "
                          f"`unseen run --resume {run_dir}`, then make the report.")
    results = json.loads(results_path.read_text())
    spec_path = run_dir / "spec.toml"
    html = render_report(results, spec_path.read_text() if spec_path.is_file() else "")
    out = run_dir / "report.html"
    out.write_text(html)
    return out


def render_queries(result: dict[str, Any], table: str) -> str:
    """The page for one DP query session (``unseen query --output DIR``)."""
    return _ENV.get_template("queries.html.j2").render(r=result, table=table)


def write_summary(folder: Path, name: str, title: str, values: dict[str, Any], note: str) -> tuple[Path, Path]:
    """``name``.json and ``name``.html for a one-table result (anonymize, reconstruct) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, html_path = folder / f"{name}.json", folder / f"{name}.html"
    json_path.write_text(json.dumps(values, indent=2, default=float))
    html_path.write_text(_ENV.get_template("summary.html.j2").render(title=title, values=values, note=note))
    return json_path, html_path
