"""The ``unseen`` command: a thin face on the Python API (every command is one call of it)."""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from unseen import experiment
from unseen.data import list_datasets
from unseen.errors import UnseenError
from unseen.report import console as tables

app = typer.Typer(
    name="unseen", help="Machine learning on data you are not allowed to see.", no_args_is_help=True,
    add_completion=False, pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

FormatOpt = Annotated[str, typer.Option("--format", help="table (for people) or json (for programs)")]


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "json"):
        raise UnseenError(f"--format {fmt!r} is unknown: use --format table or --format json.")


@contextmanager
def _progress(enabled: bool) -> Iterator[experiment.Hooks]:
    """Progress bars on stderr (stdout stays clean for --format json): rounds, and clients within a round."""
    if not enabled:
        yield experiment.Hooks()
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=False) as bar:
        tasks: dict[str, Any] = {}

        def on_start(total: int, done: int) -> None:
            tasks["rounds"] = bar.add_task("rounds", total=total, completed=done, info="")

        def on_client(done: int, total: int) -> None:
            if "clients" not in tasks:  # added on first use: vertical runs have no clients
                tasks["clients"] = bar.add_task("  clients", total=total, info="")
            bar.update(tasks["clients"], completed=done, total=total)

        def on_round(metrics: dict[str, Any]) -> None:
            acc = metrics.get("test_accuracy")
            info = f"acc {100 * acc:.2f}%" if acc is not None else ""
            if metrics.get("rejected"):
                info += f" [red]{metrics['rejected']} rejected[/]"
            if "failed" in metrics:
                info += " [bold red]round failed[/]"
            bar.update(tasks["rounds"], completed=metrics["round"], info=info)

        yield experiment.Hooks(on_start=on_start, on_round=on_round, on_client=on_client)


def _show(result: experiment.RunResult, fmt: str, report_line: bool = True) -> None:
    if fmt == "json":
        out.print_json(json.dumps(result.results, default=float))
        return
    out.print(tables.results_table(result.results))
    if len(result.results["final"]["per_client"]) > 1:
        out.print(tables.clients_table(result.results))
    if result.results["rejected_updates"]:
        out.print(tables.rejections_table(result.results))
    if result.results.get("failed_rounds"):
        out.print(tables.failed_rounds_table(result.results))
    out.print(f"run folder: [bold]{result.run_dir}[/] (results.json, spec.toml, checkpoints/, log.txt)")
    if report_line:
        _print_report_path(result.run_dir)


def _print_report_path(run_dir: Path) -> None:
    out.print(f"report: [bold]{run_dir / 'report.html'}[/] (opens offline in any browser)")


@app.command("run")
def run_cmd(
    spec: Annotated[Path | None, typer.Argument(help="experiment spec (TOML); defaults apply to missing keys")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="override a field: --set federated.rounds=20")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="continue an interrupted run folder")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="parent folder of the run folder")] = None,
    fmt: FormatOpt = "table",
) -> None:
    """Train centrally or federated as SPEC says; write runs/<name>-<timestamp>/."""
    _check_format(fmt)
    with _progress(fmt == "table") as hooks:
        if resume is not None:
            if spec is not None or set_:
                raise UnseenError("--resume continues a run with its own spec.toml: drop SPEC and --set.")
            result = experiment.resume(resume, hooks=hooks)
        else:
            result = experiment.run(experiment.load_spec(spec, set_ or []), output_dir=output, hooks=hooks)
    _show(result, fmt)
    if result.results["status"] == "privacy_violation":
        raise typer.Exit(4)  # the canary audit disproved the run's privacy guarantee
    if result.results.get("failed_rounds"):
        raise typer.Exit(3)  # a run with failed rounds is not a success, even though it finished


