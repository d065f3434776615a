from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import savemat

from adaloss.data import DATASETS, ChecksumError, DatasetSplits, load_dataset, split_by_class
from adaloss.data.download import RESOURCES, Resource, md5sum
from adaloss.data.protocol import TEST_FRACTION, TEST_SPLIT_SEED
from adaloss.data.splits import random_split

SHARED = Path("/work/shared/datasets")
RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADALOSS_DATA", raising=False)


def register(monkeypatch: pytest.MonkeyPatch, name: str, folder: Path, *, urls: bool = False) -> None:
    """Point the md5 table of ``name`` at the fake files in ``folder`` (optionally as file:// URLs)."""
    for rel in list(RESOURCES[name]):
        path = folder / rel
        if path.is_file():
            resource = Resource(md5sum(path), (path.as_uri(),) if urls else ())
            monkeypatch.setitem(RESOURCES[name], rel, resource)


def balanced_labels(n: int, classes: int) -> np.ndarray:
    return RNG.permutation(np.arange(n) % classes).astype(np.uint8)


# ---- writers of the real formats -------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def write_mnist(folder: Path, *, n_train: int = 50, n_test: int = 10) -> dict[str, np.ndarray]:
    arrays = {
        "train-images-idx3-ubyte.gz": RNG.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": balanced_labels(n_train, 5),
        "t10k-images-idx3-ubyte.gz": RNG.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": balanced_labels(n_test, 5),
    }
    for file, array in arrays.items():
        write_idx(folder / file, array)
    return arrays


def cifar_pickle(images: np.ndarray, labels: np.ndarray, label_key: str) -> bytes:
    data = images.reshape(len(images), -1)
    batch = {b"batch_label": b"b", label_key.encode(): labels.tolist(), b"data": data}
    return pickle.dumps(batch, protocol=2)


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def cifar_batches(count: int, per_batch: int, classes: int) -> list[tuple[np.ndarray, np.ndarray]]:
    labels = balanced_labels(count * per_batch, classes).reshape(count, per_batch)
    return [(RNG.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8), labels[i]) for i in range(count)]


# ---- registry and errors ---------------------------------------------------------------------


def test_registered_names() -> None:
    assert set(DATASETS) == {
        "digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn",
        "california_housing", "communities_crime", "diabetes",
    }


def test_unknown_name_lists_names() -> None:
    with pytest.raises(ValueError, match="dataset") as info:
        load_dataset("mnits")
    assert all(name in str(info.value) for name in DATASETS)
    assert "'mnist'" in str(info.value)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="valid_fraction"):
        load_dataset("digits", valid_fraction=0.0)
    with pytest.raises(TypeError, match="seed"):
        load_dataset("digits", seed="1")  # type: ignore[arg-type]


