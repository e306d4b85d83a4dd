"""`unseen query SPEC.toml`: a session of DP queries on a table, described in TOML and validated.

```toml
epsilon = 3.0                 # the session's budget; a query that would exceed it is refused
confidence = 0.95
[table]
path = "adult.data"           # CSV or Parquet
columns = ["age", "workclass", ...]   # for a file without a header row
[[query]]
kind = "mean"                 # count | sum | mean | histogram | quantile
column = "age"
bounds = [17, 90]
epsilon = 1.0
```
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from unseen.errors import SpecError
from unseen.privacy.guarantee import PrivacyGuarantee
from unseen.privacy.queries import BudgetExceeded, QuerySession


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TableSpec(_Strict):
    path: str
    columns: list[str] | None = Field(None, description="column names for a file without a header row")
    person: str | None = Field(None, description="column identifying a person who may own several rows")
    max_rows: int = Field(1, ge=1, description="rows kept per person (contribution limit); needs person")


class _Query(_Strict):
    epsilon: float = Field(gt=0)


class CountQuery(_Query):
    kind: Literal["count"]


class SumQuery(_Query):
    kind: Literal["sum", "mean", "variance"]
    column: str
    bounds: tuple[float, float]


class HistogramQuery(_Query):
    kind: Literal["histogram"]
    columns: list[str] = Field(min_length=1)
    categories: list[Any] = Field(min_length=1, description="declared bins (lists for several columns)")


class QuantileQuery(_Query):
    kind: Literal["quantile"]
    column: str
    q: float = Field(gt=0, lt=1)
    candidates: list[float] = Field(min_length=2)


Query = Annotated[CountQuery | SumQuery | HistogramQuery | QuantileQuery, Field(discriminator="kind")]


class QuerySpec(_Strict):
    epsilon: float = Field(gt=0, description="the session's budget")
    after_run: str | None = Field(None, description="a finished DP run on the same people: its epsilon is charged "
                                  "first, so the model and the statistics share the budget")
    confidence: float = Field(0.95, gt=0, lt=1)
    table: TableSpec
    query: list[Query] = Field(min_length=1)


def load_query_spec(path: str | Path) -> QuerySpec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path} does not exist: give a query spec (TOML); see docs/statistics.md.")
    try:
        return QuerySpec.model_validate(tomllib.loads(path.read_text()))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path} is not valid TOML: {exc}") from None
    except ValidationError as exc:
        problems = [f"  - {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise SpecError(f"{path} has {len(problems)} problem(s):\n" + "\n".join(problems)) from None


def read_table(table: TableSpec, base: Path) -> pd.DataFrame:
    path = Path(table.path)
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise SpecError(f"table.path = {table.path!r} does not exist (looked at {path}).")
    header = None if table.columns else "infer"
    if path.suffix.lower() in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, header=header, names=table.columns, skipinitialspace=True)
    return frame


def run_guarantee(run_dir: str | Path, base: Path) -> PrivacyGuarantee:
    """The worst formal guarantee of a finished run (what its model already spent)."""
    path = Path(run_dir)
    path = path if path.is_absolute() else base / path
    results = path / "results.json"
    if not results.is_file():
        raise SpecError(f"after_run = {run_dir!r}: no results.json there (looked in {path}).")
    guarantees = [PrivacyGuarantee(**g) for g in json.loads(results.read_text())["privacy"]["guarantees"]]
    formal = [g for g in guarantees if g.is_formal]
    if not formal:
        return guarantees[0]
    return max(formal, key=lambda g: g.epsilon)  # type: ignore[arg-type, return-value]


def run_queries(spec: QuerySpec, frame: pd.DataFrame, prior: PrivacyGuarantee | None = None) -> dict[str, Any]:
    """Answer the queries in order; a query over the budget is refused and reported, the rest still run."""
    session = QuerySession(frame, spec.epsilon, spec.confidence, prior=prior, person=spec.table.person,
                           max_rows=spec.table.max_rows)
    answers: list[dict[str, Any]] = []
    for q in spec.query:
        try:
            if q.kind == "count":
                a = session.count(q.epsilon)
            elif q.kind == "sum":
                a = session.sum(q.column, q.bounds, q.epsilon)
            elif q.kind == "mean":
                a = session.mean(q.column, q.bounds, q.epsilon)
            elif q.kind == "variance":
                a = session.variance(q.column, q.bounds, q.epsilon)
            elif q.kind == "histogram":
                cats = [tuple(c) if isinstance(c, list) else c for c in q.categories]
                a = session.histogram(q.columns, cats, q.epsilon)
            else:
                a = session.quantile(q.column, q.q, q.candidates, q.epsilon)
        except BudgetExceeded as exc:
            answers.append({"query": q.kind, "refused": str(exc)})
            continue
        answers.append({"query": a.query, "value": a.value, "interval": list(a.interval),
                        "confidence": a.confidence, "epsilon": a.guarantee.epsilon})
    return {"answers": answers, "budget": spec.epsilon, "spent": session.spent,
            "prior_epsilon": prior.epsilon if prior is not None else None,
            "guarantee": session.guarantee().to_dict()}


__all__ = ["QuerySpec", "load_query_spec", "read_table", "run_guarantee", "run_queries"]