@app.command()
def demo(
    dataset: Annotated[str, typer.Option(help="breast_cancer (5 simulated hospitals) or heart_disease (4 real ones)")] = "breast_cancer",
    output: Annotated[Path, typer.Option("--output", "-o", help="parent folder of the run folder")] = Path("runs"),
    fmt: FormatOpt = "table",
) -> None:
    """Federated logistic regression across hospitals, beside the same model trained on pooled data."""
    _check_format(fmt)
    spec = experiment.demo_spec(dataset)
    with _progress(fmt == "table") as hooks:
        result, pooled = experiment.run_demo(spec, output_dir=output, hooks=hooks)
    if fmt == "json":
        out.print_json(json.dumps({"federated_accuracy": result.accuracy, "pooled_accuracy": pooled,
                                   "run_dir": str(result.run_dir), "results": result.results}, default=float))
        return
    _show(result, fmt, report_line=False)
    n = len(result.results["dataset"]["client_sizes"])
    out.print(tables.comparison_table([
        (f"federated (FedAvg, {n} hospitals)", result.accuracy, "stayed in each hospital"),
        ("central logistic regression (scikit-learn)", pooled, "pooled in one place"),
    ]))
    _print_report_path(result.run_dir)


@app.command()
def sweep(
    spec: Annotated[Path | None, typer.Argument(help="base experiment spec (TOML)")] = None,
    vary: Annotated[list[str] | None, typer.Option("--vary", help="a field and its values: --vary privacy.epsilon=1,2,4,inf")] = None,
    seeds: Annotated[int, typer.Option(help="seeds per setting (error bars)")] = 1,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="override a base field")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="sweep folder (re-run the same command to resume)")] = None,
    fmt: FormatOpt = "table",
) -> None:
    """Run a grid of experiments; finished points are never re-run. Writes sweep.json and sweep.html."""
    import tomllib

    from unseen.sweep import parse_vary, run_sweep

    _check_format(fmt)
    if not vary:
        raise UnseenError("give at least one --vary section.key=v1,v2,... (e.g. --vary privacy.epsilon=1,2,4,inf).")
    raw = tomllib.loads(spec.read_text()) if spec is not None else {}
    experiment.apply_overrides(raw, set_ or [])
    experiment.parse_spec(raw)  # the base spec must be valid on its own
    varied = parse_vary(vary)
    folder = output or Path(raw.get("output", {}).get("dir", "runs")) / f"{raw.get('name', 'experiment')}-sweep"
    if fmt == "json":
        result = run_sweep(raw, varied, seeds, folder)
        out.print_json(json.dumps(json.loads((folder / "sweep.json").read_text())))
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err) as bar:
        task = bar.add_task("sweep points", total=len(list(itertools.product(*varied.values()))) * seeds)
        result = run_sweep(raw, varied, seeds, folder,
                           on_point=lambda i, n, name: bar.update(task, completed=i, description=f"sweep {name}"))
        bar.update(task, completed=len(result["points"]), description="sweep points")
    out.print(tables.sweep_table(result))
    out.print(f"sweep: [bold]{folder / 'sweep.html'}[/] and sweep.json; each point's run folder is under {folder / 'points'}")


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a finished run folder")]) -> None:
    """Write report.html for a finished run (unseen run does this automatically)."""
    from unseen.report.html import write_report

    out.print(f"report: [bold]{write_report(run_dir)}[/]")


@app.command()
def query(
    spec: Annotated[Path, typer.Argument(help="a query spec (TOML): budget, table, [[query]] entries")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write queries.json and queries.html here")] = None,
    fmt: FormatOpt = "table",
) -> None:
    """Answer DP queries on a table under one budget (OpenDP); a query over the budget is refused."""
    from unseen.privacy.query_spec import load_query_spec, read_table, run_guarantee, run_queries

    _check_format(fmt)
    parsed = load_query_spec(spec)
    prior = run_guarantee(parsed.after_run, spec.parent) if parsed.after_run else None
    result = run_queries(parsed, read_table(parsed.table, spec.parent), prior)
    if output is not None:
        from unseen.report.html import render_queries

        output.mkdir(parents=True, exist_ok=True)
        (output / "queries.json").write_text(json.dumps(result, indent=2, default=float))
        (output / "queries.html").write_text(render_queries(result, parsed.table.path))
    if fmt == "json":
        out.print_json(json.dumps(result, default=float))
        return
    out.print(tables.queries_table(result))
    if output is not None:
        out.print(f"results: [bold]{output / 'queries.json'}[/], report: [bold]{output / 'queries.html'}[/]")


@app.command()
def audit(
    run_dir: Annotated[Path, typer.Argument(help="a finished run folder")],
    attacks: Annotated[str, typer.Option(help="comma-separated: loss, rmia, lira, lira_offline")] = "loss,rmia,lira",
    references: Annotated[int, typer.Option(help="reference models for RMIA and LiRA")] = 2,
    records: Annotated[int, typer.Option(help="members and non-members attacked")] = 1000,
    fmt: FormatOpt = "table",
) -> None:
    """Attack a finished run's model (membership inference) and add the results to its results.json and report."""
    from unseen.audit.membership import ATTACKS

    _check_format(fmt)
    names = tuple(a.strip() for a in attacks.split(",") if a.strip())
    unknown = [a for a in names if a not in ATTACKS]
    if unknown:
        raise UnseenError(f"--attacks: unknown {unknown}; use any of {', '.join(ATTACKS)}")
    with out.status(f"training {references} reference model(s) and attacking {run_dir} ..."):
        result = experiment.audit_run(run_dir, attacks=names, references=references, records=records)
    if fmt == "json":
        out.print_json(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "roc"} for k, v in result.items()},
                                  default=float))
        return
    out.print(tables.audit_table(result))
    _print_report_path(run_dir)


