from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch
import yaml


@pytest.fixture(autouse=True)
def _threads() -> None:
    # small ops are faster on one thread, and results do not depend on the machine's core count
    torch.set_num_threads(1)


# ---------------------------------------------------------------------------- kill and resume


@dataclass
class ResumedRun:
    """What :func:`kill_and_resume` ran: the uninterrupted run and the killed-then-resumed one."""

    full: Path
    part: Path
    #: the step of the checkpoint the killed run left behind (where the resume started)
    killed_at: int
    full_summary: dict[str, Any]
    resumed_summary: dict[str, Any]


#: checkpoint entries that may differ between two runs of the same computation
_WALL_CLOCK_KEYS = frozenset({"elapsed_s"})


def assert_bitwise_equal(a: Any, b: Any, where: str = "") -> None:
    """``a`` and ``b`` are the same nested state: tensors of one dtype and shape with the same bits,
    the same keys, items and plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        assert torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.nan_to_num(), b.nan_to_num())
                                     and torch.equal(a.isnan(), b.isnan())), f"{where}: tensors differ"
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            assert_bitwise_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bitwise_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} vs {b!r}"  # NaN == NaN here


def _compare_runs(full: Path, part: Path) -> None:
    """Everything the two runs wrote that does not measure wall time is identical: the final
    metrics, every ``*.jsonl`` log record, and the last checkpoint bit for bit."""
    a, b = (json.loads((d / "summary.json").read_text()) for d in (full, part))
    assert a["step"] == b["step"] and a["final"] == b["final"] and a["config"] == b["config"]
    logs = sorted(p.name for p in full.glob("*.jsonl"))
    assert logs == sorted(p.name for p in part.glob("*.jsonl"))
    from adaloss.training import read_jsonl

    for name in logs:
        assert read_jsonl(full / name) == read_jsonl(part / name), name
    from adaloss.checkpoint import load_checkpoint

    ca, cb = (load_checkpoint(d / "checkpoints" / "last.pt") for d in (full, part))
    assert ca.keys() == cb.keys()
    for k in ca.keys() - _WALL_CLOCK_KEYS:
        assert_bitwise_equal(ca[k], cb[k], f"checkpoint[{k!r}]")


@pytest.fixture
def compare_runs() -> Callable[[Path, Path], None]:
    """``compare_runs(full, part)``: both run directories hold the same results bit for bit (final
    metrics, every ``*.jsonl`` record, the last checkpoint but for its wall-clock time)."""
    return _compare_runs


def _train_killed_in_process(cfg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train ``cfg`` and die (``KeyboardInterrupt``) right after its first checkpoint is written."""
    from adaloss.training import train
    from adaloss.training.trainer import Trainer

    original = Trainer.save_checkpoint

    def save_then_die(self: Trainer) -> Path:
        original(self)
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Trainer, "save_checkpoint", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            train(cfg)


def _cli(config_file: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "adaloss", "train", "-c", str(config_file), f"run_dir={run_dir}", *extra]


def _train_killed_in_subprocess(config_file: Path, run_dir: Path, env: dict[str, str]) -> None:
    """``adaloss train`` in a child process, SIGKILLed as soon as it has written a checkpoint."""
    proc = subprocess.Popen(_cli(config_file, run_dir), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = run_dir / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    try:
        while not ckpt.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert ckpt.exists(), "the run wrote no checkpoint before it ended"


@pytest.fixture
def kill_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., ResumedRun]:
    """``kill_and_resume(cfg)``: train ``cfg`` (a ``TrainConfig`` with ``checkpoint_every``) to its
    end in ``tmp_path/full``; train it again in ``tmp_path/part``, killed after a checkpoint, and
    resume that run to the end; then check that both runs wrote the same results bit for bit
    (final metrics, every ``*.jsonl`` log, the last checkpoint but for its wall-clock time).

    ``kill="raise"`` (the default) dies in this process right after the first checkpoint (a
    ``KeyboardInterrupt`` from ``Trainer.save_checkpoint``); ``kill="subprocess"`` runs
    ``adaloss train`` in child processes and SIGKILLs the first as soon as a checkpoint exists.
    """

    def run(cfg: Any, *, kill: Literal["raise", "subprocess"] = "raise") -> ResumedRun:
        from adaloss.checkpoint import load_checkpoint
        from adaloss.training import train

        assert cfg.checkpoint_every > 0, "a run without checkpoints cannot resume"
        full, part = tmp_path / "full", tmp_path / "part"
        if kill == "raise":
            full_summary = train(cfg.replace(run_dir=str(full)))
            _train_killed_in_process(cfg.replace(run_dir=str(part)), monkeypatch)
        elif kill == "subprocess":
            config_file = tmp_path / "config.yaml"
            config_file.write_text(yaml.safe_dump({k: v for k, v in cfg.to_dict().items() if k != "run_dir"}))
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            subprocess.run(_cli(config_file, full), check=True, env=env, capture_output=True)
            full_summary = json.loads((full / "summary.json").read_text())
            _train_killed_in_subprocess(config_file, part, env)
        else:
            raise ValueError(f"Expected `kill` to be 'raise' or 'subprocess', but got {kill!r}.")
        assert not (part / "summary.json").exists(), "the run finished before it could be killed"
        killed_at = int(load_checkpoint(part / "checkpoints" / "last.pt")["step"])
        assert 0 <= killed_at < cfg.steps  # 0: killed inside the offline work of prepare()
        if kill == "raise":
            resumed_summary = train(cfg.replace(run_dir=str(part)), resume=True)
        else:
            subprocess.run(_cli(config_file, part, "--resume"), check=True, env=env, capture_output=True)
            resumed_summary = json.loads((part / "summary.json").read_text())
        assert resumed_summary["final"] == full_summary["final"]
        _compare_runs(full, part)
        return ResumedRun(full, part, killed_at, full_summary, resumed_summary)

    return run


# ---------------------------------------------------------------------------- a killed CMA-ES search


@pytest.fixture
def search_killed_after(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], contextlib.AbstractContextManager[None]]:
    """``with search_killed_after(n): …``: the CMA-ES search is killed (``KeyboardInterrupt``) right
    after it has written its state for generation ``n``; the block expects that and restores the search."""
    import adaloss.methods.search as search

    @contextlib.contextmanager
    def killed(generation: int) -> Iterator[None]:
        original = search._write_state
        calls = {"n": 0}

        def write_then_die(path: Any, state: Any) -> None:
            original(path, state)
            calls["n"] += 1
            if calls["n"] == generation:
                raise KeyboardInterrupt

        monkeypatch.setattr(search, "_write_state", write_then_die)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(search, "_write_state", original)

    return killed
