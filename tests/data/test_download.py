from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from adaloss.data import download
from adaloss.data.download import (
    ChecksumError,
    DownloadError,
    Resource,
    check_md5,
    download_resource,
    md5sum,
    resolve_data_dir,
)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_resolve_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ADALOSS_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("ADALOSS_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "adaloss"


def test_md5_cached_per_size_and_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    first, second = _md5(b"hello"), _md5(b"hello world")
    assert md5sum(path) == first
    calls: list[int] = []
    real_md5 = hashlib.md5
    monkeypatch.setattr(download.hashlib, "md5", lambda *a, **kw: calls.append(1) or real_md5(*a, **kw))
    assert md5sum(path) == first and not calls  # served from the cache
    path.write_bytes(b"hello world")
    assert md5sum(path) == second and calls


def test_checksum_error_names_file_and_both_sums(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"corrupt")
    with pytest.raises(ChecksumError) as info:
        check_md5(path, "0" * 32)
    assert str(path) in str(info.value) and "0" * 32 in str(info.value) and _md5(b"corrupt") in str(info.value)
    check_md5(path, None)  # no published sum: accepted


def test_download_file_url(tmp_path: Path) -> None:
    source = tmp_path / "remote" / "data.bin"
    source.parent.mkdir()
    source.write_bytes(b"payload" * 1000)
    missing = (tmp_path / "remote" / "nope.bin").as_uri()
    resource = Resource(_md5(source.read_bytes()), (missing, source.as_uri()))  # first mirror fails
    target = tmp_path / "cache" / "sub" / "data.bin"
    assert download_resource(resource, target) == target
    assert target.read_bytes() == source.read_bytes()
    assert os.listdir(target.parent) == ["data.bin"]


def test_download_wrong_md5_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(b"payload")
    target = tmp_path / "cache" / "data.bin"
    with pytest.raises(DownloadError) as info:
        download_resource(Resource("f" * 32, (source.as_uri(),)), target)
    assert "f" * 32 in str(info.value) and _md5(b"payload") in str(info.value)
    assert os.listdir(target.parent) == []


def test_download_unreachable_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "data.bin"
    url = (tmp_path / "absent").as_uri()
    with pytest.raises(DownloadError, match="absent"):
        download_resource(Resource("0" * 32, (url,)), target)
    assert os.listdir(target.parent) == []


def _tgz(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_download_archive_member(tmp_path: Path) -> None:
    body = b"1,2\r\n3,4"
    archive = tmp_path / "5976036"
    _tgz(archive, {"CaliforniaHousing/cal_housing.data": body, "CaliforniaHousing/other": b"x"})
    target = tmp_path / "cache" / "cal_housing.data"
    member = "CaliforniaHousing/cal_housing.data"
    download_resource(Resource(_md5(body), (archive.as_uri(),), member=member), target)
    assert target.read_bytes() == body
    assert os.listdir(target.parent) == ["cal_housing.data"]
    with pytest.raises(DownloadError, match="lacks the member"):
        download_resource(Resource(_md5(body), (archive.as_uri(),), member="Other/x"), tmp_path / "c2" / "x")
    assert os.listdir(tmp_path / "c2") == []


def test_no_url() -> None:
    with pytest.raises(DownloadError, match="no download URL"):
        download_resource(Resource(None), "x")