@app.command()
def datasets(fmt: FormatOpt = "table") -> None:
    """List datasets, whether each is available locally, and where unseen looked."""
    _check_format(fmt)
    statuses = list_datasets()
    if fmt == "json":
        out.print_json(json.dumps([asdict(s) for s in statuses]))
    else:
        out.print(tables.datasets_table(statuses))


privacy_app = typer.Typer(help="Privacy accounting helpers: epsilon of a configuration, noise for a target.",
                          no_args_is_help=True)
app.add_typer(privacy_app, name="privacy")

RateOpt = Annotated[float | None, typer.Option("--rate", help="Poisson sampling rate q (batch/records, or clients fraction)")]
StepsOpt = Annotated[int | None, typer.Option("--steps", help="number of noisy steps (DP-SGD steps or DP-FedAvg rounds)")]
RecordsOpt = Annotated[int | None, typer.Option("--records", help="instead of --rate/--steps: dataset size ...")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="... expected batch size ...")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="... and epochs (DP-SGD)")]
DeltaOpt = Annotated[float, typer.Option("--delta", help="target delta")]
AccountantOpt = Annotated[str, typer.Option("--accountant", help="pld or rdp")]


def _rate_and_steps(rate: float | None, steps: int | None, records: int | None, batch_size: int | None,
                    epochs: int | None) -> tuple[float, int]:
    from unseen.privacy.dpsgd import steps_per_epoch

    if records is not None or batch_size is not None or epochs is not None:
        if None in (records, batch_size, epochs):
            raise UnseenError("give --records, --batch-size and --epochs together (or --rate and --steps).")
        q = min(1.0, batch_size / records)  # type: ignore[operator]
        return q, epochs * steps_per_epoch(q)  # type: ignore[operator]
    if rate is None or steps is None:
        raise UnseenError("give --rate and --steps, or --records, --batch-size and --epochs.")
    return rate, steps


@privacy_app.command("epsilon")
def privacy_epsilon(
    noise: Annotated[float, typer.Option("--noise", help="noise multiplier (std / clip)")],
    rate: RateOpt = None, steps: StepsOpt = None, records: RecordsOpt = None, batch_size: BatchOpt = None,
    epochs: EpochsOpt = None, delta: DeltaOpt = 1e-5, accountant: AccountantOpt = "pld", fmt: FormatOpt = "table",
) -> None:
    """Epsilon spent by Poisson-subsampled Gaussian steps."""
    from unseen.privacy import epsilon_for

    _check_format(fmt)
    q, n = _rate_and_steps(rate, steps, records, batch_size, epochs)
    eps = epsilon_for(noise, q, n, delta, accountant)
    _print_accounting(fmt, {"epsilon": eps, "delta": delta, "noise_multiplier": noise, "sampling_rate": q,
                            "steps": n, "accountant": accountant})


