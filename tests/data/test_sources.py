"""Downloading, verifying and caching dataset files, and the errors when a file is missing."""

from __future__ import annotations

import hashlib

import pytest

from unseen.data import sources
from unseen.data.sources import RemoteFile, fetch
from unseen.errors import ChecksumError, DataUnavailableError


@pytest.fixture
def origin(tmp_path):
    """A file served from a file:// URL: the real download code path, without a network."""
    content = b"age,label\n1,0\n2,1\n"
    src = tmp_path / "origin" / "toy.csv"
    src.parent.mkdir()
    src.write_bytes(content)
    return RemoteFile("toy/toy.csv", hashlib.sha256(content).hexdigest(), (src.as_uri(),)), content


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_download_verifies_and_caches(origin, cache):
    remote, content = origin
    path = fetch(remote)
    assert path.read_bytes() == content
    assert str(path).startswith(str(cache))
    # Second call uses the cache even when the source is gone.
    (cache.parent / "origin" / "toy.csv").unlink()
    assert fetch(remote) == path


def test_download_with_wrong_checksum_keeps_nothing(origin, cache):
    remote, _ = origin
    bad = RemoteFile(remote.path, "0" * 64, remote.urls)
    with pytest.raises(DataUnavailableError, match="SHA-256"):
        fetch(bad)
    assert not (sources.cache_dir() / remote.path).exists()
    assert not any(p.name.startswith(".part-") for p in (sources.cache_dir() / "toy").iterdir())


def test_corrupt_cached_file_is_reported(origin, cache):
    remote, _ = origin
    path = fetch(remote)
    path.write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match="delete it"):
        fetch(remote)


def test_missing_file_in_local_mirror_names_file_and_place(tmp_path, monkeypatch, origin):
    remote, _ = origin
    monkeypatch.setenv(sources.DATA_DIR_ENV, str(tmp_path / "mirror"))
    with pytest.raises(DataUnavailableError) as info:
        fetch(remote)
    text = str(info.value)
    assert "toy/toy.csv" in text and str(tmp_path / "mirror") in text and "UNSEEN_DATA_DIR" in text


def test_unreachable_source_says_how_to_provide_the_file(cache, tmp_path):
    remote = RemoteFile("x/y.bin", "0" * 64, ((tmp_path / "nowhere" / "y.bin").as_uri(),))
    with pytest.raises(DataUnavailableError, match="UNSEEN_DATA_DIR"):
        fetch(remote)


def test_local_mirror_is_verified(tmp_path, monkeypatch, origin):
    remote, _ = origin
    (tmp_path / "mirror" / "toy").mkdir(parents=True)
    (tmp_path / "mirror" / "toy" / "toy.csv").write_bytes(b"not the original")
    monkeypatch.setenv(sources.DATA_DIR_ENV, str(tmp_path / "mirror"))
    with pytest.raises(ChecksumError):
        fetch(remote)
