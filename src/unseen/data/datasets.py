"""Dataset loaders: every dataset unseen knows, returned as train and test arrays.

``load(name)`` gives a :class:`Dataset` with float32 features, int64 labels and, where the data has
natural silos (hospitals, writers, a silo column in your own file), the silo of each row. Tabular
preprocessing is fitted on the training split only.
"""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from unseen.data._femnist_checksums import FEMNIST_SHA256
from unseen.data.sources import RemoteFile, data_root, fetch, is_available, local_mirror
from unseen.data.tabular import fit_transform_tables
from unseen.errors import DataError


@dataclass
class Split:
    """Features ``x`` (float32), labels ``y`` (int64) and optional silo ids ``groups`` (int64)."""

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    """A loaded dataset: train and test splits plus what a model needs to know about them."""

    name: str
    train: Split
    test: Split
    n_classes: int
    input_shape: tuple[int, ...]
    class_names: list[str] = field(default_factory=list)
    feature_names: list[str] = field(default_factory=list)
    silo_names: list[str] | None = None
    pixel_scale: tuple[float, float] | None = None  # images: (mean, std) of the standardisation of [0, 1] pixels

    @property
    def has_silos(self) -> bool:
        return self.train.groups is not None


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    files: tuple[RemoteFile, ...]
    loader: Callable[..., Dataset]
    silos: bool = False


# --- MNIST-format image sets ------------------------------------------------------------------

_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_MNIST_SHA = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FASHION_SHA = {
    "train-images-idx3-ubyte.gz": "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
    "train-labels-idx1-ubyte.gz": "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
    "t10k-images-idx3-ubyte.gz": "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
    "t10k-labels-idx1-ubyte.gz": "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
}
MNIST_FILES = tuple(
    RemoteFile(f"mnist/{n}", sha, tuple(u + n for u in _MNIST_URLS)) for n, sha in _MNIST_SHA.items()
)
FASHION_FILES = tuple(RemoteFile(f"fashion-mnist/{n}", sha, (_FASHION_URL + n,)) for n, sha in _FASHION_SHA.items())


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format) into a uint8 array."""
    raw = gzip.open(path).read()
    magic = struct.unpack(">I", raw[:4])[0]
    if magic == 2051:
        n, rows, cols = struct.unpack(">III", raw[4:16])
        return np.frombuffer(raw, np.uint8, offset=16).reshape(n, rows, cols)
    if magic == 2049:
        return np.frombuffer(raw, np.uint8, offset=8)
    raise DataError(f"{path} is not an IDX file (magic number {magic}); replace it with the original file.")


def _idx_dataset(name: str, files: tuple[RemoteFile, ...], mean: float, std: float, classes: list[str]) -> Dataset:
    paths = {f.path.split("/")[-1]: fetch(f) for f in files}

    def images(key: str) -> np.ndarray:
        x = read_idx(paths[key]).astype(np.float32) / 255.0
        return ((x - mean) / std)[:, None, :, :]

    train = Split(images("train-images-idx3-ubyte.gz"), read_idx(paths["train-labels-idx1-ubyte.gz"]).astype(np.int64))
    test = Split(images("t10k-images-idx3-ubyte.gz"), read_idx(paths["t10k-labels-idx1-ubyte.gz"]).astype(np.int64))
    return Dataset(name, train, test, 10, (1, 28, 28), classes, pixel_scale=(mean, std))


def _load_mnist(**_: object) -> Dataset:
    return _idx_dataset("mnist", MNIST_FILES, 0.1307, 0.3081, [str(i) for i in range(10)])


def _load_fashion(**_: object) -> Dataset:
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    return _idx_dataset("fashion_mnist", FASHION_FILES, 0.2860, 0.3530, names)


# --- FEMNIST (LEAF per-writer shards) ---------------------------------------------------------

FEMNIST_FILES = tuple(RemoteFile(f"femnist-leaf/{p}", sha) for p, sha in sorted(FEMNIST_SHA256.items()))


_FEMNIST_SCALE = (0.1307, 0.3081)  # MNIST's standardisation: FEMNIST is inverted to MNIST's convention


def _load_femnist(**_: object) -> Dataset:
    writers: dict[str, int] = {}
    splits = {}
    for part in ("train", "test"):
        xs, ys, gs = [], [], []
        for f in FEMNIST_FILES:
            if f"/{part}/" not in f.path:
                continue
            shard = json.load(gzip.open(fetch(f)))
            for user in shard["users"]:
                data = shard["user_data"][user]
                gid = writers.setdefault(user, len(writers))
                xs.append(np.asarray(data["x"], dtype=np.float32))
                ys.append(np.asarray(data["y"], dtype=np.int64))
                gs.append(np.full(len(data["y"]), gid, dtype=np.int64))
        # LEAF stores 1.0 as white background; invert to MNIST's convention (ink is high).
        x = (1.0 - np.concatenate(xs)).reshape(-1, 1, 28, 28)
        splits[part] = Split((x - _FEMNIST_SCALE[0]) / _FEMNIST_SCALE[1], np.concatenate(ys), np.concatenate(gs))
    classes = [str(i) for i in range(10)] + [chr(c) for c in range(65, 91)] + [chr(c) for c in range(97, 123)]
    return Dataset("femnist", splits["train"], splits["test"], 62, (1, 28, 28), classes,
                   silo_names=list(writers), pixel_scale=_FEMNIST_SCALE)


# --- Tabular sets -----------------------------------------------------------------------------

_UCI = "https://archive.ics.uci.edu/ml/machine-learning-databases/"
ADULT_FILES = (
    RemoteFile("adult/adult.data", "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
               (_UCI + "adult/adult.data",)),
    RemoteFile("adult/adult.test", "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05",
               (_UCI + "adult/adult.test",)),
)
ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
                 "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
                 "native-country", "income"]

HEART_HOSPITALS = {"cleveland": "Cleveland", "hungarian": "Hungary", "switzerland": "Switzerland", "va": "VA Long Beach"}
_HEART_SHA = {
    "cleveland": "a74b7efa387bc9d108d7d0115d831fe9b414b29ae7124f331b622b4efa0427c8",
    "hungarian": "d1ad108f785768cd3d7e82dc522e6f5a61eea93cccfb3a46ee8076f73fc3d796",
    "switzerland": "834a405ccf5b66ab4056bb77794adc8df0b7125186454c0a1d002d33c6c3b314",
    "va": "e7c93d8d0d2acdadfa4c5e8de768e2191e7f618b952e29623f1f0d5949ff6b8f",
}
HEART_FILES = tuple(
    RemoteFile(f"heart-disease/processed.{h}.data", sha, (f"{_UCI}heart-disease/processed.{h}.data",))
    for h, sha in _HEART_SHA.items()
)
HEART_COLUMNS = ["age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak",
                 "slope", "ca", "thal", "num"]
HEART_CATEGORICAL = ["cp", "restecg", "slope", "thal"]


def _split_table(
    frame: pd.DataFrame, y: np.ndarray, groups: np.ndarray | None, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test row indices; within each silo when there are silos."""
    strata = y if groups is None else groups * (int(y.max()) + 1) + y
    # Strata with a single row cannot be split both ways; fall back to silo (or no) stratification.
    _, counts = np.unique(strata, return_counts=True)
    if counts.min() < 2:
        strata = groups if groups is not None else None
    idx = np.arange(len(frame))
    try:
        return train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=strata)
    except ValueError as exc:
        raise DataError(f"cannot split {len(frame)} rows into train and test ({exc}); adjust data.test_fraction.") from exc