@privacy_app.command("calibrate")
def privacy_calibrate(
    epsilon: Annotated[float, typer.Option("--epsilon", help="target epsilon")],
    rate: RateOpt = None, steps: StepsOpt = None, records: RecordsOpt = None, batch_size: BatchOpt = None,
    epochs: EpochsOpt = None, delta: DeltaOpt = 1e-5, accountant: AccountantOpt = "pld", fmt: FormatOpt = "table",
) -> None:
    """The smallest noise multiplier that keeps the steps within (epsilon, delta)."""
    from unseen.privacy import calibrate_noise, epsilon_for

    _check_format(fmt)
    q, n = _rate_and_steps(rate, steps, records, batch_size, epochs)
    noise = calibrate_noise(epsilon, delta, q, n, accountant)
    _print_accounting(fmt, {"noise_multiplier": noise, "epsilon": epsilon_for(noise, q, n, delta, accountant),
                            "target_epsilon": epsilon, "delta": delta, "sampling_rate": q, "steps": n,
                            "accountant": accountant})


def _print_accounting(fmt: str, values: dict[str, Any]) -> None:
    if fmt == "json":
        out.print_json(json.dumps(values))
        return
    table = tables.key_value_table("privacy accounting (Poisson-subsampled Gaussian, add/remove one)", values)
    out.print(table)


attack_app = typer.Typer(help="Attacks on data releases (any CSV or Parquet table).", no_args_is_help=True)
app.add_typer(attack_app, name="attack")


def _read_table(path: Path) -> Any:
    import pandas as pd

    if not path.is_file():
        raise UnseenError(f"--csv {str(path)!r} does not exist; give the path of a CSV or Parquet file.")
    frame = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path, skipinitialspace=True)
    return frame


def _show_summary(values: dict[str, Any], title: str, fmt: str, report: Path | None, name: str, note: str) -> None:
    """A one-table result: ``name``.json and .html in ``report`` if given, then JSON or a table on the terminal."""
    if report is not None:
        from unseen.report.html import write_summary

        write_summary(report, name, title, values, note)
    if fmt == "json":
        out.print_json(json.dumps(values))
    else:
        out.print(tables.key_value_table(title, values))


def _columns(frame: Any, names: list[str], option: str) -> None:
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise UnseenError(f"{option}: {missing} not in the table; its columns are {list(frame.columns)}.")


@attack_app.command("reconstruct")
def attack_reconstruct(
    csv: Annotated[Path, typer.Option("--csv", help="the table (CSV or Parquet)")],
    column: Annotated[str, typer.Option(help="the hidden column")],
    value: Annotated[str | None, typer.Option(help="the value that counts as 1 (default: the most common)")] = None,
    rows: Annotated[int, typer.Option(help="rows attacked (random sample)")] = 500,
    epsilon: Annotated[float, typer.Option(help="epsilon for the DP release of the same counts")] = 1.0,
    seed: int = 0,
    report: Annotated[Path | None, typer.Option(help="write reconstruction.json and reconstruction.html here")] = None,
    fmt: FormatOpt = "table",
) -> None:
    """Dinur-Nissim: recover a binary column from n log n exact subset counts, and from DP counts."""
    import math

    import numpy as np

    from unseen.attacks.reconstruction import attack, dp_answers, exact_answers, random_subset_queries

    _check_format(fmt)
    frame = _read_table(csv)
    _columns(frame, [column], "--column")
    target = value if value is not None else str(frame[column].astype(str).mode()[0])
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(frame), min(rows, len(frame)), replace=False)
    secret = (frame[column].astype(str).to_numpy()[sample] == target).astype(np.int64)
    queries = random_subset_queries(len(secret), max(1, int(len(secret) * math.log(len(secret)))), rng)
    exact = attack(secret, queries, exact_answers(queries, secret))
    noisy = attack(secret, queries, dp_answers(queries, secret, epsilon))
    values = {"column": column, "value_as_1": target, "rows": exact.rows, "queries": exact.queries,
              "recovered_from_exact_counts": exact.recovered_fraction,
              f"recovered_from_dp_counts_eps_{epsilon:g}": noisy.recovered_fraction,
              "majority_guess": exact.baseline_fraction}
    _show_summary(values, "reconstruction attack (Dinur-Nissim)", fmt, report, "reconstruction",
                  "Dinur-Nissim: least squares over n log n random subset counts; the DP release uses OpenDP's "
                  "discrete Laplace with the noise calibrated to the whole query set.")


