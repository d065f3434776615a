"""Users' own data: dataset=csv / dataset=npz, and data= in the Python API."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import adaloss
from adaloss.cli import main
from adaloss.data import DataFormatError, DatasetSplits, TaskOptionError, load_dataset, split_for_task
from adaloss.data.arrays import MAX_INFERRED_CLASSES, as_splits, infer_task
from adaloss.data.own import load_csv, load_npz
from adaloss.data.protocol import TEST_FRACTION, holdout_rows
from adaloss.training import TrainConfig
from adaloss.training.config import ConfigError, load_config

RNG = np.random.default_rng(17)
TINY = ["steps=5", "batch_size=8", "model_args.hidden=[8]", "eval_every=0", "progress=off", "threads=1"]


# ---- writers of the real formats -------------------------------------------------------------


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    lines = [",".join(header), *(",".join(str(c) for c in row) for row in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def flowers(n: int = 60, *, shift: float = 0.0) -> tuple[np.ndarray, list[str]]:
    """Three separable classes named by strings, 3 numeric features."""
    names = ["setosa", "versicolor", "virginica"]
    labels = [names[i % 3] for i in range(n)]
    x = RNG.normal(size=(n, 3)) + np.array([[3.0 * (i % 3), 0.0, shift] for i in range(n)])
    return x, labels


def flowers_csv(path: Path, n: int = 60) -> Path:
    x, labels = flowers(n)
    return write_csv(path, ["sepal", "petal", "stem", "species"], [[*map(float, r), s] for r, s in zip(x, labels)])


def houses_csv(path: Path, n: int = 50) -> tuple[Path, np.ndarray, np.ndarray]:
    x = RNG.normal(loc=[10.0, -5.0], scale=[2.0, 0.5], size=(n, 2))
    price = 1000.0 * x[:, 0] + 300.0 * x[:, 1] + RNG.normal(scale=10.0, size=n)
    return write_csv(path, ["rooms", "age", "price"], [[a, b, p] for (a, b), p in zip(x, price)]), x, price


# ---- CSV: good files -------------------------------------------------------------------------


def test_csv_classification_maps_class_names_and_keeps_the_builtin_split_protocol(tmp_path: Path) -> None:
    path = flowers_csv(tmp_path / "flowers.csv")
    data = load_dataset("csv", data_path=path, target="species", seed=0)
    assert data.name == "flowers.csv" and data.task == "classification" and data.num_outputs == 3
    assert data.class_names == ("setosa", "versicolor", "virginica") and data.input_shape == (3,)
    assert len(data.test) == round(TEST_FRACTION * 60) and len(data.train) + len(data.valid) + len(data.test) == 60
    for split in (data.train, data.valid, data.test):  # stratified: every class in every split
        assert split.y.dtype == torch.int64 and set(split.y.tolist()) == {0, 1, 2}
    # the built-in tables' protocol: a fixed stratified test split, `seed` picks the validation
    # split; features standardised with the training split's statistics
    lines = [line.split(",") for line in path.read_text().splitlines()[1:]]
    raw = np.array([[float(c) for c in cells[:3]] for cells in lines])
    labels = np.array([data.class_names.index(cells[3]) for cells in lines])
    tests = []
    for seed in (0, 1):
        index = holdout_rows(60, labels=labels, valid_fraction=0.1, seed=seed)
        splits = load_dataset("csv", data_path=path, target="species", seed=seed)
        mean, std = raw[index["train"]].mean(0), raw[index["train"]].std(0)
        for split in ("train", "valid", "test"):
            expected = torch.from_numpy(((raw[index[split]] - mean) / std).astype(np.float32))
            assert torch.allclose(getattr(splits, split).x, expected, atol=1e-5)
            assert getattr(splits, split).y.tolist() == labels[index[split]].tolist()
        assert torch.allclose(splits.train.x.std(0, unbiased=False), torch.ones(3), atol=1e-5)
        tests.append(index["test"])
        valid = index["valid"]
    assert tests[0].tolist() == tests[1].tolist()
    assert valid.tolist() != holdout_rows(60, labels=labels, valid_fraction=0.1, seed=0)["valid"].tolist()


def test_csv_integer_target_with_few_values_is_classification_and_labels_sort_numerically(tmp_path: Path) -> None:
    rows = [[float(i), float(i % 4), [1, 2, 10][i % 3]] for i in range(40)]
    data = load_csv(write_csv(tmp_path / "t.csv", ["a", "b", "grade"], rows), target="grade")
    assert data.task == "classification" and data.class_names == ("1", "2", "10")
    assert sorted(set(data.train.y.tolist())) == [0, 1, 2]
    regression = load_csv(tmp_path / "t.csv", target="grade", task="regression")
    assert regression.task == "regression" and regression.num_outputs == 1


def test_csv_regression_standardises_targets_on_the_training_split(tmp_path: Path) -> None:
    path, _, price = houses_csv(tmp_path / "houses.csv")
    data = load_dataset("csv", data_path=path, target="price")
    assert data.task == "regression" and data.num_outputs == 1 and data.train.y.shape == (len(data.train), 1)
    assert data.train.y.mean().abs() < 1e-5 and abs(float(data.train.y.std(unbiased=False)) - 1) < 1e-5
    assert 0.5 * price.std() < data.target_scale < 2 * price.std()
    assert infer_task(price) == "regression"


def test_csv_separate_test_file_in_any_column_order(tmp_path: Path) -> None:
    train = flowers_csv(tmp_path / "train.csv", n=45)
    x, labels = flowers(12, shift=100.0)  # far from the training data: visible after standardising
    test = write_csv(tmp_path / "test.csv", ["species", "stem", "petal", "sepal"],
                     [[s, r[2], r[1], r[0]] for r, s in zip(x, labels)])
    data = load_dataset("csv", data_path=train, target="species", test_path=test, valid_fraction=0.2)
    assert len(data.test) == 12 and len(data.train) + len(data.valid) == 45
    assert data.test.y.tolist() == [data.class_names.index(s) for s in labels]
    assert float(data.test.x[:, 2].mean()) > 10 and abs(float(data.test.x[:, 1].mean())) < 10


def test_csv_embedding_task_splits_by_class(tmp_path: Path) -> None:
    rows = [[*RNG.normal(size=2), f"c{i % 4}"] for i in range(80)]
    data = load_dataset("csv", data_path=write_csv(tmp_path / "e.csv", ["a", "b", "kind"], rows), target="kind",
                        task="embedding", train_classes=[0, 1], embedding_dim=4)
    assert data.task == "embedding" and data.num_outputs == 4 and data.train_classes == (0, 1)
    assert set(data.test.y.tolist()) == {2, 3} and data.class_names == ("c0", "c1", "c2", "c3")


def test_csv_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = flowers_csv(tmp_path / "flowers.csv")
    assert main(["train", "dataset=csv", f"data_path={path}", "target=species", f"run_dir={tmp_path / 'c'}",
                 *TINY]) == 0
    assert "test_error" in capsys.readouterr().out
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["step"] == 5 and summary["config"]["data_path"] == str(path)
    houses, _, _ = houses_csv(tmp_path / "houses.csv")
    assert main(["train", "dataset=csv", f"data_path={houses}", "target=price", "model=mlp_regressor",
                 "method=mse", f"run_dir={tmp_path / 'r'}", *TINY]) == 0
    assert "test_mse" in capsys.readouterr().out
    assert main(["compare", "--methods", "ce", "--seeds", "0,1", "--out", str(tmp_path / "cmp"), "dataset=csv",
                 f"data_path={path}", "target=species", *TINY]) == 0
    assert capsys.readouterr().out.splitlines()[2].startswith("| ce | 2 |")


# ---- CSV: bad files --------------------------------------------------------------------------

GOOD_ROWS = [[float(i), float(i % 7), "ab"[i % 2]] for i in range(30)]


def _with(row: int, col: int, value: object) -> list[list[object]]:
    rows = [list(r) for r in GOOD_ROWS]
    rows[row][col] = value
    return rows


@pytest.mark.parametrize(
    ("rows", "options", "message"),
    [
        (_with(3, 1, ""), {}, r"feature column 'b' has a missing value at line 5 \(''\); expected a number"),
        (_with(4, 0, "nan"), {}, r"feature column 'a' has a missing value at line 6 \('nan'\)"),
        (_with(2, 1, "NA"), {}, r"feature column 'b' has a missing value at line 4 \('NA'\)"),
        (_with(5, 0, "inf"), {}, r"feature column 'a' holds 'inf' at line 7; expected a finite number"),
        (_with(6, 1, "red"), {}, r"feature column 'b' is not numeric: line 8 holds 'red'; expected a number in every "
                                 r"row \(drop the column, or encode it as numbers\)"),
        (_with(7, 2, ""), {}, r"target column 'y' has a missing value at line 9"),
        ([[float(i), 1.0, "a"] for i in range(30)], {}, r"target column 'y' holds one class only \('a' in all 30 "
                                                        r"rows\); expected at least 2 classes"),
        ([[1.0, 2.0, "a"], [2.0, 3.0, "b"], [3.0, 1.0, "a"]], {}, r"target column 'y' has too few rows: 3 \(rows per "
                                                                  r"class: a: 2, b: 1\); expected enough"),
        ([[1.0, 2.0, 3.5]], {"task": "regression"}, r"target column 'y' has too few rows: 1"),
        (GOOD_ROWS, {"task": "regression"}, r"target column 'y' is not numeric: line 2 holds 'a'; expected numbers "
                                            r"for task='regression'"),
        (GOOD_ROWS, {"target": "label"}, r"no target column 'label' \(`target`\); expected one of the header's "
                                         r"columns \['a', 'b', 'y'\]"),
    ],
)
def test_bad_csv_names_file_column_expected_and_found(
    tmp_path: Path, rows: list[list[object]], options: dict[str, str], message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_csv(tmp_path / "bad.csv", ["a", "b", "y"], rows)
    options = dict(options)
    target = options.pop("target", "y")
    with pytest.raises(DataFormatError, match=f"^{re.escape(str(path))}: {message}"):
        load_csv(path, target=target, **options)  # type: ignore[arg-type]
    args = ["train", "dataset=csv", f"data_path={path}", f"target={target}", f"run_dir={tmp_path / 'run'}", *TINY,
            *(f"{k}={v}" for k, v in options.items())]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"adaloss: error: {path}: ") and not (tmp_path / "run" / "summary.json").exists()


def test_bad_csv_layouts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match=rf"Expected `data_path` to be a CSV file with a header row, but "
                                                rf"'{missing}' does not exist"):
        load_csv(missing, target="y")
    assert main(["train", "dataset=csv", f"data_path={missing}", "target=y", *TINY]) == 2
    assert f"'{missing}' does not exist" in capsys.readouterr().err
    (tmp_path / "empty.csv").write_text("\n\n")
    with pytest.raises(DataFormatError, match="empty.csv: the file is empty; expected a header row"):
        load_csv(tmp_path / "empty.csv", target="y")
    (tmp_path / "header.csv").write_text("a,y\n")
    with pytest.raises(DataFormatError, match="header.csv: too few rows: the file has a header but no data rows"):
        load_csv(tmp_path / "header.csv", target="y")
    (tmp_path / "ragged.csv").write_text("a,b,y\n1,2,a\n3,b\n")
    with pytest.raises(DataFormatError, match=r"ragged.csv: line 3 has 2 cells; expected 3, one per header column"):
        load_csv(tmp_path / "ragged.csv", target="y")
    (tmp_path / "twice.csv").write_text("a,a,y\n1,2,a\n")
    with pytest.raises(DataFormatError, match=r"twice.csv: the header names column 'a' more than once"):
        load_csv(tmp_path / "twice.csv", target="y")
    (tmp_path / "only.csv").write_text("y\n1\n2\n")
    with pytest.raises(DataFormatError, match=r"only.csv: only the target column 'y'; expected at least one feature"):
        load_csv(tmp_path / "only.csv", target="y")
    (tmp_path / "latin1.csv").write_bytes("a,y\n1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"latin1.csv: not a UTF-8 text file"):
        load_csv(tmp_path / "latin1.csv", target="y")


def test_bad_csv_test_file(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", ["a", "b", "y"], GOOD_ROWS)
    other = write_csv(tmp_path / "cols.csv", ["a", "c", "y"], GOOD_ROWS[:5])
    with pytest.raises(DataFormatError, match=r"cols.csv: columns \['a', 'c', 'y'\] differ from the training file's "
                                              r"\['a', 'b', 'y'\]"):
        load_csv(train, target="y", test_path=other)
    unseen = write_csv(tmp_path / "unseen.csv", ["a", "b", "y"], [[1.0, 2.0, "a"], [1.0, 2.0, "z"]])
    with pytest.raises(DataFormatError, match=r"unseen.csv: target column 'y' holds 'z' at line 3, a class the "
                                              r"training file .*train.csv does not have; expected one of 'a', 'b'"):
        load_csv(train, target="y", test_path=unseen)
    with pytest.raises(FileNotFoundError, match=r"Expected `test_path` to be a CSV file"):
        load_csv(train, target="y", test_path=tmp_path / "missing.csv")


# ---- NPZ -------------------------------------------------------------------------------------


def blobs(n: int, classes: int = 3, shape: tuple[int, ...] = (4,)) -> tuple[np.ndarray, np.ndarray]:
    y = np.arange(n) % classes
    x = RNG.normal(size=(n, *shape)).astype(np.float32) + y.reshape(-1, *([1] * len(shape)))
    return x, y


def test_npz_classification_regression_and_test_arrays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x, y = blobs(60, shape=(1, 4, 4))  # images keep their shape; each pixel is standardised
    np.savez(tmp_path / "images.npz", x=x, y=y)
    data = load_npz(tmp_path / "images.npz", seed=2)
    assert data.task == "classification" and data.num_outputs == 3 and data.input_shape == (1, 4, 4)
    assert data.class_names == () and len(data.test) == 12
    assert torch.allclose(data.train.x.mean(0), torch.zeros(1, 4, 4), atol=1e-5)
    xt, yt = blobs(9)
    x2, y2 = blobs(40)
    np.savez(tmp_path / "with_test.npz", x=x2, y=y2.reshape(-1, 1), x_test=xt, y_test=yt)
    data = load_dataset("npz", data_path=tmp_path / "with_test.npz")
    assert len(data.test) == 9 and data.test.y.tolist() == yt.tolist() and len(data.train) + len(data.valid) == 40
    target = x2 @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.25
    np.savez(tmp_path / "reg.npz", x=x2, y=target)
    data = load_npz(tmp_path / "reg.npz")
    assert data.task == "regression" and data.train.y.shape == (len(data.train), 1)
    assert main(["train", "dataset=npz", f"data_path={tmp_path / 'reg.npz'}", "model=mlp_regressor", "method=mse",
                 f"run_dir={tmp_path / 'r'}", *TINY]) == 0
    assert "test_mse" in capsys.readouterr().out
    assert main(["train", "dataset=npz", f"data_path={tmp_path / 'with_test.npz'}", f"run_dir={tmp_path / 'c'}",
                 *TINY]) == 0
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["step"] == 5


def _npz_cases() -> list[tuple[dict[str, np.ndarray], dict[str, str], str]]:
    x, y = blobs(30)
    nan_x = x.copy()
    nan_x[4, 2] = np.nan
    return [
        ({"x": x}, {}, r"no array 'y'; expected arrays 'x' and 'y' \(and optionally 'x_test', 'y_test'\), but found "
                       r"\['x'\]"),
        ({"features": x, "y": y}, {}, r"no array 'x'"),
        ({"x": x, "y": y[:29]}, {}, r"array 'y' has 29 rows, but array 'x' has 30; expected one target per row"),
        ({"x": x, "y": np.stack([y, y], 1)}, {}, r"array 'y' has shape \(30, 2\); expected one target per row"),
        ({"x": x, "y": y, "x_test": x[:, :3], "y_test": y}, {}, r"array 'x_test' has rows of shape \(3,\), but array "
                                                                r"'x' has \(4,\)"),
        ({"x": x, "y": y, "x_test": x}, {}, r"array 'x_test' is given without array 'y_test'"),
        ({"x": nan_x, "y": y}, {}, r"array 'x' holds nan at index \(4, 2\); expected finite numbers"),
        ({"x": x, "y": y + 0.5}, {"task": "classification"}, r"array 'y' holds 0.5 at row 0; expected integer class "
                                                               r"labels for classification"),
        ({"x": x, "y": y - 1}, {}, r"array 'y' holds -1 at row 0; expected class indices >= 0"),
        ({"x": x, "y": y, "x_test": x[:5], "y_test": np.array([0, 1, 2, 3, 1])}, {},
         r"array 'y_test' holds 3 at row 3, out of range: the training labels array 'y' go up to 2, so expected class "
         r"indices in 0..2"),
        ({"x": x, "y": np.ones(30, dtype=np.int64)}, {}, r"array 'y' holds one class only \(1 in all 30 rows\)"),
        ({"x": np.array([["a"]] * 30), "y": y}, {}, r"array 'x' has dtype <U1; expected numbers"),
        ({"x": x[:0], "y": y[:0]}, {}, r"array 'x' has no rows"),
    ]


@pytest.mark.parametrize(("arrays", "options", "message"), _npz_cases())
def test_bad_npz_names_file_array_expected_and_found(
    tmp_path: Path, arrays: dict[str, np.ndarray], options: dict[str, str], message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(DataFormatError, match=f"^{re.escape(str(path))}: {message}"):
        load_npz(path, **options)  # type: ignore[arg-type]
    assert main(["train", "dataset=npz", f"data_path={path}", f"run_dir={tmp_path / 'run'}", *TINY,
                 *(f"{k}={v}" for k, v in options.items())]) == 2
    assert capsys.readouterr().err.startswith(f"adaloss: error: {path}: ")


def test_npz_that_is_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    with pytest.raises(DataFormatError, match=r"text.npz: not a readable NPZ archive .*; expected one written by "
                                              r"numpy.savez"):
        load_npz(tmp_path / "text.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(DataFormatError, match=r"one.npy: a single .npy array of shape \(3,\)"):
        load_npz(tmp_path / "one.npy")
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}] * 4, dtype=object), y=np.arange(4))
    with pytest.raises(DataFormatError, match=r"objects.npz: array 'x' cannot be read \(.*allow_pickle"):
        load_npz(tmp_path / "objects.npz")
    with pytest.raises(FileNotFoundError, match=r"Expected `data_path` to be an NPZ archive"):
        load_npz(tmp_path / "missing.npz")


# ---- config keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["dataset=csv"], r"Expected `data_path` to be the path of your CSV file for dataset='csv', but got None"),
        (["dataset=csv", "data_path=a.csv"], r"Expected `target` to name the CSV file's target column"),
        (["data_path=a.csv"], r"`data_path` applies to dataset='csv' or 'npz' \(your own file\) only, but got "
                              r"dataset='digits' \(and data_path='a.csv'\)"),
        (["target=y"], r"`target` applies to dataset='csv' \(your own file\) only, but got dataset='digits'"),
        (["dataset=npz", "data_path=a.npz", "target=y"], r"`target` applies to dataset='csv' only \(an NPZ file "
                                                          r"names its arrays x and y\)"),
        (["dataset=npz", "data_path=a.npz", "test_path=b.npz"], r"`test_path` applies to dataset='csv' only"),
        (["dataset=csv", "data_path=[1]", "target=y"], r"Expected `data_path` to be a string, but got \[1\]"),
    ],
)
def test_config_keys_name_key_allowed_and_received(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_unset_data_keys_leave_the_identity_of_older_runs_unchanged() -> None:
    identity = TrainConfig().identity()
    assert not {"data_path", "target", "test_path"} & set(identity)
    own = load_config(None, ["dataset=csv", "data_path=a.csv", "target=y", "test_path=b.csv"]).identity()
    assert (own["data_path"], own["target"], own["test_path"]) == ("a.csv", "y", "b.csv")


def test_unknown_dataset_lists_the_file_formats() -> None:
    with pytest.raises(ValueError, match=r"Expected `dataset` to be one of \[.*'csv'.*'npz'.*\], but got 'cvs'"):
        load_dataset("cvs")


# ---- data= in the Python API -----------------------------------------------------------------


class PairDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """A map-style dataset of (x, y) pairs, with Python int labels."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.x[i]), int(self.y[i])


