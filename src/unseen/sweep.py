"""Sweeps: a grid of runs over spec fields and seeds, to see the privacy / utility / cost trade-off.

``run_sweep(raw_spec, vary, seeds, sweep_dir)`` runs every combination of the varied values for
each seed, one run folder per point under ``sweep_dir/points/``. It is resumable: a finished point
(with results.json) is read, not re-run, and an interrupted one resumes from its checkpoint; so
running the same command again completes a sweep. ``privacy.epsilon = inf`` means "no DP" for that
point. Results go to ``sweep.json`` and ``sweep.html``.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from unseen.errors import SpecError
from unseen.experiment import _parse_value, parse_spec, resume, run_in, set_path


def parse_vary(items: Iterable[str]) -> dict[str, list[Any]]:
    """``["privacy.epsilon=0.5,1,inf"]`` -> ``{"privacy.epsilon": [0.5, 1, inf]}``."""
    out: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise SpecError(f"--vary {item!r}: write --vary section.key=v1,v2,..., e.g. --vary privacy.epsilon=1,2,4,inf.")
        out[key.strip()] = [_parse_value(v.strip()) for v in values.split(",")]
    return out


def _slug(settings: dict[str, Any], seed: int) -> str:
    parts = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items()]
    return ",".join([*parts, f"seed={seed}"]).replace("/", "_")


def point_spec(raw: dict[str, Any], settings: dict[str, Any], seed: int) -> dict[str, Any]:
    """The raw spec of one sweep point (``privacy.epsilon = inf`` turns DP off)."""
    point = copy.deepcopy(raw)
    overrides = dict(settings)
    eps = overrides.get("privacy.epsilon")
    if isinstance(eps, float) and math.isinf(eps):
        overrides.pop("privacy.epsilon")
        privacy = point.setdefault("privacy", {})
        privacy.clear()
        privacy["mechanism"] = "none"
    for key, value in overrides.items():
        set_path(point, key, value)
    point["seed"] = int(raw.get("seed", 0)) + seed
    return point


def run_sweep(
    raw: dict[str, Any],
    vary: dict[str, list[Any]],
    seeds: int,
    sweep_dir: str | Path,
    *,
    on_point: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Run (or finish) the grid and write sweep.json and sweep.html; return the sweep summary."""
    if seeds < 1:
        raise SpecError(f"--seeds must be >= 1, got {seeds}.")
    finite_eps = [v for v in vary.get("privacy.epsilon", []) if not (isinstance(v, float) and math.isinf(v))]
    if finite_eps and raw.get("privacy", {}).get("mechanism", "none") == "none":
        raise SpecError("--vary privacy.epsilon needs a DP mechanism in the spec: set privacy.mechanism to "
                        "'dp_fedavg' or 'dp_sgd' (inf in the list runs without DP).")
    sweep_dir = Path(sweep_dir)
    keys = list(vary)
    grid = [dict(zip(keys, values, strict=True)) for values in itertools.product(*vary.values())]
    points = [(settings, s) for settings in grid for s in range(seeds)]
    specs = [(settings, s, parse_spec(point_spec(raw, settings, s))) for settings, s in points]  # validate all first
    rows = []
    for i, (settings, s, spec) in enumerate(specs):
        folder = sweep_dir / "points" / _slug(settings, s)
        if on_point:
            on_point(i, len(specs), folder.name)
        if (folder / "results.json").is_file():
            results = json.loads((folder / "results.json").read_text())
        elif (folder / "checkpoints").is_dir():
            results = resume(folder).results
        else:
            results = run_in(spec, folder).results
        formal = [g["epsilon"] for g in results["privacy"]["guarantees"] if g["epsilon"] is not None]
        audits = results.get("audit") or {}
        rows.append({
            "settings": settings, "seed": spec.seed, "run_dir": str(folder),
            "test_accuracy": results["final"]["test_accuracy"], "epsilon": max(formal) if formal else math.inf,
            "status": results["status"], "wall_seconds": results["costs"]["wall_seconds"],
            "bytes": results["costs"]["bytes_up"] + results["costs"]["bytes_down"],
            # Attack success: the strongest audited attack's AUC and empirical epsilon, if any ran.
            "attack_auc": max((a["auc"] for a in audits.values() if "auc" in a), default=None),
            "eps_hat": max((a["epsilon_lower_bound"] for a in audits.values()
                            if a.get("epsilon_lower_bound") is not None),
                           default=None),
        })
    summary = summarize(rows, keys)
    out = {"vary": vary, "seeds": seeds, "points": rows, "summary": summary}
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "sweep.json").write_text(json.dumps(_finite(out), indent=2))
    from unseen.report.sweep_html import write_sweep_report

    write_sweep_report(out, sweep_dir / "sweep.html")
    return out


def summarize(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds, per setting."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(json.dumps(_finite([row["settings"][k] for k in keys])), []).append(row)
    out = []
    for members in groups.values():
        acc = np.array([m["test_accuracy"] for m in members])
        out.append({
            "settings": members[0]["settings"], "runs": len(members),
            "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
            "epsilon": float(max(m["epsilon"] for m in members)),
            "seconds_mean": float(np.mean([m["wall_seconds"] for m in members])),
            "bytes_mean": float(np.mean([m["bytes"] for m in members])),
        })
        if all(m["attack_auc"] is not None for m in members):
            aucs = np.array([m["attack_auc"] for m in members])
            out[-1].update({"attack_auc_mean": float(aucs.mean()),
                            "attack_auc_std": float(aucs.std(ddof=1)) if len(aucs) > 1 else 0.0,
                            "eps_hat_max": float(max(m["eps_hat"] for m in members))})
    return out


def _finite(value: Any) -> Any:
    """JSON has no infinity: write it as the string "inf" (as --vary accepts it)."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
