"""k-anonymity by Mondrian generalization (LeFevre et al. 2006), with l-diversity and t-closeness checks.

Quasi-identifiers (QIs) are the columns an attacker can learn elsewhere (age, sex, ZIP...). Mondrian
splits the table recursively at the median of the widest QI while both halves keep at least ``k``
rows; each final partition (an equivalence class) publishes its QIs generalized: numeric columns as
the ``[min, max]`` range, categorical ones as the set of values present. Categorical columns are
split in code order (the "ordered categorical" relaxation). With a declared hierarchy for a
categorical QI (value -> its ancestors, most specific first), its values are ordered so that
siblings are adjacent and a class publishes the lowest common ancestor of its values instead of the
set ("Europe" rather than "France|Germany"). With ``suppress`` up to that fraction of rows, the
most outlying ones (far from the median on every QI) are published with all QIs as "*" (in one class
of at least ``k``), which spares the rest from wide generalizations. No formal privacy
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


Hierarchy = dict[str, list[str]]  # value -> its ancestors, most specific first (the root last)


def _codes(frame: pd.DataFrame, qis: list[str], hierarchies: dict[str, Hierarchy] | None = None
           ) -> tuple[np.ndarray, list[bool]]:
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in qis]
    cols = []
    for c, num in zip(qis, numeric, strict=True):
        if num:
            cols.append(frame[c].to_numpy(np.float64))
            continue
        values = [str(v) for v in frame[c]]
        h = (hierarchies or {}).get(c)
        # With a hierarchy, order values by their path from the root, so that siblings are adjacent.
        order = sorted(set(values), key=lambda v: ([*reversed(h.get(v, [])), v] if h else [v]))
        cols.append(pd.Categorical(values, categories=order).codes.astype(np.float64))
    return np.column_stack(cols), numeric


def _lowest_common_ancestor(values: set[str], h: Hierarchy) -> str:
    if len(values) == 1:
        return next(iter(values))
    paths = [[v, *h.get(v, ["*"])] for v in values]
    common = set(paths[0]).intersection(*paths[1:])
    return next((a for a in paths[0] if a in common), "*")


def mondrian(frame: pd.DataFrame, quasi_identifiers: list[str], k: int, *,
             hierarchies: dict[str, Hierarchy] | None = None, suppress: float = 0.0) -> Anonymized:
    """A k-anonymous generalization of ``frame`` on ``quasi_identifiers``."""
    if k < 1 or k > len(frame):
        raise ValueError(f"k must be between 1 and the number of rows ({len(frame)}), got {k}")
    if not 0 <= suppress < 1:
        raise ValueError(f"suppress must be a fraction in [0, 1), got {suppress}")
    for c in hierarchies or {}:
        if c not in quasi_identifiers:
            raise ValueError(f"a hierarchy is declared for {c!r}, which is not a quasi-identifier")
    values, numeric = _codes(frame, quasi_identifiers, hierarchies)
    suppressed = np.zeros(len(frame), dtype=bool)
    if suppress > 0:
        spread = np.ptp(values, axis=0)
        spread[spread == 0] = 1.0
        outlying = (np.abs(values - np.median(values, axis=0)) / spread).sum(axis=1)
        count = int(suppress * len(frame))
        if 0 < count < k:
            count = k  # a suppressed class must hold k rows too
        if count and len(frame) - count >= k:
            suppressed[np.argsort(-outlying, kind="stable")[:count]] = True
    spans = np.ptp(values, axis=0)
    spans[spans == 0] = 1.0
    classes = np.empty(len(frame), dtype=np.int64)
    stack = [np.flatnonzero(~suppressed)]
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
    if suppressed.any():
        classes[suppressed] = next_id
    table = frame.copy()
    for c, num in zip(quasi_identifiers, numeric, strict=True):
        grouped = frame[c].groupby(classes)
        if num:
            lo, hi = grouped.transform("min"), grouped.transform("max")
            table[c] = [str(a) if a == b else f"[{a}-{b}]" for a, b in zip(lo, hi, strict=True)]
        else:
            h = (hierarchies or {}).get(c)
            labels = {cls: (_lowest_common_ancestor(set(map(str, vals)), h) if h else "|".join(sorted(set(map(str, vals)))))
                      for cls, vals in grouped}
            table[c] = [labels[cls] for cls in classes]
        if suppressed.any():
            table[c] = table[c].astype(object)
            table.loc[suppressed, c] = "*"
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
