"""Every dataset loads from the real files with the documented shapes; preprocessing sees train only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import needs
from unseen.data import DATASETS, list_datasets, load
from unseen.errors import DataError, DataUnavailableError


@needs("mnist")
def test_mnist():
    ds = load("mnist")
    assert ds.train.x.shape == (60000, 1, 28, 28) and ds.test.x.shape == (10000, 1, 28, 28)
    assert ds.train.x.dtype == np.float32 and ds.train.y.dtype == np.int64
    assert np.bincount(ds.train.y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert abs(float(ds.train.x.mean())) < 0.01  # normalised with MNIST's mean and std


@needs("adult")
def test_adult_uses_official_split_and_train_statistics():
    ds = load("adult")
    assert len(ds.train) == 32561 and len(ds.test) == 16281
    assert ds.train.y.sum() == 7841 and ds.test.y.sum() == 3846
    age = ds.feature_names.index("age")
    assert abs(ds.train.x[:, age].mean()) < 1e-4 and abs(ds.train.x[:, age].std() - 1) < 1e-3
    assert abs(ds.test.x[:, age].mean()) > 1e-4  # scaled with train statistics, not its own


@needs("heart-disease")
def test_heart_disease_has_four_hospitals():
    ds = load("heart_disease")
    assert ds.silo_names == ["Cleveland", "Hungary", "Switzerland", "VA Long Beach"]
    assert len(ds.train) + len(ds.test) == 920
    counts = np.bincount(np.concatenate([ds.train.groups, ds.test.groups]))
    assert counts.tolist() == [303, 294, 123, 200]
    for h in range(4):  # every hospital is in both splits
        assert (ds.test.groups == h).sum() > 0 and (ds.train.groups == h).sum() > 0
    assert not np.isnan(ds.train.x).any() and not np.isnan(ds.test.x).any()


@needs("femnist-leaf")
def test_femnist_writers_are_silos():
    ds = load("femnist")
    assert ds.n_classes == 62 and len(ds.silo_names) == 105
    assert len(ds.train) == 14708 and len(ds.test) == 1685
    assert set(np.unique(ds.train.groups)) == set(np.unique(ds.test.groups))


@pytest.mark.parametrize("name,n,features", [("breast_cancer", 569, 30), ("digits", 1797, 64)])
def test_bundled_sets(name, n, features):
    ds = load(name, test_fraction=0.25, seed=3)
    assert len(ds.train) + len(ds.test) == n and ds.input_shape == (features,)
    again = load(name, test_fraction=0.25, seed=3)
    assert np.array_equal(ds.test.y, again.test.y)


def test_own_csv_and_parquet_with_silos(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "age": rng.integers(20, 80, 200), "city": rng.choice(["a", "b", None], 200),
        "bank": rng.choice(["north", "south", "east"], 200), "default": rng.choice(["no", "yes"], 200),
    })
    frame.to_csv(tmp_path / "loans.csv", index=False)
    frame.to_parquet(tmp_path / "loans.parquet")
    for path in (tmp_path / "loans.csv", tmp_path / "loans.parquet"):
        ds = load("file", path=path, target="default", silo_column="bank")
        assert ds.class_names == ["no", "yes"] and ds.silo_names == ["east", "north", "south"]
        assert len(ds.train) + len(ds.test) == 200
        assert "bank" not in ds.feature_names and "default" not in ds.feature_names
        assert {"city_a", "city_b", "city_missing"} <= set(ds.feature_names)


def test_test_only_category_is_ignored_not_learned(tmp_path):
    frame = pd.DataFrame({"x": ["a", "b"] * 20 + ["c"] * 4, "y": [0, 1] * 22})
    frame.to_csv(tmp_path / "t.csv", index=False)
    ds = load("file", path=tmp_path / "t.csv", target="y", test_fraction=0.5, seed=0)
    # Categories come from training rows only; a value seen only in test maps to all zeros.
    assert set(ds.feature_names) <= {"x_a", "x_b", "x_c"}


def test_bad_own_file_errors(tmp_path):
    (tmp_path / "d.csv").write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(DataError, match="not a column"):
        load("file", path=tmp_path / "d.csv", target="label")
    with pytest.raises(DataError, match="does not exist"):
        load("file", path=tmp_path / "missing.csv", target="a")
    with pytest.raises(DataError, match="Did you mean 'mnist'"):
        load("mnsit")


def test_fashion_mnist_missing_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("UNSEEN_DATA_DIR", str(tmp_path))
    with pytest.raises(DataUnavailableError) as info:
        load("fashion_mnist")
    assert "fashion-mnist/" in str(info.value) and str(tmp_path) in str(info.value)


def test_list_datasets_reports_availability(tmp_path, monkeypatch):
    monkeypatch.setenv("UNSEEN_DATA_DIR", str(tmp_path))
    status = {s.name: s for s in list_datasets()}
    assert set(status) == set(DATASETS)
    assert status["breast_cancer"].available and not status["mnist"].available
    assert str(tmp_path) in status["mnist"].location and "missing mnist/" in status["mnist"].location