def _tiny(tmp_path: Path, name: str) -> TrainConfig:
    return load_config(None, [*TINY, f"run_dir={tmp_path / name}"])


def test_train_accepts_splits_arrays_tensors_dicts_and_datasets(tmp_path: Path) -> None:
    x, y = blobs(60)
    forms = {
        "arrays": (x, y),
        "tensors": (torch.from_numpy(x), torch.from_numpy(y)),
        "lists": (x.tolist(), y.tolist()),
        "dataset": PairDataset(x, y),
        "tensor_dataset": torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
    }
    finals = {}
    for name, data in forms.items():
        summary = adaloss.train(_tiny(tmp_path, name), data=data)
        assert summary["step"] == 5
        finals[name] = summary["final"]
    # the same rows in any form: the same splits, so the same run
    assert all(final == finals["arrays"] for final in finals.values())
    splits = as_splits((x, y))
    assert isinstance(splits, DatasetSplits) and splits.task == "classification" and len(splits.test) == 12
    summary = adaloss.train(_tiny(tmp_path, "splits"), data=splits)
    assert summary["final"] == finals["arrays"]  # seed 0 in both
    given = as_splits({"x": x[:45], "y": y[:45], "x_test": x[45:], "y_test": y[45:]})
    assert len(given.test) == 15
    assert adaloss.train(_tiny(tmp_path, "dict"), data={"x": x[:45], "y": y[:45], "x_test": x[45:],
                                                        "y_test": y[45:]})["step"] == 5
    reg = x @ np.ones(4)
    cfg = load_config(None, [*TINY, f"run_dir={tmp_path / 'reg'}", "model=mlp_regressor", "method=mse"])
    assert "test_mse" in adaloss.train(cfg, data=(x, reg))["final"]
    # the config's task decides how integral labels are read
    assert as_splits((x, y), task="regression").task == "regression"
    assert as_splits((x, y.astype(np.float64)), task="embedding").task == "classification"


