"""logger=tensorboard: the event file holds the scalars of metrics.jsonl, and the learned-loss figures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adaloss.cli import main
from adaloss.training import TrainConfig, read_jsonl, train

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def _events(run: Path) -> EventAccumulator:
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def _jsonl_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """``metrics.jsonl`` as TensorBoard holds it: per key, (step, value as float32) in order; nulls left out."""
    out: dict[str, list[tuple[int, float]]] = {}
    for record in read_jsonl(run / "metrics.jsonl"):
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                out.setdefault(key, []).append((record["step"], float(np.float32(value))))
    return out


def _tb_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    events = _events(run)
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_event_file_holds_the_scalars_of_metrics_jsonl_and_the_figures(tmp_path: Path) -> None:
    cfg = TrainConfig(method="adalfl", method_args={"init_steps": 2, "grad_ratio_every": 5}, steps=20, batch_size=32,
                      log_every=5, eval_every=10, model_args={"hidden": [16]}, progress="off",
                      logger=["jsonl", "tensorboard"], run_dir=str(tmp_path))
    train(cfg)
    expected = _jsonl_scalars(tmp_path)
    assert {"train_loss", "lr", "valid_error", "test_error", "prepare_meta_loss", "train_grad_norm_ratio"} <= set(expected)
    assert _tb_scalars(tmp_path) == expected
    # the figures of what was learned, added once at the end of the run
    images = _events(tmp_path).Tags()["images"]
    assert set(images) == {"figures/loss_evolution", "figures/implicit_lr"}
    assert [e.step for e in _events(tmp_path).Images("figures/loss_evolution")] == [20]


def test_a_resumed_run_shows_each_step_once(kill_and_resume: Callable[..., Any]) -> None:
    cfg = TrainConfig(steps=30, batch_size=32, log_every=5, eval_every=10, checkpoint_every=10,
                      model_args={"hidden": [16]}, progress="off", logger=["jsonl", "tensorboard"])
    run = kill_and_resume(cfg)
    assert len(list((run.part / "tensorboard").glob("events.out.tfevents.*"))) == 2
    # the killed process logged step 10 and the resumed one logged it again: TensorBoard purges the first
    assert _tb_scalars(run.part) == _jsonl_scalars(run.part) == _jsonl_scalars(run.full) == _tb_scalars(run.full)


def test_tensorboard_is_written_in_addition_to_metrics_jsonl(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "steps=10", "log_every=5", "model_args.hidden=[16]", "progress=off", "logger=tensorboard",
            f"run_dir={tmp_path}"]
    assert main(args) == 0
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "train_loss" in r] == [5, 10]  # plot reads it
    assert [e.step for e in _events(tmp_path).Scalars("train_loss")] == [5, 10]
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "fig")]) == 0
    assert main(args) == 2  # a fresh start needs --overwrite
    assert "already holds a run (metrics.jsonl, summary.json, tensorboard/)" in capsys.readouterr().err


def test_tensorboard_not_installed_is_a_named_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import adaloss.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "tensorboard_available", lambda: False)
    run = tmp_path / "run"
    assert main(["train", "steps=2", "model_args.hidden=[16]", "logger=tensorboard", f"run_dir={run}"]) == 2
    assert "pip install 'adaloss[tensorboard]'" in capsys.readouterr().err
    assert not run.exists()
