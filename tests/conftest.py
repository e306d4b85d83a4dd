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