def _tabular_dataset(
    name: str,
    frame: pd.DataFrame,
    y: np.ndarray,
    class_names: list[str],
    *,
    groups: np.ndarray | None = None,
    silo_names: list[str] | None = None,
    categorical: list[str] | None = None,
    test_fraction: float,
    seed: int,
) -> Dataset:
    tr, te = _split_table(frame, y, groups, test_fraction, seed)
    x_train, x_test, features = fit_transform_tables(frame.iloc[tr], frame.iloc[te], categorical)
    g_tr = None if groups is None else groups[tr]
    g_te = None if groups is None else groups[te]
    return Dataset(
        name, Split(x_train, y[tr], g_tr), Split(x_test, y[te], g_te), len(class_names),
        (x_train.shape[1],), class_names, features, silo_names,
    )


def _load_adult(**_: object) -> Dataset:
    train_path, test_path = (fetch(f) for f in ADULT_FILES)
    read = dict(header=None, names=ADULT_COLUMNS, skipinitialspace=True, na_values="?")
    train = pd.read_csv(train_path, **read)
    test = pd.read_csv(test_path, skiprows=1, **read)  # adult.test starts with "|1x3 Cross validator"
    y_train = (train.pop("income").str.rstrip(".") == ">50K").to_numpy(np.int64)
    y_test = (test.pop("income").str.rstrip(".") == ">50K").to_numpy(np.int64)
    x_train, x_test, features = fit_transform_tables(train, test)
    return Dataset("adult", Split(x_train, y_train), Split(x_test, y_test), 2, (x_train.shape[1],),
                   ["<=50K", ">50K"], features)


def _load_heart(*, test_fraction: float = 0.25, seed: int = 0, **_: object) -> Dataset:
    frames = []
    for i, f in enumerate(HEART_FILES):
        frame = pd.read_csv(fetch(f), header=None, names=HEART_COLUMNS, na_values="?")
        frame["hospital"] = i
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    y = (table.pop("num") > 0).to_numpy(np.int64)
    groups = table.pop("hospital").to_numpy(np.int64)
    return _tabular_dataset("heart_disease", table, y, ["no disease", "disease"], groups=groups,
                            silo_names=list(HEART_HOSPITALS.values()), categorical=HEART_CATEGORICAL,
                            test_fraction=test_fraction, seed=seed)


