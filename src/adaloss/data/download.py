"""The data folder, the table of dataset files (URLs and md5 sums), checksums and atomic downloads."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ENV_DATA_DIR",
    "RESOURCES",
    "ChecksumError",
    "DownloadError",
    "Resource",
    "check_md5",
    "data_dir_origin",
    "download_resource",
    "md5sum",
    "resolve_data_dir",
]

#: Environment variable that sets the data folder when no ``data_dir`` is passed.
ENV_DATA_DIR = "ADALOSS_DATA"

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0


class ChecksumError(ValueError):
    """A file's md5 sum differs from the published one."""


class DownloadError(OSError):
    """No URL of a file could be downloaded and verified."""


@dataclass(frozen=True)
class Resource:
    """One file a dataset is read from.

    Attributes:
        md5: Published md5 of the file, or ``None`` where none is published (extracted CIFAR
            binary batches); such files are only validated by their parser (exact record size).
        urls: Where to download it, tried in order; empty when the file is only accepted locally.
        member: If set, each URL serves a tar archive and the file is this member of it.
    """

    md5: str | None
    urls: tuple[str, ...] = ()
    member: str | None = None


def _mirrors(bases: Sequence[str], name: str) -> tuple[str, ...]:
    return tuple(base + name for base in bases)


_MNIST = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_KRIZ = ("https://www.cs.toronto.edu/~kriz/",)
_SVHN = ("http://ufldl.stanford.edu/housenumbers/",)

#: Dataset name -> {path relative to the dataset folder: Resource}. Every file the loaders read
#: is listed here; files with URLs are the ones ``download=True`` fetches.
RESOURCES: dict[str, dict[str, Resource]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": Resource(
            "f68b3c2dcbeaaa9fbdd348bbdeb94873", _mirrors(_MNIST, "train-images-idx3-ubyte.gz")
        ),
        "train-labels-idx1-ubyte.gz": Resource(
            "d53e105ee54ea40749a09fcbcd1e9432", _mirrors(_MNIST, "train-labels-idx1-ubyte.gz")
        ),
        "t10k-images-idx3-ubyte.gz": Resource(
            "9fb629c4189551a2d022fa330f9573f3", _mirrors(_MNIST, "t10k-images-idx3-ubyte.gz")
        ),
        "t10k-labels-idx1-ubyte.gz": Resource(
            "ec29112dd5afa0611ce80d1b7f02629c", _mirrors(_MNIST, "t10k-labels-idx1-ubyte.gz")
        ),
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": Resource(
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d", _mirrors(_FASHION, "train-images-idx3-ubyte.gz")
        ),
        "train-labels-idx1-ubyte.gz": Resource(
            "25c81989df183df01b3e8a0aad5dffbe", _mirrors(_FASHION, "train-labels-idx1-ubyte.gz")
        ),
        "t10k-images-idx3-ubyte.gz": Resource(
            "bef4ecab320f06d8554ea6380940ec79", _mirrors(_FASHION, "t10k-images-idx3-ubyte.gz")
        ),
        "t10k-labels-idx1-ubyte.gz": Resource(
            "bb300cfdad3c16e7a12a480ee83cd310", _mirrors(_FASHION, "t10k-labels-idx1-ubyte.gz")
        ),
    },
    "cifar10": {
        "cifar-10-python.tar.gz": Resource(
            "c58f30108f718f92721af3b95e74349a", _mirrors(_KRIZ, "cifar-10-python.tar.gz")
        ),
        "cifar-10-batches-py/data_batch_1": Resource("c99cafc152244af753f735de768cd75f"),
        "cifar-10-batches-py/data_batch_2": Resource("d4bba439e000b95fd0a9bffe97cbabec"),
        "cifar-10-batches-py/data_batch_3": Resource("54ebc095f3ab1f0389bbae665268c751"),
        "cifar-10-batches-py/data_batch_4": Resource("634d18415352ddfa80567beed471001a"),
        "cifar-10-batches-py/data_batch_5": Resource("482c414d41f54cd18b22e5b47cb7c3cb"),
        "cifar-10-batches-py/test_batch": Resource("40351d587109b95175f43aff81a1287e"),
        "cifar-10-binary.tar.gz": Resource("c32a1d4ab5d03f1284b67883e8d87530"),
        **{f"cifar-10-batches-bin/data_batch_{i}.bin": Resource(None) for i in range(1, 6)},
        "cifar-10-batches-bin/test_batch.bin": Resource(None),
    },
    "cifar100": {
        "cifar-100-python.tar.gz": Resource(
            "eb9058c3a382ffc7106e4002c42a8d85", _mirrors(_KRIZ, "cifar-100-python.tar.gz")
        ),
        "cifar-100-python/train": Resource("16019d7e3df5f24257cddd939b257f8d"),
        "cifar-100-python/test": Resource("f0ef6b0ae62326f3e7ffdfab6717acfc"),
        "cifar-100-binary.tar.gz": Resource("03b5dce01913d631647c71ecec9e9cb8"),
        "cifar-100-binary/train.bin": Resource(None),
        "cifar-100-binary/test.bin": Resource(None),
    },
    "svhn": {
        "train_32x32.mat": Resource(
            "e26dedcc434d2e4c54c9b2d4a06d8373", _mirrors(_SVHN, "train_32x32.mat")
        ),
        "test_32x32.mat": Resource(
            "eb5a983be6a315427106f1b164d9cef3", _mirrors(_SVHN, "test_32x32.mat")
        ),
    },
    "california_housing": {
        # scikit-learn's source archive; the md5 is that of the extracted member.
        "cal_housing.data": Resource(
            "01d0b31df796a8d4b7a6ce4c37f42dbc",
            ("https://ndownloader.figshare.com/files/5976036",),
            member="CaliforniaHousing/cal_housing.data",
        ),
    },
    "communities_crime": {
        "communities.data": Resource(
            "4b2433c94afe43119fae78309a22778e",
            ("https://archive.ics.uci.edu/ml/machine-learning-databases/communities/communities.data",),
        ),
    },
}


