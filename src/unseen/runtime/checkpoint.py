"""Checkpoints: everything needed to continue a run exactly where it stopped.

Written atomically (temporary file, then rename), so a run killed mid-write leaves the previous
checkpoint intact. The last ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from unseen.errors import CheckpointError

_NAME = re.compile(r"round-(\d+)\.pt$")


def save_checkpoint(folder: Path, round_index: int, state: dict[str, Any], keep: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"round-{round_index:05d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if _NAME.search(p.name)), key=lambda p: int(_NAME.search(p.name).group(1)))  # type: ignore[union-attr]


def load_latest(folder: Path) -> dict[str, Any] | None:
    """The newest checkpoint in ``folder``, or None if there is none yet."""
    checkpoints = list_checkpoints(folder)
    if not checkpoints:
        return None
    try:
        return torch.load(checkpoints[-1], map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file must name itself, not surface torch internals
        raise CheckpointError(f"cannot read checkpoint {checkpoints[-1]}: {exc}. Delete it to resume from the one before.") from exc