def test_missing_files_error_names_dir_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("mnist", data_dir=tmp_path)
    text = str(info.value)
    for part in (str(tmp_path), "data_dir", "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                 "--data-dir", "ADALOSS_DATA", "download=True", str(tmp_path / "MNIST" / "raw")):
        assert part in text, part
    monkeypatch.setenv("ADALOSS_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError, match="ADALOSS_DATA environment variable") as info:
        load_dataset("cifar10")
    assert str(tmp_path / "env") in str(info.value) and "cifar-10-python.tar.gz" in str(info.value)


def test_md5_mismatch_on_load(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist")
    with pytest.raises(ChecksumError) as info:
        load_dataset("mnist", data_dir=tmp_path)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    assert str(path) in str(info.value)
    assert RESOURCES["mnist"]["train-images-idx3-ubyte.gz"].md5 in str(info.value)
    assert md5sum(path) in str(info.value)


# ---- bundled sets ----------------------------------------------------------------------------


def test_digits_offline() -> None:
    data = load_dataset("digits", valid_fraction=0.1, seed=0)
    assert (data.task, data.input_shape, data.num_outputs) == ("classification", (1, 8, 8), 10)
    assert data.augment == "none" and data.target_scale == 1.0
    assert (len(data.train), len(data.valid), len(data.test)) == (1293, 144, 360)
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    assert abs(data.train.x.mean().item()) < 1e-4 and abs(data.train.x.std().item() - 1) < 1e-3
    assert data.valid.y.bincount().min() >= 13  # stratified: every class present
    other = load_dataset("digits", seed=1)
    assert torch.equal(other.test.y, data.test.y)  # fixed test split (stats differ with the training split)
    assert not torch.equal(other.valid.y, data.valid.y) or not torch.equal(other.valid.x, data.valid.x)
    again = load_dataset("digits", seed=0)
    assert torch.equal(again.valid.x, data.valid.x)


def test_diabetes_offline() -> None:
    data = load_dataset("diabetes")
    assert (data.task, data.input_shape, data.num_outputs) == ("regression", (10,), 1)
    assert len(data.train) + len(data.valid) + len(data.test) == 442
    assert data.train.y.shape == (len(data.train), 1) and data.train.y.dtype == torch.float32
    assert data.target_scale > 10  # raw targets range 25..346


# ---- MNIST-style ---------------------------------------------------------------------------


def test_mnist_from_idx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = write_mnist(tmp_path / "mnist")
    register(monkeypatch, "mnist", tmp_path / "mnist")
    data = load_dataset("mnist", data_dir=tmp_path, valid_fraction=0.2, seed=0)
    assert (len(data.train), len(data.valid), len(data.test)) == (40, 10, 10)
    assert data.input_shape == (1, 28, 28) and data.train.x.shape == (40, 1, 28, 28)
    assert data.valid.y.bincount().tolist() == [2] * 5
    raw = arrays["t10k-images-idx3-ubyte.gz"]
    want = (raw.astype(np.float32) / 255 - 0.1307) / 0.3081
    np.testing.assert_allclose(data.test.x[:, 0].numpy(), want, rtol=1e-5, atol=1e-5)
    assert data.test.y.tolist() == arrays["t10k-labels-idx1-ubyte.gz"].tolist()


def test_fashion_mnist_torchvision_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "FashionMNIST" / "raw"
    arrays = write_mnist(folder)
    register(monkeypatch, "fashion_mnist", folder)
    data = load_dataset("fashion_mnist", data_dir=tmp_path, valid_fraction=0.2)
    pixel = arrays["t10k-images-idx3-ubyte.gz"][0, 3, 4] / 255
    assert data.test.x[0, 0, 3, 4].item() == pytest.approx((pixel - 0.2860) / 0.3530, abs=1e-5)


def test_download_via_file_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = tmp_path / "remote"
    write_mnist(remote)
    register(monkeypatch, "mnist", remote, urls=True)
    broken = (tmp_path / "nowhere").as_uri() + "/"
    for rel, resource in list(RESOURCES["mnist"].items()):  # a dead mirror first, as in the real table
        monkeypatch.setitem(RESOURCES["mnist"], rel, Resource(resource.md5, (broken + rel, *resource.urls)))
    cache = tmp_path / "cache"
    data = load_dataset("mnist", data_dir=cache, download=True, valid_fraction=0.2)
    assert len(data.test) == 10
    assert sorted(os.listdir(cache / "mnist")) == sorted(RESOURCES["mnist"])


def test_download_bad_md5_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "communities.data").write_text("1,2,3\n")
    monkeypatch.setitem(RESOURCES["communities_crime"], "communities.data",
                        Resource("0" * 32, ((remote / "communities.data").as_uri(),)))
    with pytest.raises(OSError, match="0{32}"):
        load_dataset("communities_crime", data_dir=tmp_path / "cache", download=True)
    assert os.listdir(tmp_path / "cache" / "communities-and-crime") == []


# ---- CIFAR and SVHN ----------------------------------------------------------------------------


def check_cifar(
    data: DatasetSplits, batches: list[tuple[np.ndarray, np.ndarray]], stats: tuple[tuple[float, ...], ...]
) -> None:
    assert data.input_shape == (3, 32, 32) and data.augment == "crop_flip"
    images, labels = batches[-1]
    mean = np.array(stats[0], np.float32).reshape(1, 3, 1, 1)
    std = np.array(stats[1], np.float32).reshape(1, 3, 1, 1)
    want = (images / np.float32(255) - mean) / std
    np.testing.assert_allclose(data.test.x.numpy(), want, rtol=1e-5, atol=1e-5)
    assert data.test.y.tolist() == labels.tolist()
    assert len(data.train) + len(data.valid) == sum(len(b[1]) for b in batches[:-1])


CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
CIFAR10_PY = [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)] + ["cifar-10-batches-py/test_batch"]


def test_cifar10_python_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = cifar_batches(6, 6, 3)
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:  # archive directly in the data dir
        for member, (x, y) in zip(CIFAR10_PY, batches):
            add_bytes(tar, member, cifar_pickle(x, y, "labels"))
    register(monkeypatch, "cifar10", tmp_path)
    check_cifar(load_dataset("cifar10", data_dir=tmp_path, valid_fraction=0.2), batches, CIFAR10_STATS)


def test_cifar10_extracted_python_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = cifar_batches(6, 6, 3)
    folder = tmp_path / "cifar-10"
    for member, (x, y) in zip(CIFAR10_PY, batches):
        (folder / member).parent.mkdir(parents=True, exist_ok=True)
        (folder / member).write_bytes(cifar_pickle(x, y, "labels"))
    register(monkeypatch, "cifar10", folder)
    check_cifar(load_dataset("cifar10", data_dir=tmp_path, valid_fraction=0.2), batches, CIFAR10_STATS)


def test_cifar10_binary_folder(tmp_path: Path) -> None:
    batches = cifar_batches(6, 6, 3)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    folder = tmp_path / "cifar-10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name, (x, y) in zip(names, batches):
        (folder / name).write_bytes(np.concatenate([y[:, None], x.reshape(len(y), -1)], axis=1).tobytes())
    check_cifar(load_dataset("cifar10", data_dir=tmp_path, valid_fraction=0.2), batches, CIFAR10_STATS)


def test_cifar100_fine_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = cifar_batches(2, 30, 3)
    batches = [(x, y + 90) for x, y in batches]  # fine labels above 10 and above any coarse label
    with tarfile.open(tmp_path / "cifar-100-binary.tar.gz", "w:gz") as tar:
        for name, (x, y) in zip(["train.bin", "test.bin"], batches):
            coarse = np.full_like(y, 7)
            records = np.concatenate([coarse[:, None], y[:, None], x.reshape(len(y), -1)], axis=1)
            add_bytes(tar, f"cifar-100-binary/{name}", records.tobytes())
    register(monkeypatch, "cifar100", tmp_path)
    data = load_dataset("cifar100", data_dir=tmp_path, valid_fraction=0.2)
    assert data.num_outputs == 100
    check_cifar(data, batches, CIFAR100_STATS)

    folder = tmp_path / "py" / "cifar-100" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, (x, y) in zip(["train", "test"], batches):
        (folder / name).write_bytes(cifar_pickle(x, y, "fine_labels"))
    register(monkeypatch, "cifar100", folder.parent)
    data = load_dataset("cifar100", data_dir=tmp_path / "py", valid_fraction=0.2)
    check_cifar(data, batches, CIFAR100_STATS)


def test_svhn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "svhn"
    folder.mkdir()
    for name, n in (("train_32x32.mat", 40), ("test_32x32.mat", 10)):
        labels = (np.arange(n) % 4 + 8) % 11  # 8, 9, 10, 0: label 10 is digit 0
        labels[labels == 0] = 1
        images = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        savemat(folder / name, {"X": images, "y": labels[:, None].astype(np.uint8)})
    register(monkeypatch, "svhn", folder)
    data = load_dataset("svhn", data_dir=tmp_path, valid_fraction=0.2)
    assert data.input_shape == (3, 32, 32) and data.augment == "crop_flip"
    assert set(data.test.y.tolist()) == {0, 1, 8, 9} and len(data.train) == 32


# ---- regression tables -------------------------------------------------------------------------


def expected_train_index(n: int, valid_fraction: float, seed: int) -> np.ndarray:
    rest, _ = random_split(n, fraction=TEST_FRACTION, seed=TEST_SPLIT_SEED)
    return rest[random_split(len(rest), fraction=valid_fraction, seed=seed)[0]]


def test_california_standardised_with_train_stats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = np.column_stack([RNG.normal(10, 3, (60, 8)), RNG.uniform(1e4, 5e5, 60)])
    folder = tmp_path / "california-housing"
    folder.mkdir()
    lines = (",".join(f"{v:.6f}" for v in row) for row in table)
    (folder / "cal_housing.data").write_bytes("\r\n".join(lines).encode())  # CRLF, no final newline
    register(monkeypatch, "california_housing", folder)
    data = load_dataset("california_housing", data_dir=tmp_path, seed=3)
    table = np.loadtxt(folder / "cal_housing.data", delimiter=",")
    assert data.input_shape == (8,) and data.train.y.shape == (len(data.train), 1)
    train = table[expected_train_index(60, 0.1, 3)]
    assert data.target_scale == pytest.approx(train[:, -1].std())
    features = train[:, :-1]
    np.testing.assert_allclose(data.train.x.numpy(), (features - features.mean(0)) / features.std(0), atol=1e-5)
    assert data.train.x.mean(0).abs().max() < 1e-5
    assert torch.allclose(data.train.y.std(unbiased=False), torch.tensor(1.0))
    assert data.test.x.mean(0).abs().max() > 1e-3 and data.test.y.mean().abs() > 1e-3


def test_communities_missing_values_and_strings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n = 40
    values = RNG.uniform(0, 1, (n, 123)).round(2).astype(str)
    values[:30, 10] = "?"  # mostly missing: dropped
    values[5, 20] = "?"  # one gap: imputed
    rows = [f"{i % 50},?,?,Town{i} city,{i % 10}," + ",".join(values[i]) for i in range(n)]
    folder = tmp_path / "communities-and-crime"
    folder.mkdir()
    (folder / "communities.data").write_text("\n".join(rows) + "\n")
    register(monkeypatch, "communities_crime", folder)
    data = load_dataset("communities_crime", data_dir=tmp_path)
    assert data.input_shape == (121,)
    for split in (data.train, data.valid, data.test):
        assert torch.isfinite(split.x).all() and torch.isfinite(split.y).all()


# ---- the real shared copy (optional) ----------------------------------------------------------


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="no shared dataset folder")
def test_real_mnist_shapes_and_balance() -> None:
    data = load_dataset("mnist", data_dir=SHARED)
    assert (len(data.train), len(data.valid), len(data.test)) == (54000, 6000, 10000)
    train_share = data.train.y.bincount().double() / len(data.train)
    valid_share = data.valid.y.bincount().double() / len(data.valid)
    assert (train_share - valid_share).abs().max() < 1e-3


