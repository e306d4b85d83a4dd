"""The sweep page: accuracy and cost against the varied setting, one self-contained HTML file."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from unseen.report import plots
from unseen.report.html import _ENV


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def render_sweep(sweep: dict[str, Any]) -> str:
    keys = list(sweep["vary"])
    x_key, others = keys[0], keys[1:]
    summary = sweep["summary"]
    x_values = [row["settings"][x_key] for row in summary]
    numeric = _numeric(x_values)
    order = {v: i for i, v in enumerate(dict.fromkeys(x_values))}

    def series(metric: str, spread: str | None, scale: float) -> dict[str, list[tuple[float, float, float]]]:
        out: dict[str, list[tuple[float, float, float]]] = {}
        for row in summary:
            name = ", ".join(f"{k}={row['settings'][k]}" for k in others) or "mean over seeds"
            x = row["settings"][x_key]
            out.setdefault(name, []).append((float(x) if numeric else float(order[x]), scale * row[metric],
                                             scale * row[spread] if spread else 0.0))
        return {k: sorted(v) for k, v in out.items()}

    ticks = None if numeric else [str(v) for v in order]
    return _ENV.get_template("sweep.html.j2").render(
        varied=", ".join(keys), keys=keys, summary=summary, seeds=sweep["seeds"], inf=math.inf,
        n_points=len(sweep["points"]), n_settings=len(summary),
        accuracy_plot=plots.sweep_curve(x_key, series("accuracy_mean", "accuracy_std", 100), "test accuracy (%)",
                                        "accuracy vs " + x_key, ticks),
        attack_plot=plots.sweep_curve(x_key, series("attack_auc_mean", "attack_auc_std", 1), "attack AUC",
                                      "membership inference vs " + x_key, ticks)
        if all("attack_auc_mean" in row for row in summary) else "",
        cost_plot=plots.sweep_curve(x_key, series("seconds_mean", None, 1), "seconds per run",
                                    "wall time vs " + x_key, ticks),
    )


def write_sweep_report(sweep: dict[str, Any], path: Path) -> Path:
    path.write_text(render_sweep(sweep))
    return path