def test_compare_takes_data(tmp_path: Path) -> None:
    x, y = blobs(60)
    results = adaloss.compare(_tiny(tmp_path, "unused"), methods=["ce"], seeds=[0, 1], out_dir=tmp_path / "cmp",
                              data=(x, y))
    assert [r.seed for r in results] == [0, 1] and all("test_error" in r.final for r in results)
    assert (tmp_path / "cmp" / "ce" / "seed1" / "summary.json").exists()


@pytest.mark.parametrize(
    ("make", "options", "error", "message"),
    [
        (lambda x, y: (x, y + 0.5), {"task": "classification"}, ValueError,
         r"`data`: 'y' holds 0.5 at row 0; expected integer class labels for classification"),
        (lambda x, y: (x, y - 1), {}, ValueError, r"`data`: 'y' holds -1 at row 0; expected class indices >= 0"),
        (lambda x, y: (torch.from_numpy(x), torch.from_numpy(y) - 2), {}, ValueError, r"'y' holds -2 at row 0"),
        (lambda x, y: {"x": x, "y": y, "x_test": x, "y_test": y + 1}, {}, ValueError,
         r"`data`: 'y_test' holds 3 at row 2, out of range: the training labels 'y' go up to 2"),
        (lambda x, y: (x, np.zeros_like(y)), {}, ValueError, r"`data`: 'y' holds one class only"),
        (lambda x, y: (x, y[:-1]), {}, ValueError, r"`data`: 'y' has 59 rows, but 'x' has 60"),
        (lambda x, y: {"x": x, "label": y}, {}, ValueError,
         r"Expected `data` to have the keys 'x' and 'y' .*\(unknown: \['label'\]\) \(missing: \['y'\]\)"),
        (lambda x, y: (x, y, x), {}, ValueError, r"Expected `data` as a tuple to be an \(x, y\) pair, but got 3 items"),
        (lambda x, y: "data.csv", {}, TypeError, r"Expected `data` to be a DatasetSplits, an \(x, y\) pair .* but got "
                                                 r"str"),
        (lambda x, y: PairDataset(x[:0], y[:0]), {}, ValueError, r"the PairDataset is empty"),
        (lambda x, y: torch.utils.data.TensorDataset(torch.from_numpy(x)), {}, TypeError,
         r"Dataset of \(x, y\) pairs, but item 0 is tuple of 1"),
    ],
)
def test_bad_data_in_python_names_data_expected_and_found(
    tmp_path: Path, make, options: dict[str, str], error: type[Exception], message: str  # type: ignore[no-untyped-def]
) -> None:
    x, y = blobs(60)
    with pytest.raises(error, match=message):
        as_splits(make(x, y), **options)  # type: ignore[arg-type]
    cfg = load_config(None, [*TINY, f"run_dir={tmp_path / 'run'}", *(f"{k}={v}" for k, v in options.items())])
    with pytest.raises(error, match=message):
        adaloss.train(cfg, data=make(x, y))
    assert not (tmp_path / "run").exists()


