"""Nothing adaloss reads from disk can run code: every load path, fed a planted malicious file.

Each test plants a pickle whose unpickling would create a marker file (``os.system("touch ...")``
or ``Path.touch``) where adaloss reads one of its files, and checks that the load is refused with a
clear error (or the file ignored) and that the marker never appears.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

# ---------------------------------------------------------------------------- payloads


class _ShellPayload:
    """Unpickling runs ``touch <marker>`` in a shell."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class _TouchPayload:
    """Unpickling calls ``Path.touch(marker)`` (no shell)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (Path(self.marker),))


PAYLOADS = {"os.system": _ShellPayload, "Path.touch": _TouchPayload}


def _evil_pickle(marker: Path, kind: str = "os.system", *, wrap: bool = True) -> bytes:
    obj = PAYLOADS[kind](marker)
    # a dict that looks like the expected content, with the payload inside
    content = {"format": "adaloss-cma-search", "version": 1, "es": obj} if wrap else obj
    return pickle.dumps(content, protocol=pickle.HIGHEST_PROTOCOL)


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a planted file ran code"


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_the_payloads_do_run_code_when_unpickled(tmp_path: Path, kind: str) -> None:
    """A sanity check of the other tests: plain ``pickle.loads`` of a payload creates the marker."""
    marker = tmp_path / "proof"
    pickle.loads(_evil_pickle(marker, kind))  # noqa: S301 - the point of the check
    assert marker.exists()


# ---------------------------------------------------------------------------- CMA-ES search state

SMALL_SEARCH = {"sigma": 1.0, "popsize": 4, "generations": 2, "seed": 0}


def _sphere(x: np.ndarray, seed: int) -> float:
    return float(np.sum((x - 0.5) ** 2))


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_search_state_file_holding_a_pickle_is_refused_not_run(tmp_path: Path, marker: Path, kind: str) -> None:
    from adaloss.methods.search import SearchStateError, cma_search

    for name in ("taylorglo_search.json", "taylorglo_search.pkl", "state"):
        path = tmp_path / name
        path.write_bytes(_evil_pickle(marker, kind))
        with pytest.raises(SearchStateError, match=r"looks like a pickle.*never loaded") as info:
            cma_search(_sphere, np.zeros(3), state_path=path, **SMALL_SEARCH)
        assert str(path) in str(info.value)
        # protocol 0 pickles are text: they do not start with the PROTO opcode, but are not JSON either
        path.write_bytes(pickle.dumps(PAYLOADS[kind](marker), protocol=0))
        with pytest.raises(SearchStateError, match="not valid JSON") as info:
            cma_search(_sphere, np.zeros(3), state_path=path, **SMALL_SEARCH)
        assert str(path) in str(info.value)


def test_search_state_is_json_written_with_the_shared_atomic_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import adaloss.checkpoint
    import adaloss.methods.search as search

    assert not hasattr(search, "tempfile")  # no private copy of the atomic write
    calls: list[Path] = []

    def spy(path, write):  # type: ignore[no-untyped-def]
        calls.append(Path(path))
        return adaloss.checkpoint.atomic_write(path, write)

    monkeypatch.setattr(search, "atomic_write", spy)
    path = tmp_path / "state.json"
    result = search.cma_search(_sphere, np.zeros(3), state_path=path, **SMALL_SEARCH)
    assert calls == [path, path]  # once per generation
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # no temporary left
    state = json.loads(path.read_text())
    assert state["format"] == "adaloss-cma-search" and state["generation"] == 2
    assert len(state["records"]) == 2 and all(len(r["x"]) == 4 and len(r["f"]) == 4 for r in state["records"])
    assert min(min(r["f"]) for r in state["records"]) == result.fitness


def _finished_state(tmp_path: Path) -> tuple[Path, dict]:
    from adaloss.methods.search import cma_search

    path = tmp_path / "state.json"
    cma_search(_sphere, np.zeros(3), state_path=path, **SMALL_SEARCH)
    return path, json.loads(path.read_text())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not valid JSON"),
        (b"{\"format\": \"adaloss-cma-search\", ", "not valid JSON"),
        (b"\xff\xfe garbage", "not valid JSON"),
        (b"[1, 2, 3]", "expected 'format' == 'adaloss-cma-search', got 'list'"),
        (b"{\"format\": \"something-else\"}", "expected 'format' == 'adaloss-cma-search', got 'something-else'"),
        (b"{\"format\": \"adaloss-cma-search\", \"version\": 99}", "state version 99"),
        (b"{\"format\": \"adaloss-cma-search\", \"version\": 2, \"identity\": NaN}", "not valid JSON"),
    ],
)
def test_corrupt_or_foreign_search_state_names_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    from adaloss.methods.search import SearchStateError, cma_search

    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(SearchStateError, match=message) as info:
        cma_search(_sphere, np.zeros(3), state_path=path, **SMALL_SEARCH)
    assert str(path) in str(info.value) and "Remove the file" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.update(records="nope"), "'records' is not a list"),
        (lambda s: s.update(generation=5), "'records' is not a list of as many generations"),
        (lambda s: s["records"][1]["x"].pop(), r"generation 2: 'x' is not 4 candidates of 3 finite numbers"),
        (lambda s: s["records"][0]["x"][2].__setitem__(1, "1.0"), "generation 1: 'x' is not"),
        (lambda s: s["records"][0]["f"].__setitem__(0, "0.5"), "generation 1: 'f' is not 4 finite"),
        (lambda s: s["records"][0]["f"].__setitem__(0, [0.5]), "generation 1: 'f' is not"),
        (lambda s: s.__setitem__("identity", ["x0"]), "no 'identity' object"),
    ],
)
def test_malformed_search_state_names_the_file(tmp_path: Path, edit: Any, message: str) -> None:
    from adaloss.methods.search import SearchStateError, cma_search

    path, state = _finished_state(tmp_path)
    edit(state)
    path.write_text(json.dumps(state))
    with pytest.raises(SearchStateError, match=message) as info:
        cma_search(_sphere, np.zeros(3), state_path=path, **SMALL_SEARCH)
    assert str(path) in str(info.value)


def test_edited_candidates_do_not_replay(tmp_path: Path) -> None:
    from adaloss.methods.search import SearchStateError, cma_search

    path, state = _finished_state(tmp_path)
    state["records"][1]["x"][0][0] += 1e-6
    path.write_text(json.dumps(state))
    with pytest.raises(SearchStateError, match=r"replaying generation 2 does not give the candidates") as info:
        cma_search(_sphere, np.zeros(3), state_path=path, **SMALL_SEARCH)
    assert str(path) in str(info.value) and "pycma" in str(info.value)


# ---------------------------------------------------------------------------- TaylorGLO through train()


def _taylorglo_config(run_dir: Path):  # type: ignore[no-untyped-def]
    from adaloss.training import TrainConfig

    return TrainConfig(method="taylorglo", steps=2, batch_size=32, eval_every=2, log_every=2, checkpoint_every=2,
                       model_args={"hidden": [8]}, progress="off", run_dir=str(run_dir),
                       method_args={"popsize": 2, "generations": 1, "partial_steps": 2, "workers": 1})


def test_taylorglo_ignores_an_old_pickled_search_state(
    tmp_path: Path, marker: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from adaloss.methods.taylorglo import LEGACY_SEARCH_STATE_FILE, SEARCH_STATE_FILE
    from adaloss.training import train

    assert LEGACY_SEARCH_STATE_FILE == "taylorglo_search.pkl" and SEARCH_STATE_FILE == "taylorglo_search.json"
    run = tmp_path / "run"
    run.mkdir()
    (run / LEGACY_SEARCH_STATE_FILE).write_bytes(_evil_pickle(marker))
    with caplog.at_level(logging.WARNING, logger="adaloss"):
        summary = train(_taylorglo_config(run))  # no --resume needed for the search state to be looked at
    assert "ignoring" in caplog.text and LEGACY_SEARCH_STATE_FILE in caplog.text and "never loaded" in caplog.text
    assert summary["final"]
    assert json.loads((run / SEARCH_STATE_FILE).read_text())["generation"] == 1


def test_taylorglo_refuses_a_pickle_planted_as_its_json_state(tmp_path: Path, marker: Path) -> None:
    from adaloss.methods.search import SearchStateError
    from adaloss.methods.taylorglo import SEARCH_STATE_FILE
    from adaloss.training import train

    run = tmp_path / "run"
    run.mkdir()
    (run / SEARCH_STATE_FILE).write_bytes(_evil_pickle(marker))
    with pytest.raises(SearchStateError, match="looks like a pickle") as info:
        train(_taylorglo_config(run))
    assert SEARCH_STATE_FILE in str(info.value)
    (run / SEARCH_STATE_FILE).write_text("{not json")
    with pytest.raises(SearchStateError, match="not valid JSON"):
        train(_taylorglo_config(run), resume=True)


# ---------------------------------------------------------------------------- checkpoints and exported files


def _plant_torch_file(path: Path, marker: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torch.save":  # the zip format torch.load expects, payload inside a plausible dict
        torch.save({"format": "adaloss-checkpoint", "version": 1, "kind": "adaloss-loss", "x": _ShellPayload(marker)},
                   path)
    else:  # a bare (legacy) pickle
        path.write_bytes(_evil_pickle(marker, wrap=False))


@pytest.mark.parametrize("fmt", ["torch.save", "raw pickle"])
def test_load_checkpoint_refuses_a_malicious_file(tmp_path: Path, marker: Path, fmt: str) -> None:
    from adaloss.checkpoint import CheckpointError, load_checkpoint

    path = tmp_path / "last.pt"
    _plant_torch_file(path, marker, fmt)
    with pytest.raises(CheckpointError, match="not a loadable adaloss checkpoint"):
        load_checkpoint(path)


def test_resuming_a_run_refuses_a_malicious_checkpoint(tmp_path: Path, marker: Path) -> None:
    from adaloss.checkpoint import CheckpointError
    from adaloss.training import TrainConfig, train

    run = tmp_path / "run"
    _plant_torch_file(run / "checkpoints" / "last.pt", marker, "torch.save")
    config = TrainConfig(steps=2, eval_every=2, log_every=2, checkpoint_every=2, progress="off", run_dir=str(run))
    with pytest.raises(CheckpointError, match="not a loadable adaloss checkpoint"):
        train(config, resume=True)


@pytest.mark.parametrize("fmt", ["torch.save", "raw pickle"])
def test_losses_load_refuses_a_malicious_file(tmp_path: Path, marker: Path, fmt: str) -> None:
    import adaloss
    from adaloss.checkpoint import CheckpointError

    path = tmp_path / "loss.pt"
    _plant_torch_file(path, marker, fmt)
    with pytest.raises(CheckpointError, match="not a loadable adaloss checkpoint"):
        adaloss.losses.load(path)


@pytest.mark.parametrize("where", ["file", "run dir policy.pt", "run dir last.pt"])
def test_ala_load_policy_refuses_a_malicious_file(tmp_path: Path, marker: Path, where: str) -> None:
    from adaloss.checkpoint import CheckpointError
    from adaloss.methods.ala import load_policy

    run = tmp_path / "run"
    target = {"file": tmp_path / "policy.pt", "run dir policy.pt": run / "policy.pt",
              "run dir last.pt": run / "checkpoints" / "last.pt"}[where]
    _plant_torch_file(target, marker, "torch.save")
    with pytest.raises(CheckpointError, match="not a loadable adaloss checkpoint"):
        load_policy(target if where == "file" else run)


# ---------------------------------------------------------------------------- dataset files


def test_cifar_python_batch_refuses_a_malicious_pickle(marker: Path) -> None:
    from adaloss.data import UnsafePickleError
    from adaloss.data.formats import read_cifar_python_batch

    for kind in PAYLOADS:
        with pytest.raises(UnsafePickleError, match="refusing to load global"):
            read_cifar_python_batch(_evil_pickle(marker, kind), source="data_batch_1")


@pytest.mark.parametrize("layout", ["folder", "archive"])
def test_load_dataset_refuses_malicious_cifar_batches(
    tmp_path: Path, marker: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    import io
    import tarfile

    import adaloss.data.registry as datasets
    from adaloss.data import ChecksumError, UnsafePickleError, load_dataset

    names = [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)] + ["cifar-10-batches-py/test_batch"]
    folder = tmp_path / "cifar-10"
    folder.mkdir()
    blob = _evil_pickle(marker, wrap=False)
    if layout == "folder":
        for name in names:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(blob)
    else:
        with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
            for name in names:
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    # first line of defence: the published md5 sums
    with pytest.raises(ChecksumError, match="md5 mismatch"):
        load_dataset("cifar10", data_dir=tmp_path)
    # second: even with matching sums, the restricted unpickler builds nothing but arrays
    monkeypatch.setattr(datasets, "check_md5", lambda path, expected: None)
    with pytest.raises(UnsafePickleError, match="refusing to load global"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_svhn_mat_reader_refuses_a_pickle(tmp_path: Path, marker: Path) -> None:
    from adaloss.data import DataFormatError
    from adaloss.data.formats import read_svhn_mat

    path = tmp_path / "train_32x32.mat"
    path.write_bytes(_evil_pickle(marker, wrap=False))
    with pytest.raises(DataFormatError, match="not a readable MATLAB file"):
        read_svhn_mat(path)


def test_byte_and_text_dataset_readers_refuse_a_pickle(tmp_path: Path, marker: Path) -> None:
    from adaloss.data import DataFormatError
    from adaloss.data.formats import read_cifar_binary, read_idx, read_numeric_table

    path = tmp_path / "planted"
    path.write_bytes(_evil_pickle(marker, wrap=False))
    with pytest.raises(DataFormatError):
        read_idx(path)
    with pytest.raises(DataFormatError):
        read_cifar_binary(path.read_bytes(), source=str(path))
    with pytest.raises(DataFormatError):
        read_numeric_table(path, num_columns=9)


# ---------------------------------------------------------------------------- configuration and run logs


def test_config_yaml_refuses_python_tags(tmp_path: Path, marker: Path) -> None:
    import yaml

    from adaloss.training.config import ConfigError, load_config, parse_overrides

    command = shlex.quote(f"touch {marker}")
    path = tmp_path / "config.yaml"
    for text in (
        f"method: !!python/object/apply:os.system [{command}]\n",
        f"!!python/object/apply:os.system [{command}]\n",
        f"method: !!python/object/new:subprocess.Popen [[touch, '{marker}']]\n",
    ):
        path.write_text(text)
        with pytest.raises((yaml.YAMLError, ConfigError)):
            load_config(path)
    with pytest.raises(ConfigError, match="Cannot parse the value of 'method'"):
        parse_overrides([f"method=!!python/object/apply:os.system [{command}]"])


def test_run_logs_are_read_as_json(tmp_path: Path, marker: Path) -> None:
    from adaloss.training import read_jsonl

    path = tmp_path / "metrics.jsonl"
    # a text (protocol 0) pickle: the lines are parsed as JSON, a line that is not JSON is skipped
    path.write_bytes(pickle.dumps(_ShellPayload(marker), protocol=0) + b'\n{"step": 1}\n')
    assert read_jsonl(path) == [{"step": 1}]