# ---------------------------------------------------------------------------------------------
# Data folder
# ---------------------------------------------------------------------------------------------


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the data folder: ``data_dir``, else ``$ADALOSS_DATA``, else ``~/.cache/adaloss``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_DATA_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "adaloss"


def data_dir_origin(data_dir: str | os.PathLike[str] | None = None) -> str:
    """Say what chose the folder :func:`resolve_data_dir` returns (for error messages)."""
    if data_dir is not None:
        return "set by the data_dir argument / --data-dir"
    if os.environ.get(ENV_DATA_DIR, "").strip():
        return f"set by the {ENV_DATA_DIR} environment variable"
    return f"the default; neither data_dir/--data-dir nor {ENV_DATA_DIR} was set"


# ---------------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------------

# (resolved path, size, mtime_ns) -> md5, so a file is hashed once per process unless it changes.
_MD5_CACHE: dict[tuple[str, int, int], str] = {}


def md5sum(path: str | os.PathLike[str]) -> str:
    """Return the hex md5 of a file, cached per (path, size, mtime)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    cached = _MD5_CACHE.get(key)
    if cached is not None:
        return cached
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    _MD5_CACHE[key] = digest.hexdigest()
    return _MD5_CACHE[key]


def check_md5(path: str | os.PathLike[str], expected: str | None) -> None:
    """Raise :class:`ChecksumError` naming the file and both sums unless the md5 matches.

    ``expected=None`` (no published sum) accepts the file.
    """
    if expected is None:
        return
    actual = md5sum(path)
    if actual != expected.lower():
        raise ChecksumError(
            f"{path}: md5 mismatch (expected {expected.lower()}, got {actual}); the file is corrupt, "
            "truncated or a different file. Delete it and load again with download=True, or replace "
            "it with the canonical file."
        )


# ---------------------------------------------------------------------------------------------
# Downloads
# ---------------------------------------------------------------------------------------------


def _fetch(url: str, target: Path) -> None:
    """Stream ``url`` into the (already created) file ``target``; raise on a short read."""
    request = urllib.request.Request(url, headers={"User-Agent": "adaloss"})
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response, target.open("wb") as out:
        length = response.headers.get("Content-Length")
        received = 0
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            received += len(chunk)
    if length is not None and length.isdigit() and received != int(length):
        raise DownloadError(f"{url}: received {received} of {length} bytes (connection cut short).")


def _extract_member(archive: Path, member: str, target: Path) -> None:
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            info = tar.getmember(member)
            handle = tar.extractfile(info) if info.isfile() else None
            if handle is None:
                raise DownloadError(f"{archive.name}: member {member!r} is not a regular file.")
            with handle, target.open("wb") as out:
                shutil.copyfileobj(handle, out, _CHUNK)
    except KeyError as error:
        raise DownloadError(f"downloaded archive lacks the member {member!r}.") from error
    except (tarfile.TarError, EOFError, OSError) as error:
        if isinstance(error, DownloadError):
            raise
        raise DownloadError(f"downloaded archive is unreadable ({error}).") from error


def _temp_path(folder: Path, name: str) -> Path:
    handle, temp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    os.close(handle)
    return Path(temp)


def _try_url(url: str, resource: Resource, destination: Path) -> None:
    """Download one URL into ``destination`` atomically; leave no temporary file behind."""
    folder = destination.parent
    temps = [_temp_path(folder, destination.name)]
    try:
        _fetch(url, temps[0])
        verified = temps[0]
        if resource.member is not None:
            temps.append(_temp_path(folder, destination.name))
            _extract_member(temps[0], resource.member, temps[1])
            verified = temps[1]
        check_md5(verified, resource.md5)
        os.replace(verified, destination)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)


def download_resource(resource: Resource, destination: str | os.PathLike[str]) -> Path:
    """Download ``resource`` to ``destination``, trying its URLs in order, md5-verified.

    The bytes go to a temporary file in the destination folder, which replaces ``destination``
    only after verification; a failed attempt never leaves a partial file in the cache.

    Raises:
        DownloadError: Every URL failed; the message lists each URL with its error.
    """
    destination = Path(destination)
    if not resource.urls:
        raise DownloadError(f"{destination.name} has no download URL; obtain it manually.")
    destination.parent.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    last: BaseException | None = None
    for url in resource.urls:
        try:
            _try_url(url, resource, destination)
            return destination
        except (urllib.error.URLError, OSError, ValueError, EOFError) as error:
            # URLError/HTTPError/timeouts are OSError; ChecksumError is a ValueError.
            failures.append(f"  {url}: {error}")
            last = error
    raise DownloadError(
        f"Could not download {destination.name} into {destination.parent}:\n" + "\n".join(failures)
    ) from last
