"""Anonymization and the attacks that break naive releases, on the real Adult file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DATA_DIR, needs
from unseen.attacks.linkage import attack_release, linkage_attack, raw_classes, uniqueness
from unseen.data.datasets import ADULT_COLUMNS
from unseen.privacy.anonymize import information_loss, l_diversity, mondrian, t_closeness

pytestmark = needs("adult")
QIS = ["age", "sex", "race", "native-country", "education"]


@pytest.fixture(scope="module")
def adult():
    frame = pd.read_csv(DATA_DIR / "adult" / "adult.data", header=None, names=ADULT_COLUMNS,
                        skipinitialspace=True, na_values="?")
    targets = np.random.default_rng(0).choice(len(frame), 2000, replace=False)
    return frame, targets


def test_quasi_identifiers_single_people_out(adult):
    frame, targets = adult
    assert uniqueness(frame, QIS) == pytest.approx(0.1075, abs=1e-3)  # measured: 10.75% unique
    raw = linkage_attack(frame, raw_classes(frame, QIS), targets, "income")
    assert raw.unique_matches > 0.1 and raw.reidentification_rate > 0.15


@pytest.mark.parametrize("k", [5, 10])
def test_k_anonymity_bounds_linkage(adult, k):
    frame, targets = adult
    release = mondrian(frame, QIS, k)
    assert release.class_sizes().min() >= k
    result = attack_release(frame, release, targets, "income")
    assert result.unique_matches == 0 and result.reidentification_rate <= 1 / k
    assert information_loss(frame, release) < 0.1  # most rows keep precise QIs


def test_homogeneity_attack_beats_k_anonymity_without_l_diversity(adult):
    frame, targets = adult
    release = mondrian(frame, QIS, 5)
    assert l_diversity(release, "income") == 1  # some classes share one income value
    assert attack_release(frame, release, targets, "income").attribute_disclosure > 0.1
    assert t_closeness(release, "income") > 0.5


def test_generalized_values_cover_the_originals():
    frame = pd.DataFrame({"age": [20, 21, 22, 40, 41, 42], "sex": ["F", "M", "F", "M", "M", "F"], "y": [0] * 6})
    release = mondrian(frame, ["age", "sex"], 3)
    assert set(release.table["age"]) == {"[20-22]", "[40-42]"} and set(release.table["sex"]) == {"F|M"}
    with pytest.raises(ValueError):
        mondrian(frame, ["age"], 7)


def test_hierarchies_publish_common_ancestors_and_suppression_spares_the_rest():
    frame = pd.DataFrame({"age": [30, 31, 32, 33, 60, 61, 62, 63, 95],
                          "country": ["France", "Germany", "France", "Germany", "Peru", "Chile", "Peru", "Chile",
                                      "Japan"]})
    hierarchy = {"country": {"France": ["Europe", "*"], "Germany": ["Europe", "*"], "Peru": ["America", "*"],
                             "Chile": ["America", "*"], "Japan": ["Asia", "*"]}}
    plain = mondrian(frame, ["age", "country"], 2)
    assert any("|" in v for v in plain.table["country"])  # without a hierarchy: sets of values
    release = mondrian(frame, ["age", "country"], 2, hierarchies=hierarchy)
    assert set(release.table["country"]) <= {"Europe", "America", "Asia", "*", "France", "Germany", "Peru", "Chile"}
    assert release.class_sizes().min() >= 2
    spared = mondrian(frame, ["age", "country"], 2, hierarchies=hierarchy, suppress=0.2)
    stars = spared.table["age"] == "*"
    assert stars.sum() == 2 and spared.table.loc[stars, "country"].eq("*").all()  # one class of k rows
    assert spared.class_sizes().min() >= 2 and (spared.classes[stars.to_numpy()] == spared.classes.max()).all()
    with pytest.raises(ValueError, match="not a quasi-identifier"):
        mondrian(frame, ["age"], 2, hierarchies=hierarchy)
