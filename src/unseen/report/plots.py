"""Figures for the HTML reports, rendered offline by matplotlib to inline SVG strings."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: figures are rendered to strings
import matplotlib.pyplot as plt  # noqa: E402

_STYLE = {"figure.figsize": (6.4, 3.2), "axes.spines.top": False, "axes.spines.right": False, "font.size": 9,
          "svg.fonttype": "none"}


def _svg(fig: Any) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog so the SVG can sit inside HTML


def training_curves(rounds: Sequence[dict[str, Any]]) -> str:
    with plt.rc_context(_STYLE):
        fig, (acc_ax, loss_ax) = plt.subplots(1, 2)
        evaluated = [m for m in rounds if "test_accuracy" in m]
        acc_ax.plot([m["round"] for m in evaluated], [100 * m["test_accuracy"] for m in evaluated], marker="o", ms=3)
        acc_ax.set(xlabel="round", ylabel="test accuracy (%)", title="accuracy")
        loss_ax.plot([m["round"] for m in evaluated], [m["test_loss"] for m in evaluated], marker="o", ms=3,
                     label="test")
        train = [m for m in rounds if not math.isnan(m.get("train_loss", float("nan")))]
        loss_ax.plot([m["round"] for m in train], [m["train_loss"] for m in train], ls="--", label="train (clients)")
        loss_ax.set(xlabel="round", ylabel="loss", title="loss")
        loss_ax.legend(frameon=False)
        return _svg(fig)


def per_client(clients: Sequence[dict[str, Any]]) -> str:
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots()
        labels = [c.get("silo", str(c["client"])) for c in clients]
        key = "test_accuracy" if all("test_accuracy" in c for c in clients) else "local_accuracy"
        ax.bar(labels, [100 * c[key] for c in clients], color="#4c72b0")
        ax.set(ylabel="accuracy (%)", xlabel="client",
               title="final model on each client's " + ("test rows" if key == "test_accuracy" else "own data"))
        if len(labels) > 12:
            ax.set_xticks([])
        return _svg(fig)


def privacy_ledger(rounds: Sequence[dict[str, Any]], budget: float | None) -> str:
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots()
        spent = [m for m in rounds if "epsilon" in m]
        ax.plot([m["round"] for m in spent], [m["epsilon"] for m in spent], marker="o", ms=3, label="epsilon spent")
        if budget is not None:
            ax.axhline(budget, color="#c44e52", ls="--", label=f"budget {budget:g}")
        ax.set(xlabel="round", ylabel="epsilon", title="privacy spent (worst unit)")
        ax.legend(frameon=False)
        return _svg(fig)


def costs(rounds: Sequence[dict[str, Any]]) -> str:
    with plt.rc_context(_STYLE):
        fig, (time_ax, bytes_ax) = plt.subplots(1, 2)
        r = [m["round"] for m in rounds]
        stages = list(rounds[0].get("stage_seconds", {})) if rounds else []
        bottom = [0.0] * len(rounds)
        for stage in stages:  # stacked: where each round's time went
            values = [m["stage_seconds"][stage] for m in rounds]
            time_ax.bar(r, values, bottom=bottom, label=stage.replace("_", " "))
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        if not stages:
            time_ax.bar(r, [m["seconds"] for m in rounds], color="#55a868")
        time_ax.set(xlabel="round", ylabel="seconds", title="wall time per round, by stage")
        if stages:
            time_ax.legend(frameon=False, fontsize=7)
        bytes_ax.bar(r, [m["bytes_up"] / 1e6 for m in rounds], label="up", color="#4c72b0")
        bytes_ax.bar(r, [m["bytes_down"] / 1e6 for m in rounds], bottom=[m["bytes_up"] / 1e6 for m in rounds],
                     label="down", color="#dd8452")
        bytes_ax.set(xlabel="round", ylabel="MB", title="bytes moved per round")
        bytes_ax.legend(frameon=False)
        return _svg(fig)


def roc(curves: dict[str, tuple[Sequence[float], Sequence[float]]], epsilon: float | None, delta: float) -> str:
    """ROC on log-log axes, with the best curve (epsilon, delta)-DP allows drawn as a bound."""
    import numpy as np

    with plt.rc_context({**_STYLE, "figure.figsize": (4.2, 3.6)}):
        fig, ax = plt.subplots()
        grid = np.logspace(-5, 0, 200)
        ax.plot(grid, grid, color="#999", ls=":", label="random guess")
        if epsilon is not None and math.isfinite(epsilon):
            ax.plot(grid, np.minimum(1.0, math.exp(epsilon) * grid + delta), color="#c44e52", ls="--",
                    label=f"bound at eps={epsilon:.3g}")
        for name, (fpr, tpr) in curves.items():
            f, t = np.asarray(fpr), np.asarray(tpr)
            keep = f > 0
            ax.plot(f[keep], np.maximum(t[keep], 1e-5), label=name)
        ax.set(xscale="log", yscale="log", xlim=(1e-5, 1), ylim=(1e-5, 1.05), xlabel="false positive rate",
               ylabel="true positive rate", title="membership inference ROC")
        ax.legend(frameon=False, fontsize=7)
        return _svg(fig)


def sweep_curve(x_label: str, series: dict[str, list[tuple[float, float, float]]], y_label: str, title: str,
                ticks: list[str] | None = None) -> str:
    """One line per series of (x, mean, std) points, with error bars; infinite x drawn at the right end.

    With ``ticks`` the x values are positions of categorical settings, labelled by ``ticks``.
    """
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots()
        finite = [x for pts in series.values() for x, _, _ in pts if math.isfinite(x)]
        right = (max(finite) * 2 if finite else 1.0)
        for name, points in series.items():
            xs = [x if math.isfinite(x) else right for x, _, _ in points]
            ax.errorbar(xs, [m for _, m, _ in points], yerr=[s for _, _, s in points], marker="o", ms=4,
                        capsize=3, label=name)
        if ticks is not None:
            ax.set_xticks(range(len(ticks)), ticks)
        elif finite and min(finite) > 0 and right / min(finite) > 20:
            ax.set_xscale("log")
        if any(not math.isfinite(x) for pts in series.values() for x, _, _ in pts):
            ax.annotate("inf = no DP", (right, ax.get_ylim()[0]), ha="center", fontsize=8)
        ax.set(xlabel=x_label, ylabel=y_label, title=title)
        if len(series) > 1:
            ax.legend(frameon=False)
        return _svg(fig)