@app.command()
def anonymize(
    csv: Annotated[Path, typer.Option("--csv", help="the table (CSV or Parquet)")],
    qi: Annotated[str, typer.Option(help="comma-separated quasi-identifier columns")],
    k: Annotated[int, typer.Option(help="k of k-anonymity")] = 5,
    sensitive: Annotated[str | None, typer.Option(help="sensitive column, for l-diversity and homogeneity")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write the release here (CSV)")] = None,
    targets: Annotated[int, typer.Option(help="people the linkage attacker knows")] = 2000,
    hierarchies: Annotated[Path | None, typer.Option(help="JSON: {column: {value: [ancestors, most specific first]}}")] = None,
    suppress: Annotated[float, typer.Option(help="fraction of the most outlying rows published with all QIs as *")] = 0.0,
    report: Annotated[Path | None, typer.Option(help="write anonymize.json and anonymize.html in this folder")] = None,
    fmt: FormatOpt = "table",
) -> None:
    """k-anonymize a table (Mondrian) and attack the release: linkage before/after, homogeneity."""
    import numpy as np

    from unseen.attacks.linkage import attack_release, linkage_attack, raw_classes, uniqueness
    from unseen.privacy.anonymize import information_loss, l_diversity, mondrian, t_closeness

    _check_format(fmt)
    frame = _read_table(csv)
    qis = [c.strip() for c in qi.split(",") if c.strip()]
    _columns(frame, qis + ([sensitive] if sensitive else []), "--qi/--sensitive")
    declared = None
    if hierarchies is not None:
        try:
            declared = json.loads(hierarchies.read_text())
        except (OSError, ValueError) as exc:
            raise UnseenError(f"--hierarchies {str(hierarchies)!r}: not a readable JSON file ({exc}).") from None
    try:
        release = mondrian(frame, qis, k, hierarchies=declared, suppress=suppress)
    except ValueError as exc:
        raise UnseenError(f"anonymize: {exc}") from None
    chosen = np.random.default_rng(0).choice(len(frame), min(targets, len(frame)), replace=False)
    label = sensitive or qis[0]
    before = linkage_attack(frame, raw_classes(frame, qis), chosen, label)
    after = attack_release(frame, release, chosen, label)
    values: dict[str, Any] = {
        "rows": len(frame), "unique_on_qis": uniqueness(frame, qis), "k": k,
        "smallest_class": int(release.class_sizes().min()), "information_loss": information_loss(frame, release),
        "suppressed_rows": int((release.table[qis[0]] == "*").sum()),
        "reidentification_before": before.reidentification_rate, "reidentification_after": after.reidentification_rate,
    }
    if sensitive:
        values.update({"l_diversity": l_diversity(release, sensitive), "t_closeness": t_closeness(release, sensitive),
                       "homogeneity_disclosure_after": after.attribute_disclosure})
    if output is not None:
        release.table.to_csv(output, index=False)
        values["release"] = str(output)
    _show_summary(values, f"{k}-anonymous release of {csv.name}", fmt, report, "anonymize",
                  "k-anonymity bounds linkage on the quasi-identifiers only; it is not differential privacy "
                  "(no formal guarantee), and homogeneity still discloses attributes where l-diversity fails.")


he_app = typer.Typer(help="Homomorphic encryption (CKKS): training on data the server cannot read.",
                     no_args_is_help=True)
app.add_typer(he_app, name="he")


@he_app.command("train-logreg")
def he_train_logreg(
    dataset: Annotated[str, typer.Option("--dataset", help="a binary tabular dataset: adult, heart_disease, breast_cancer")] = "heart_disease",
    iterations: Annotated[int, typer.Option("--iterations", min=1, help="gradient-descent iterations")] = 10,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="learning rate")] = 1.0,
    report: Annotated[Path | None, typer.Option("--report", help="write he_logreg.json and .html in this folder")] = None,
    fmt: FormatOpt = "table",
) -> None:
    """Logistic regression trained by a server on encrypted records, beside the same training in plaintext."""
    from unseen.crypto.he_logreg import compare
    from unseen.data import load

    _check_format(fmt)
    ds = load(dataset)
    if ds.n_classes != 2 or len(ds.input_shape) != 1:
        raise UnseenError(f"--dataset {dataset}: encrypted logistic regression needs a binary tabular dataset "
                          f"(adult, heart_disease, breast_cancer).")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, disable=fmt == "json") as bar:
        task = bar.add_task(f"encrypted training on {dataset}", total=iterations)
        values = compare(ds.train.x, ds.train.y, ds.test.x, ds.test.y, iterations=iterations, lr=lr,
                         on_iteration=lambda done, _: bar.update(task, completed=done))
    _show_summary(values, f"encrypted logistic regression on {dataset}", fmt, report, "he_logreg",
                  "CKKS (TenSEAL): the server computes gradients on ciphertexts; accuracy beside plaintext training "
                  "with the same iterations.")


