"""Rich tables for the terminal, built from the same dicts that go to results.json."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from unseen.data.datasets import DatasetStatus


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def results_table(results: dict[str, Any]) -> Table:
    """The summary of one run: accuracy, privacy, rejected updates and costs."""
    table = Table(title=f"unseen run: {results['name']} ({results['mode']})", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    final, costs, ds = results["final"], results["costs"], results["dataset"]
    holders = "parties" if results["mode"] == "vertical" else "client(s)"
    table.add_row("dataset", f"{ds['name']}: {ds['train_samples']} train / {ds['test_samples']} test, "
                             f"{len(ds['client_sizes'])} {holders}")
    table.add_row("model", f"{results['model']['name']} ({results['model']['parameters']:,} parameters)")
    table.add_row("epochs" if results["mode"] == "vertical" else "rounds", str(final["round"]))
    table.add_row("test accuracy", _pct(final["test_accuracy"]))
    table.add_row("test loss", f"{final['test_loss']:.4f}")
    table.add_row("privacy", privacy_summary(results["privacy"]))
    vertical = results.get("vertical")
    if vertical:
        table.add_row("vertical", f"{len(vertical['parties'])} parties; PSI aligned {vertical['aligned_people']:,} people "
                                  f"held by all; the label party alone: {_pct(vertical['label_party_alone_accuracy'])}")
        leaks = {k.removeprefix("label_leakage_"): v for k, v in results.get("audit", {}).items()
                 if k.startswith("label_leakage_")}
        if leaks:
            table.add_row("label leakage", ", ".join(f"{k} attack AUC {v['auc']:.3f}" for k, v in leaks.items())
                          + " (a passive party guessing labels from its gradients; 0.5 = chance)")
    if results["privacy"].get("halted"):
        table.add_row("privacy budget", f"[yellow]{results['privacy']['halted']}[/]")
    canary = results.get("audit", {}).get("canary")
    if canary:
        line = (f"eps-hat {canary['epsilon_lower_bound']:.3g} ({canary['confidence']:.0%} lower bound) from "
                f"{canary['canaries']} canaries, {canary['correct']}/{canary['guesses']} guesses right")
        if canary["violation"]:
            line = f"[bold red]{line}: ABOVE the formal epsilon {canary['formal_epsilon']:.3g}; the DP claim is wrong[/]"
        table.add_row("canary audit", line)
    secure = results.get("secure_aggregation")
    if secure:
        table.add_row("secure aggregation", f"{secure['backend']}: the server saw only each round's sum "
                                            f"(client clip {secure['clip']:g})")
    if results.get("failed_rounds"):
        table.add_row("failed rounds", f"[bold red]{len(results['failed_rounds'])} of {final['round']} rounds "
                                       "failed; the model was not updated in them[/]")
    table.add_row("rejected updates", str(len(results["rejected_updates"])))
    table.add_row("time", f"{costs['wall_seconds']:.1f} s total, {costs['seconds_per_round']:.3f} s per round (median)")
    table.add_row("bytes moved", f"{_bytes(costs['bytes_up'])} up, {_bytes(costs['bytes_down'])} down")
    return table


def privacy_summary(privacy: dict[str, Any]) -> str:
    """One line: the guarantee in numbers (the worst one when there are several), or why there is none."""
    guarantees = privacy["guarantees"]
    formal = [g for g in guarantees if g["mechanism"] != "none"]
    if not formal:
        return f"no formal guarantee: {guarantees[0]['reason']}"
    worst = max(formal, key=lambda g: g["epsilon"])
    if worst["noise_multiplier"] is None:  # randomized response (label DP): no Gaussian, an exact epsilon
        uncovered = [g["reason"] for g in guarantees if g["mechanism"] == "none"]
        return (f"({worst['epsilon']:.3g}, {worst['delta']:.1e})-DP per {worst['unit']} by {worst['mechanism']} "
                f"({worst['accountant']}, noise from {worst['noise_source']})"
                + "".join(f"; no formal guarantee for the rest: {r}" for r in uncovered))
    scope = f" (worst of {len(formal)} clients: {worst['scope']})" if len(formal) > 1 else ""
    return (f"({worst['epsilon']:.3g}, {worst['delta']:.1e})-DP per {worst['unit']}{scope}; noise multiplier "
            f"{worst['noise_multiplier']:.3g}, clip {worst['clipping_bound']:.3g}, {worst['steps']} steps, "
            f"{worst['accountant']}, noise from {worst['noise_source']}")


def clients_table(results: dict[str, Any]) -> Table:
    """The final global model on each client's data."""
    table = Table(title="per client (final global model)", title_justify="left")
    for col in ("client", "silo", "samples", "accuracy on own data", "test accuracy"):
        table.add_column(col, justify="right" if col != "silo" else "left")
    for c in results["final"]["per_client"]:
        table.add_row(str(c["client"]), c.get("silo", "-"), str(c["samples"]), _pct(c["local_accuracy"]),
                      _pct(c.get("test_accuracy")))
    return table