# ---- the metric-learning task: split by class (Huang et al., ICML 2019) ----------------------


def test_digits_embedding_task_splits_by_class() -> None:
    full = load_dataset("digits", seed=2)
    data = load_dataset("digits", seed=2, task="embedding")
    assert (data.task, data.num_outputs, data.train_classes, data.input_shape) == ("embedding", 64, (0, 1, 2, 3, 4),
                                                                                   (1, 8, 8))
    assert set(data.train.y.tolist()) == set(data.valid.y.tolist()) == {0, 1, 2, 3, 4}
    assert set(data.test.y.tolist()) == {5, 6, 7, 8, 9}  # held out, labels unchanged
    # the same rows, in the same order, as the classification splits restricted by label (numpy)
    for name, keep in (("train", lambda y: y < 5), ("valid", lambda y: y < 5), ("test", lambda y: y >= 5)):
        ref, got = getattr(full, name), getattr(data, name)
        rows = np.flatnonzero(keep(ref.y.numpy()))
        np.testing.assert_array_equal(got.x.numpy(), ref.x.numpy()[rows])
        np.testing.assert_array_equal(got.y.numpy(), ref.y.numpy()[rows])
    assert len(data.test) == int((full.test.y >= 5).sum()) > 150
    # the valid split is ~10% of each training class
    share = data.valid.y.bincount().double() / (data.valid.y.bincount() + data.train.y.bincount()).double()
    assert ((share - 0.1).abs() < 0.02).all(), share
    # train_classes and embedding_dim
    odd = load_dataset("digits", task="embedding", train_classes=[7, 1, 3, 5], embedding_dim=8)
    assert odd.train_classes == (1, 3, 5, 7) and odd.num_outputs == 8
    assert set(odd.train.y.tolist()) == {1, 3, 5, 7} and set(odd.test.y.tolist()) == {0, 2, 4, 6, 8, 9}
    assert load_dataset("digits", task="classification").task == "classification"