@he_app.command("infer")
def he_infer(
    model: Annotated[Path, typer.Option("--model", help="a finished run folder with an HE-friendly model (he_cnn)")],
    n: Annotated[int, typer.Option("--n", min=1, help="how many test images to classify encrypted")] = 100,
    dataset: Annotated[str | None, typer.Option("--dataset", help="test images from this dataset (default: the "
                                                                   "run's; same image shape needed)")] = None,
    mode: Annotated[str, typer.Option("--mode", help="throughput (one image per slot, batches of 4,096) or latency "
                                                     "(one image per ciphertext)")] = "throughput",
    report: Annotated[Path | None, typer.Option("--report", help="write he_infer.json and .html in this folder")] = None,
    fmt: FormatOpt = "table",
) -> None:
    """Classify test images the server never sees: accuracy, agreement with plaintext, time and bytes."""
    import numpy as np

    from unseen.crypto.he_inference import infer, model_forward
    from unseen.crypto.he_latency import infer_latency

    _check_format(fmt)
    if mode not in ("throughput", "latency"):
        raise UnseenError(f"--mode {mode}: use 'throughput' or 'latency'.")
    spec, ds, net = experiment.load_trained_model(model)
    if dataset is not None and dataset != spec.data.name:
        from unseen.data import load

        other = load(dataset)
        if other.input_shape != ds.input_shape:
            raise UnseenError(f"--dataset {dataset} has inputs of shape {other.input_shape}, the model in {model} "
                              f"takes {ds.input_shape}.")
        ds = other
    images, labels = ds.test.x[:n], ds.test.y[:n]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, disable=fmt == "json") as bar:
        task = bar.add_task(f"encrypted inference ({mode})", total=len(images))
        progress = lambda done, _: bar.update(task, completed=done)  # noqa: E731
        if mode == "throughput":
            res = infer(net, ds.input_shape, images, ds.train.x[:2000], on_batch=progress)
        else:
            res = infer_latency(net, ds.input_shape, images, ds.train.x[:2000], on_image=progress)
    encrypted, plain = res["logits"].argmax(1), model_forward(net, images).argmax(1)
    values: dict[str, Any] = {
        "images": len(images), "mode": mode, "encrypted_accuracy": float(np.mean(encrypted == labels)),
        "plaintext_accuracy": float(np.mean(plain == labels)), "argmax_agreement": float(np.mean(encrypted == plain)),
    }
    if mode == "throughput":
        values.update(server_seconds=res["server_seconds"], server_ms_per_image=1e3 * res["server_seconds_per_image"],
                      client_encrypt_seconds=res["client_encrypt_seconds"],
                      upload_kb_per_image=res["upload_bytes_per_image"] / 1e3, download_bytes=res["download_bytes"])
    else:
        values.update(server_seconds_per_image_median=res["server_seconds_median"],
                      upload_kb_per_image=res["upload_bytes_per_image"] / 1e3,
                      download_kb_per_image=res["download_bytes_per_image"] / 1e3,
                      rotation_steps=" ".join(map(str, res["rotation_steps"])))
    values.update(evaluation_key_mb=res["evaluation_key_bytes"] / 1e6, plan=res["plan"].he.describe())
    _show_summary(values, f"encrypted inference ({mode})", fmt, report, "he_infer",
                  "CKKS on SEAL (TenSEAL bindings): the server evaluated the network on ciphertexts only.")


@app.command()
def version() -> None:
    """Print the unseen version."""
    from unseen import __version__

    out.print(__version__)


def main() -> None:
    """Entry point: user errors print one paragraph and exit 2; no traceback."""
    try:
        app()
    except UnseenError as exc:
        err.print(Panel(str(exc), title="[bold red]error[/]", title_align="left", border_style="red"))
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted.[/] Continue with: unseen run --resume <run folder>")
        sys.exit(130)


if __name__ == "__main__":
    main()
