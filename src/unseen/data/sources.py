"""Where dataset files come from: official downloads verified by SHA-256, a cache, or a local mirror.

Set ``UNSEEN_DATA_DIR`` to a folder laid out like ``../shared/data`` (one folder per dataset with the
original file names) and unseen reads from there and never touches the network. Otherwise files are
downloaded from their official sources into the user cache directory, verified, and reused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from unseen.errors import ChecksumError, DataUnavailableError

DATA_DIR_ENV = "UNSEEN_DATA_DIR"


@dataclass(frozen=True)
class RemoteFile:
    """One dataset file: its path inside the data folder, its SHA-256 and where to download it."""

    path: str
    sha256: str
    urls: tuple[str, ...] = ()


def local_mirror() -> Path | None:
    """The folder named by ``UNSEEN_DATA_DIR``, if set."""
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """Where downloaded files are kept between runs."""
    return Path(platformdirs.user_cache_dir("unseen")) / "data"


def data_root() -> Path:
    """The folder files are looked up in: the local mirror if set, else the download cache."""
    return local_mirror() or cache_dir()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumError(
            f"{path} has SHA-256 {actual}, expected {expected}. The file is corrupt or not the official "
            f"release: delete it and load again (or replace it with the original file)."
        )


def is_available(file: RemoteFile) -> bool:
    """True if the file is present where unseen looks (without downloading or verifying it)."""
    return (data_root() / file.path).is_file()


def fetch(file: RemoteFile, *, download: bool = True, timeout: float = 60.0) -> Path:
    """Return a verified local path for ``file``, downloading it into the cache if needed."""
    mirror = local_mirror()
    if mirror is not None:
        path = mirror / file.path
        if not path.is_file():
            raise DataUnavailableError(
                f"{file.path} is missing: looked in {path} because {DATA_DIR_ENV}={mirror}. Put the original "
                f"file there (official source: {file.urls[0] if file.urls else 'see docs/datasets.md'}), "
                f"or unset {DATA_DIR_ENV} to download it into {cache_dir()}."
            )
        _verify(path, file.sha256)
        return path

    path = cache_dir() / file.path
    if path.is_file():
        _verify(path, file.sha256)
        return path
    if not download or not file.urls:
        how = f"download it from {file.urls[0]}" if file.urls else "obtain it as docs/datasets.md explains"
        raise DataUnavailableError(
            f"{file.path} is not in the cache ({path}) and cannot be downloaded automatically: {how} and "
            f"place it there, or set {DATA_DIR_ENV} to a folder that holds {file.path}."
        )
    return _download(file, path, timeout)


def _download(file: RemoteFile, path: Path, timeout: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in file.urls:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, out)
            _verify(tmp, file.sha256)
            tmp.replace(path)  # atomic: a half-written file never looks like a cached one
            return path
        except (OSError, ChecksumError) as exc:  # URLError is an OSError
            errors.append(f"{url}: {exc}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DataUnavailableError(
        f"could not download {file.path}: " + "; ".join(errors) + f". If this machine is offline, set "
        f"{DATA_DIR_ENV} to a folder that holds {file.path} (for example ../shared/data)."
    )