def _load_breast_cancer(*, test_fraction: float = 0.25, seed: int = 0, **_: object) -> Dataset:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    return _tabular_dataset("breast_cancer", bunch.data, bunch.target.to_numpy(np.int64),
                            [str(n) for n in bunch.target_names], test_fraction=test_fraction, seed=seed)


def _load_digits(*, test_fraction: float = 0.25, seed: int = 0, **_: object) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits(as_frame=True)
    return _tabular_dataset("digits", bunch.data, bunch.target.to_numpy(np.int64),
                            [str(i) for i in range(10)], test_fraction=test_fraction, seed=seed)


def load_table(
    path: str | Path,
    target: str,
    *,
    silo_column: str | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> Dataset:
    """Load your own CSV or Parquet file: ``target`` names the label column, ``silo_column`` the silo."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.path = {str(path)!r} does not exist; give the path of a CSV or Parquet file.")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame = pd.read_csv(path)
    elif suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    else:
        raise DataError(f"data.path = {str(path)!r}: unseen reads .csv and .parquet files, not {suffix or 'this'}.")
    for role, column in (("data.target", target), ("data.silo_column", silo_column)):
        if column is not None and column not in frame.columns:
            raise DataError(f"{role} = {column!r} is not a column of {path.name}; its columns are {list(frame.columns)}.")
    frame = frame.dropna(subset=[target])
    labels = frame.pop(target)
    classes = sorted(labels.unique().tolist(), key=str)
    if len(classes) < 2:
        raise DataError(f"data.target = {target!r} has a single value in {path.name}; a classifier needs two or more.")
    y = labels.map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    groups = silo_names = None
    if silo_column is not None:
        silo = frame.pop(silo_column).astype(str)
        silo_names = sorted(silo.unique().tolist())
        groups = silo.map({s: i for i, s in enumerate(silo_names)}).to_numpy(np.int64)
    return _tabular_dataset(path.stem, frame.reset_index(drop=True), y, [str(c) for c in classes],
                            groups=groups, silo_names=silo_names, test_fraction=test_fraction, seed=seed)


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("breast_cancer", "Wisconsin breast cancer, 569 patients (ships with scikit-learn)", (),
                    _load_breast_cancer),
        DatasetInfo("digits", "8x8 handwritten digits, 1,797 images (ships with scikit-learn)", (), _load_digits),
        DatasetInfo("heart_disease", "UCI heart disease, 920 patients in 4 hospitals", HEART_FILES, _load_heart,
                    silos=True),
        DatasetInfo("adult", "UCI Adult census income, 48,842 people", ADULT_FILES, _load_adult),
        DatasetInfo("mnist", "MNIST handwritten digits, 70,000 images", MNIST_FILES, _load_mnist),
        DatasetInfo("fashion_mnist", "Fashion-MNIST clothing images, 70,000 images", FASHION_FILES, _load_fashion),
        DatasetInfo("femnist", "FEMNIST (LEAF), 105 writers, 62 classes", FEMNIST_FILES, _load_femnist,
                    silos=True),
    )
}
FILE_DATASET = "file"


def load(
    name: str,
    *,
    path: str | Path | None = None,
    target: str | None = None,
    silo_column: str | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> Dataset:
    """Load a dataset by name, or your own table with ``name="file"``, ``path`` and ``target``.

    ``test_fraction`` and ``seed`` set the stratified test split of datasets without an official one.
    """
    if name == FILE_DATASET:
        if path is None or target is None:
            raise DataError("name='file' needs path= (a CSV or Parquet file) and target= (the label column).")
        return load_table(path, target, silo_column=silo_column, test_fraction=test_fraction, seed=seed)
    if name not in DATASETS:
        from difflib import get_close_matches

        near = get_close_matches(name, DATASETS, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise DataError(f"unknown dataset {name!r}.{hint} Known: {', '.join(DATASETS)}, or 'file' for your own CSV/Parquet.")
    return DATASETS[name].loader(test_fraction=test_fraction, seed=seed)


@dataclass(frozen=True)
class DatasetStatus:
    name: str
    description: str
    available: bool
    location: str


def list_datasets() -> list[DatasetStatus]:
    """Every known dataset, whether its files are present locally, and where unseen looked."""
    root = data_root()
    where = f"{root} ({'UNSEEN_DATA_DIR' if local_mirror() else 'download cache'})"
    out = []
    for info in DATASETS.values():
        if not info.files:
            out.append(DatasetStatus(info.name, info.description, True, "bundled with scikit-learn"))
            continue
        missing = [f.path for f in info.files if not is_available(f)]
        location = where if not missing else f"{where}; missing {missing[0]}" + (
            f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        out.append(DatasetStatus(info.name, info.description, not missing, location))
    return out
