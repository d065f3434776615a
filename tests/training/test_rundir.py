"""``adaloss.training.rundir``: what counts as a run, what a fresh start clears, the one-writer lock,
finished-run records and atomic text files — each against files written by hand."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from adaloss.training.rundir import (
    RUN_FILES,
    RunDirectoryBusy,
    RunDirectoryError,
    RunDirLock,
    check_run_dir,
    clean_stale_temp_files,
    clear_run,
    finished_summary,
    holds_run,
    write_text_atomic,
)


def test_holds_run_names_what_marks_a_run(tmp_path: Path) -> None:
    assert holds_run(tmp_path / "missing") == [] and holds_run(tmp_path) == []
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "tensorboard").mkdir()
    assert holds_run(tmp_path) == []  # empty folders and foreign files are no run
    (tmp_path / "checkpoints" / "rank1").mkdir()
    (tmp_path / "checkpoints" / "rank1" / "last.pt").write_bytes(b"x")
    (tmp_path / "tensorboard" / "events.out.tfevents.1").write_bytes(b"x")
    (tmp_path / "summary.json").write_text("{}")
    assert holds_run(tmp_path) == ["summary.json", "checkpoints/", "tensorboard/"]


def test_check_run_dir_refuses_a_fresh_start_on_a_run(tmp_path: Path) -> None:
    check_run_dir(tmp_path, resume=False, overwrite=False)  # nothing there
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(RunDirectoryError, match=r"already holds a run \(metrics.jsonl\).*--resume.*--overwrite"):
        check_run_dir(tmp_path, resume=False, overwrite=False)
    check_run_dir(tmp_path, resume=True, overwrite=False)
    check_run_dir(tmp_path, resume=False, overwrite=True)
    with pytest.raises(ValueError, match="at most one of `resume`"):
        check_run_dir(tmp_path, resume=True, overwrite=True)


def test_clear_run_removes_the_run_files_only(tmp_path: Path) -> None:
    for name in RUN_FILES:
        if name in ("checkpoints", "tensorboard"):
            (tmp_path / name).mkdir()
            (tmp_path / name / "f").write_text("x")
        else:
            (tmp_path / name).write_text("x")
    (tmp_path / "notes.txt").write_text("mine")
    clear_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_stale_temp_files_go_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "checkpoints" / "rank0").mkdir(parents=True)
    stale = [tmp_path / ".summary.json.a1.tmp", tmp_path / "checkpoints" / "rank0" / ".last.pt.b2.tmp"]
    kept = [tmp_path / "data.tmp", tmp_path / "checkpoints" / "last.pt"]
    for p in [*stale, *kept]:
        p.write_text("x")
    assert sorted(clean_stale_temp_files(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)


def test_finished_summary_matches_the_recorded_configuration(tmp_path: Path) -> None:
    identity = {"lr": 0.1, "method": "ce"}
    assert finished_summary(tmp_path, identity) is None
    (tmp_path / "summary.json").write_text("{not json")
    assert finished_summary(tmp_path, identity) is None
    (tmp_path / "diverged.json").write_text(json.dumps({"config": identity, "diverged": "nan"}))
    assert finished_summary(tmp_path, identity) == {"config": identity, "diverged": "nan"}
    (tmp_path / "summary.json").write_text(json.dumps({"config": {**identity, "lr": 0.2}, "final": {}}))
    assert finished_summary(tmp_path, {**identity, "lr": 0.2}) == {"config": {"lr": 0.2, "method": "ce"}, "final": {}}
    assert finished_summary(tmp_path, {**identity, "lr": 0.3}) is None


def test_the_lock_admits_one_writer_and_names_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = RunDirLock(run)
    first.acquire()  # creates the folder and the lock file
    first.record_owner()
    assert (run / ".lock").read_text() == f"pid {os.getpid()}\n"
    with pytest.raises(RunDirectoryBusy, match=rf"in use by another adaloss process \(pid {os.getpid()}\)"):
        RunDirLock(run).acquire()  # another open file description: refused, as another process would be
    with pytest.raises(RunDirectoryBusy):
        RunDirLock(run).probe()
    first.release()
    RunDirLock(run).probe()  # free again; the probe takes nothing
    with RunDirLock(run) as again:
        assert again.held
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirectoryError, match="is a file"):
        RunDirLock(tmp_path / "file").acquire()


def test_atomic_text_gets_the_mode_of_a_plain_write(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    path = write_text_atomic(tmp_path / "atomic.txt", "héllo\n")
    assert path.read_text() == "héllo\n"
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    assert not list(tmp_path.glob(".*.tmp"))