def test_fashion_mnist_embedding_task_holds_out_classes_5_to_9(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "fashion-mnist"
    arrays = {
        "train-images-idx3-ubyte.gz": RNG.integers(0, 256, (100, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": balanced_labels(100, 10),
        "t10k-images-idx3-ubyte.gz": RNG.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": balanced_labels(30, 10),
    }
    for file, array in arrays.items():
        write_idx(folder / file, array)
    register(monkeypatch, "fashion_mnist", folder)
    data = load_dataset("fashion_mnist", data_dir=tmp_path, valid_fraction=0.2, task="embedding", embedding_dim=16)
    assert (len(data.train), len(data.valid), len(data.test)) == (40, 10, 15)
    assert data.valid.y.bincount().tolist() == [2] * 5  # stratified over the 5 training classes
    labels = arrays["t10k-labels-idx1-ubyte.gz"]
    held = np.flatnonzero(labels >= 5)  # the official test images of classes 5-9, in file order
    assert data.test.y.tolist() == labels[held].tolist()
    want = (arrays["t10k-images-idx3-ubyte.gz"][held].astype(np.float32) / 255 - 0.2860) / 0.3530
    np.testing.assert_allclose(data.test.x[:, 0].numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"task": "embedding", "train_classes": [0, 12]}, ValueError,
         r"Expected `train_classes` to be at least 2 distinct class labels in 0..9 leaving at least 2 of the 10 "
         r"classes held out, but got \[0, 12\]"),
        ({"task": "embedding", "train_classes": [3]}, ValueError, r"but got \[3\]"),
        ({"task": "embedding", "train_classes": list(range(9))}, ValueError, r"leaving at least 2"),
        ({"task": "embedding", "train_classes": [1, 1, 2]}, ValueError, r"distinct"),
        ({"task": "embedding", "train_classes": "0,1"}, TypeError, r"to be a list of"),
        ({"task": "embedding", "embedding_dim": 0}, ValueError, r"`embedding_dim` to be >= 1, but got 0"),
        ({"train_classes": [0, 1]}, ValueError, r"`train_classes` applies to task='embedding' only, but got task=None"),
        ({"task": "classification", "embedding_dim": 8}, ValueError, r"`embedding_dim` applies to task='embedding'"),
        ({"task": "regression"}, ValueError,
         r"Expected `task` for dataset 'digits' to be one of \['classification', 'embedding'\], but got 'regression'"),
        ({"task": "ranking"}, ValueError, r"Expected `task` to be one of .*'embedding'.*but got 'ranking'"),
    ],
)
def test_embedding_task_bad_inputs(kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        load_dataset("digits", **kwargs)  # type: ignore[arg-type]


def test_embedding_task_needs_a_classification_set() -> None:
    with pytest.raises(ValueError, match=r"Expected `task` for dataset 'diabetes' to be one of \['regression'\]"):
        load_dataset("diabetes", task="embedding")
    with pytest.raises(ValueError, match="by class, but 'diabetes' has task 'regression'"):
        split_by_class(load_dataset("diabetes"))
    with pytest.raises(ValueError, match="but 'digits' has task 'embedding'"):
        split_by_class(load_dataset("digits", task="embedding"))  # not twice


def test_subsample_classes_thins_train_and_valid_of_the_named_classes_only() -> None:
    import math

    from adaloss.data import load_dataset, subsample_classes

    data = load_dataset("digits", valid_fraction=0.2, seed=0)
    thin = subsample_classes(data, classes=[3, 7], fraction=0.1, seed=5)
    for name in ("train", "valid"):
        before, after = getattr(data, name).y, getattr(thin, name).y
        for c in range(10):
            n = int((before == c).sum())
            expected = max(1, math.ceil(0.1 * n)) if c in (3, 7) else n
            assert int((after == c).sum()) == expected, (name, c)
        # the rows kept are rows of the original split, images with their labels
        rows = {(tuple(x.flatten().tolist()), int(y)) for x, y in zip(getattr(data, name).x, before)}
        assert all((tuple(x.flatten().tolist()), int(y)) in rows for x, y in zip(getattr(thin, name).x, after))
    assert torch.equal(thin.test.x, data.test.x) and thin.minority_classes == (3, 7)
    again = subsample_classes(data, classes=[7, 3], fraction=0.1, seed=5)
    assert torch.equal(again.train.x, thin.train.x)
    assert not torch.equal(subsample_classes(data, classes=[3, 7], fraction=0.1, seed=6).train.x, thin.train.x)
    with pytest.raises(ValueError, match=r"Expected `minority_classes` to be distinct class labels in \[0, 10\), "
                                         r"but got \[3, 12\]"):
        subsample_classes(data, classes=[3, 12])
    with pytest.raises(ValueError, match=r"Expected `minority_fraction` to be in \(0, 1\], but got 0.0"):
        subsample_classes(data, classes=[3], fraction=0.0)
    with pytest.raises(ValueError, match="already subsampled"):
        subsample_classes(thin, classes=[3])
