"""Shared test setup: real datasets from ../shared/data unless UNSEEN_DATA_DIR says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
os.environ.setdefault("UNSEEN_DATA_DIR", str(SHARED_DATA))
DATA_DIR = Path(os.environ["UNSEEN_DATA_DIR"])


def needs(*folders: str) -> pytest.MarkDecorator:
    """Skip (with the reason) when a real dataset folder is absent from the data directory."""
    missing = [f for f in folders if not (DATA_DIR / f).is_dir()]
    return pytest.mark.skipif(bool(missing), reason=f"{missing} not in {DATA_DIR}")


class Interrupted(Exception):
    """Raised from a round hook to stop a run as a crash would (no results.json is written)."""


def run_and_interrupt(raw: dict, output_dir: Path, after_round: int) -> Path:
    """Start a run from ``raw``, stop it after ``after_round`` and return its (interrupted) run folder."""
    from unseen.experiment import Hooks, parse_spec, run

    def stop(metrics: dict) -> None:
        if metrics["round"] == after_round:
            raise Interrupted

    with pytest.raises(Interrupted):
        run(parse_spec(raw), output_dir=output_dir, hooks=Hooks(on_round=stop))
    (folder,) = list(output_dir.iterdir())
    return folder
