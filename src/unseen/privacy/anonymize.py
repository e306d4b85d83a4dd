"""k-anonymity by Mondrian generalization (LeFevre et al. 2006), with l-diversity and t-closeness checks.

Quasi-identifiers (QIs) are the columns an attacker can learn elsewhere (age, sex, ZIP...). Mondrian
splits the table recursively at the median of the widest QI while both halves keep at least ``k``
rows; each final partition (an equivalence class) publishes its QIs generalized: numeric columns as
the ``[min, max]`` range, categorical ones as the set of values present. Categorical columns are
split in code order (the "ordered categorical" relaxation; no hierarchy needed). No formal privacy
guarantee: k-anonymity bounds linkage by QIs only, and fails against homogeneity (see
:mod:`unseen.attacks.linkage`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Anonymized:
    table: pd.DataFrame  # generalized QIs (strings) plus the other columns, one row per original row
    classes: np.ndarray  # equivalence-class id of each row
    k: int
    quasi_identifiers: tuple[str, ...]

    def class_sizes(self) -> np.ndarray:
        return np.bincount(self.classes)


def _codes(frame: pd.DataFrame, qis: list[str]) -> tuple[np.ndarray, list[bool]]:
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in qis]
    cols = [frame[c].to_numpy(np.float64) if num else pd.Categorical(frame[c].astype(str)).codes.astype(np.float64)
            for c, num in zip(qis, numeric, strict=True)]
    return np.column_stack(cols), numeric


def mondrian(frame: pd.DataFrame, quasi_identifiers: list[str], k: int) -> Anonymized:
    """A k-anonymous generalization of ``frame`` on ``quasi_identifiers``."""
    if k < 1 or k > len(frame):
        raise ValueError(f"k must be between 1 and the number of rows ({len(frame)}), got {k}")
    values, numeric = _codes(frame, quasi_identifiers)
    spans = np.ptp(values, axis=0)
    spans[spans == 0] = 1.0
    classes = np.empty(len(frame), dtype=np.int64)
    stack = [np.arange(len(frame))]
    next_id = 0
    while stack:
        rows = stack.pop()
        part = values[rows]
        for dim in np.argsort(-np.ptp(part, axis=0) / spans):  # widest (normalized) dimension first
            median = np.median(part[:, dim])
            left = part[:, dim] <= median
            if left.all():  # many ties at the median: split strictly below it instead
                left = part[:, dim] < median
            if left.sum() >= k and (~left).sum() >= k:
                stack += [rows[left], rows[~left]]
                break
        else:
            classes[rows] = next_id
            next_id += 1
    table = frame.copy()
    for c, num in zip(quasi_identifiers, numeric, strict=True):
        grouped = frame[c].groupby(classes)
        if num:
            lo, hi = grouped.transform("min"), grouped.transform("max")
            table[c] = [str(a) if a == b else f"[{a}-{b}]" for a, b in zip(lo, hi, strict=True)]
        else:
            labels = grouped.agg(lambda s: "|".join(sorted(set(map(str, s)))))
            table[c] = labels.to_numpy()[classes]
    return Anonymized(table, classes, k, tuple(quasi_identifiers))


def l_diversity(anonymized: Anonymized, sensitive: str) -> int:
    """The smallest number of distinct sensitive values in any equivalence class (l of l-diversity)."""
    return int(anonymized.table.groupby(anonymized.classes)[sensitive].nunique().min())


def t_closeness(anonymized: Anonymized, sensitive: str) -> float:
    """The largest total-variation distance between a class's sensitive distribution and the whole table's.

    (Total variation is the earth mover's distance for unordered categories, as in Li et al. 2007.)
    """
    overall = anonymized.table[sensitive].value_counts(normalize=True)
    worst = 0.0
    for _, group in anonymized.table.groupby(anonymized.classes)[sensitive]:
        local = group.value_counts(normalize=True).reindex(overall.index, fill_value=0.0)
        worst = max(worst, 0.5 * float((local - overall).abs().sum()))
    return worst


def information_loss(frame: pd.DataFrame, anonymized: Anonymized) -> float:
    """Mean normalized width of the generalized QIs (0 = nothing generalized, 1 = everything suppressed)."""
    values, _ = _codes(frame, list(anonymized.quasi_identifiers))
    spans = np.ptp(values, axis=0)
    spans[spans == 0] = 1.0
    widths = pd.DataFrame(values).groupby(anonymized.classes).transform(lambda s: s.max() - s.min()).to_numpy()
    return float((widths / spans).mean())
