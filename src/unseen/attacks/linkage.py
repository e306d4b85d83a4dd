"""Linkage and homogeneity attacks: what an attacker with auxiliary data learns from a released table.

Linkage (Sweeney 2002): the attacker knows some people's quasi-identifiers (from a voter roll, a
social profile) and looks them up in the release. A person whose QIs match exactly one released row
is re-identified; with several matches the attacker guesses among them. Homogeneity (Machanavajjhala
et al. 2007): in a k-anonymous release, if everyone in the person's equivalence class shares the
sensitive value, the attacker learns it without re-identifying anyone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from unseen.privacy.anonymize import Anonymized

THREAT_MODEL = ("The attacker knows the quasi-identifiers of people they target (auxiliary data) and "
                "that those people are in the released table.")


def uniqueness(frame: pd.DataFrame, quasi_identifiers: list[str]) -> float:
    """Share of rows whose QI combination is unique in ``frame``."""
    counts = frame.groupby(quasi_identifiers, dropna=False)[quasi_identifiers[0]].transform("size")
    return float((counts == 1).mean())


@dataclass(frozen=True)
class LinkageResult:
    targets: int
    reidentification_rate: float  # expected share of targets the attacker pins to their own row
    unique_matches: float  # share of targets matching exactly one released row
    attribute_disclosure: float  # share of targets whose sensitive value is certain from the release

    def to_dict(self) -> dict[str, float]:
        return {"targets": self.targets, "reidentification_rate": self.reidentification_rate,
                "unique_matches": self.unique_matches, "attribute_disclosure": self.attribute_disclosure}


def linkage_attack(original: pd.DataFrame, classes: np.ndarray, targets: np.ndarray, sensitive: str) -> LinkageResult:
    """Attack a release in which row i belongs to equivalence class ``classes[i]``.

    For the raw table (no anonymization), pass the classes of identical QI combinations (see
    :func:`raw_classes`). ``targets`` are row indices the attacker has auxiliary QIs for; each target's
    candidates are the rows of its class (the rows its QIs are consistent with).
    """
    sizes = np.bincount(classes)
    target_sizes = sizes[classes[targets]]
    homogeneous = original.groupby(classes)[sensitive].nunique().to_numpy() == 1
    return LinkageResult(
        targets=len(targets),
        reidentification_rate=float(np.mean(1.0 / target_sizes)),  # uniform guess among candidates
        unique_matches=float(np.mean(target_sizes == 1)),
        attribute_disclosure=float(np.mean(homogeneous[classes[targets]])),
    )


def raw_classes(frame: pd.DataFrame, quasi_identifiers: list[str]) -> np.ndarray:
    """Equivalence classes of the unmodified table: rows with identical QIs."""
    return frame.groupby(quasi_identifiers, dropna=False).ngroup().to_numpy()


def attack_release(original: pd.DataFrame, release: Anonymized, targets: np.ndarray, sensitive: str) -> LinkageResult:
    return linkage_attack(original, release.classes, targets, sensitive)