def queries_table(result: dict[str, Any]) -> Table:
    """DP query answers with their intervals and epsilons, and what the session spent."""
    prior = f" (of which {result['prior_epsilon']:.3g} by the model trained first)" if result.get("prior_epsilon") else ""
    table = Table(title=f"DP queries: spent {result['spent']:.3g} of epsilon {result['budget']:g}{prior}",
                  title_justify="left")
    for col in ("query", "answer", "interval", "epsilon"):
        table.add_column(col)
    for a in result["answers"]:
        if "refused" in a:
            table.add_row(a["query"], f"[red]refused: {a['refused']}[/]", "", "")
            continue
        value = a["value"]
        shown = (", ".join(f"{k}: {v}" for k, v in value.items()) if isinstance(value, dict)
                 else f"{value:.4g}" if isinstance(value, float) else str(value))
        lo, hi = a["interval"]
        if a["query"].startswith("quantile"):
            interval = f"neighbouring candidates [{lo:.4g}, {hi:.4g}]"
        elif isinstance(value, dict):
            interval = f"each bin +/- {hi:.3g} ({a['confidence']:.0%})"
        else:
            interval = f"[{lo:.4g}, {hi:.4g}] ({a['confidence']:.0%})"
        table.add_row(a["query"], shown, interval, f"{a['epsilon']:.3g}")
    return table


def audit_table(audit: dict[str, Any]) -> Table:
    """Membership attacks on one model: AUC, TPR at low FPR, and the empirical epsilon."""
    table = Table(title="membership inference audit", title_justify="left")
    for col in ("attack", "references", "members / non-members", "AUC", "TPR at 1% FPR", "TPR at 0.1% FPR",
                "eps-hat (95% lower bound)"):
        table.add_column(col, justify="left" if col == "attack" else "right")
    for name, a in audit.items():
        if "roc" not in a and "auc" not in a:
            continue
        table.add_row(name, str(a.get("references", 0)), f"{a['n_members']} / {a['n_nonmembers']}", f"{a['auc']:.3f}",
                      f"{a['tpr_at_fpr']['0.01']['tpr']:.3f}", f"{a['tpr_at_fpr']['0.001']['tpr']:.3f}",
                      "-" if a["epsilon_lower_bound"] is None else f"{a['epsilon_lower_bound']:.3f}")
    return table


def failed_rounds_table(results: dict[str, Any], limit: int = 10) -> Table:
    table = Table(title="[red]failed rounds (no model update)[/]", title_justify="left")
    for col in ("round", "reason"):
        table.add_column(col)
    for r in results["failed_rounds"][:limit]:
        table.add_row(str(r["round"]), r["reason"])
    extra = len(results["failed_rounds"]) - limit
    if extra > 0:
        table.add_row("...", f"{extra} more in results.json")
    return table


def rejections_table(results: dict[str, Any], limit: int = 10) -> Table:
    table = Table(title="rejected updates (never aggregated)", title_justify="left")
    for col in ("round", "client", "reason"):
        table.add_column(col)
    for r in results["rejected_updates"][:limit]:
        table.add_row(str(r["round"]), str(r["client"]), r["reason"])
    extra = len(results["rejected_updates"]) - limit
    if extra > 0:
        table.add_row("...", "", f"{extra} more in results.json")
    return table


def datasets_table(statuses: list[DatasetStatus]) -> Table:
    table = Table(title="datasets", title_justify="left")
    for col in ("name", "available", "description", "where unseen looked"):
        table.add_column(col)
    for s in statuses:
        table.add_row(s.name, "[green]yes[/]" if s.available else "[red]no[/]", s.description, s.location)
    return table


def comparison_table(rows: list[tuple[str, float, str]]) -> Table:
    table = Table(title="federated vs pooled", title_justify="left")
    table.add_column("training")
    table.add_column("test accuracy", justify="right")
    table.add_column("where the data was")
    for name, acc, where in rows:
        table.add_row(name, _pct(acc), where)
    return table


def key_value_table(title: str, values: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in values.items():
        table.add_row(key.replace("_", " "), f"{value:.6g}" if isinstance(value, float) else str(value))
    return table


def sweep_table(sweep: dict[str, Any]) -> Table:
    keys = list(sweep["vary"])
    table = Table(title=f"sweep over {', '.join(keys)} ({sweep['seeds']} seed(s) each)", title_justify="left")
    for k in keys:
        table.add_column(k)
    for col in ("accuracy (mean ± sd)", "formal epsilon", "seconds", "runs"):
        table.add_column(col, justify="right")
    for row in sweep["summary"]:
        eps = row["epsilon"]
        table.add_row(*(str(row["settings"][k]) for k in keys),
                      f"{100 * row['accuracy_mean']:.2f}% ± {100 * row['accuracy_std']:.2f}",
                      "none" if eps == float("inf") else f"{eps:.3g}", f"{row['seconds_mean']:.1f}", str(row["runs"]))
    return table