def test_task_inference_rule() -> None:
    assert infer_task(np.array([0, 1, 5])) == "classification"  # an integer dtype is class labels
    assert infer_task(np.arange(1000)) == "classification"
    assert infer_task(np.arange(MAX_INFERRED_CLASSES, dtype=float)) == "classification"
    assert infer_task(np.arange(MAX_INFERRED_CLASSES + 1, dtype=float)) == "regression"
    assert infer_task(np.array([0.0, 0.5, 1.0])) == "regression"


# ---- one task split for datasets and the trainer ------------------------------------------------


def test_split_for_task_names_the_option_that_does_not_fit(tmp_path: Path) -> None:
    x, y = blobs(100, classes=4)
    data = as_splits((x, y))
    thin = split_for_task(data, minority_classes=[1], minority_fraction=0.5, seed=3)
    assert thin.minority_classes == (1,) and split_for_task(thin, minority_classes=[1]) is thin
    embedded = split_for_task(data, task="embedding", train_classes=[0, 1], embedding_dim=8)
    assert embedded.task == "embedding" and split_for_task(embedded, task="embedding", train_classes=[1, 0],
                                                           embedding_dim=8) is embedded
    cases = [
        ({"task": "regression"}, "task", r"Expected `task` for dataset 'data' to be one of \['classification', "
                                         r"'embedding'\], but got 'regression'"),
        ({"task": "embedding", "train_classes": [0, 9]}, "train_classes", r"but got \[0, 9\]"),
        ({"minority_classes": [7]}, "minority_classes", r"Expected `minority_classes` to be distinct class labels"),
        ({"train_classes": [0, 1]}, "train_classes", r"applies to task='embedding' only"),
    ]
    for options, key, message in cases:
        with pytest.raises(TaskOptionError, match=message) as info:
            split_for_task(data, **options)  # type: ignore[arg-type]
        assert info.value.key == key
    with pytest.raises(TaskOptionError, match=r"already split by class with train_classes=\[0, 1\] and "
                                              r"embedding_dim=8, but the task asks for train_classes=\[0, 2\]"):
        split_for_task(embedded, task="embedding", train_classes=[0, 2], embedding_dim=8)
    # the trainer's config keys go through the same function, named as config keys
    cfg = load_config(None, [*TINY, f"run_dir={tmp_path}", "task=embedding", "train_classes=[0,9]", "model=embedding",
                             "method=contrastive"])
    with pytest.raises(ConfigError, match=r"Invalid config key `train_classes` for dataset 'data': "):
        adaloss.train(cfg, data=(x, y))


def test_a_class_index_with_no_rows_warns_naming_it() -> None:
    x, y = blobs(60)
    y = np.where(y == 1, 3, y)  # classes 0, 2, 3: index 1 has no rows
    with pytest.warns(UserWarning, match=r"no row of class\(es\) \[1\]; the model gets 4 outputs"):
        splits = as_splits((x, y))
    assert splits.num_outputs == 4
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        as_splits(blobs(60))  # every class present: silent
