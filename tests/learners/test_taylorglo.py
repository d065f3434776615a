"""TaylorGLO end to end: CMA-ES over the Taylor loss with real partial trainings, divergence, resume."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import adaloss
from adaloss.data.types import TensorSplit
from adaloss.learners.taylorglo import TaylorGLOLearner
from adaloss.losses import TaylorLoss
from adaloss.methods.base import TrainingDiverged
from adaloss.methods.taylorglo import SEARCH_STATE_FILE, PartialTrainingFitness, TaylorGLO
from adaloss.models import create_model
from adaloss.training import TrainConfig, read_jsonl, train

SMALL = {"popsize": 4, "generations": 2, "partial_steps": 15, "workers": 1}


def _config(tmp_path: Path, name: str, **method_args: object) -> TrainConfig:
    return TrainConfig(method="taylorglo", steps=20, batch_size=32, eval_every=10, log_every=10,
                       checkpoint_every=10, model_args={"hidden": [16]}, progress="off",
                       method_args={**SMALL, **method_args}, run_dir=str(tmp_path / name))


def test_taylorglo_run_searches_freezes_and_exports(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="adaloss"):
        summary = train(_config(tmp_path, "a"))
    # progress of the search: generation, best fitness so far, time left
    assert "TaylorGLO generation 1/2, best fitness" in caplog.text and "s left" in caplog.text
    assert set(summary["final"]) == {"valid_error", "test_error"}
    first = read_jsonl(tmp_path / "a" / "metrics.jsonl")[0]
    assert first["step"] == 0 and first["prepare_evaluations"] == 8.0 and first["prepare_failures"] == 0.0
    assert 0.0 <= first["prepare_best_fitness"] <= 1.0  # a validation error
    loss = adaloss.losses.load(tmp_path / "a" / "checkpoints" / "last.pt")
    assert isinstance(loss, TaylorLoss) and loss.theta.abs().sum() > 0  # moved away from x0 = 0
    # θ stays frozen while training: every snapshot holds the same polynomial
    snaps = read_jsonl(tmp_path / "a" / "snapshots.jsonl")
    assert len(snaps) >= 2 and all(s["theta"] == snaps[0]["theta"] for s in snaps)
    assert snaps[0]["theta"] == loss.theta.tolist()


def test_fitness_is_the_validation_error_of_a_partial_training() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    train_split, valid = TensorSplit(x[:48], y[:48]), TensorSplit(x[48:], y[48:])
    factory = lambda: create_model("mlp", (5,), 3, hidden=[8])  # noqa: E731
    fitness = PartialTrainingFitness(
        task="classification", model_factory=factory, optimizer_class=torch.optim.SGD,
        optimizer_options={"lr": 0.1}, train=train_split, valid=valid, batch_size=16, steps=0 + 1)
    theta = np.array([0, 0, 1.0, 0, 0, 0, 0, 0])  # f = p - θ1 summed: pushes every probability up equally
    torch.manual_seed(7)
    value = fitness(TaylorLoss(theta=theta.tolist()), 7)
    # an independent recomputation: the same init, one SGD step on -mean(p - 0), then the error
    torch.manual_seed(7)
    model = factory()
    from adaloss.data.loader import BatchLoader

    xb, yb = next(BatchLoader(train_split, batch_size=16, seed=7))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    (-model(xb).softmax(-1).mean()).backward()
    opt.step()
    with torch.no_grad():
        expected = (model(valid.x).argmax(-1) != valid.y).float().mean().item()
    assert value == pytest.approx(expected)


def test_a_diverging_candidate_raises_and_the_search_survives(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    x = torch.randn(80, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    train_split, valid = TensorSplit(x[:64], y[:64]), TensorSplit(x[64:], y[64:])
    fitness = PartialTrainingFitness(
        task="regression", model_factory=lambda: torch.nn.Linear(3, 1), optimizer_class=torch.optim.SGD,
        optimizer_options={"lr": 0.1}, train=train_split, valid=valid, batch_size=16, steps=100)
    # L = -f: θ3 = 50 gives L = -25·b², an inverted parabola that gradient descent drives to ±∞
    with pytest.raises(TrainingDiverged):
        fitness(TaylorLoss(task="regression", theta=[0, 0, 0, 50.0, 0, 0, 0, 0]), 0)
    assert math.isfinite(fitness(TaylorLoss(task="regression", theta=[0, 0, 0, -1.0, 0, 1.0, 0, 0]), 0))  # L = ½b² - a·b = ½(y - x)² - ½x²: MSE/2
    with caplog.at_level(logging.WARNING, logger="adaloss"):
        mse_like = TaylorLoss(task="regression", theta=[0, 0, 0, -1.0, 0, 1.0, 0, 0])
        searcher = TaylorGLO(fitness, loss=mse_like, sigma=1.0, popsize=8, generations=3, seed=0)
        searcher.search()
    result = searcher.result
    assert result is not None and 0 < result.failures < result.evaluations and math.isfinite(result.fitness)
    assert "TrainingDiverged" in caplog.text


def test_killed_search_resumes_at_its_last_generation(tmp_path: Path, search_killed_after) -> None:  # type: ignore[no-untyped-def]
    full = train(_config(tmp_path, "full", generations=3))
    with search_killed_after(2):  # killed after generation 2 of 3
        train(_config(tmp_path, "part", generations=3))
    assert (tmp_path / "part" / SEARCH_STATE_FILE).exists()
    resumed = train(_config(tmp_path, "part", generations=3), resume=True)
    assert resumed["final"] == full["final"]
    a = adaloss.losses.load(tmp_path / "full" / "checkpoints" / "last.pt")
    b = adaloss.losses.load(tmp_path / "part" / "checkpoints" / "last.pt")
    assert torch.equal(a.theta, b.theta)


def test_search_state_with_other_settings_is_refused(tmp_path: Path) -> None:
    train(_config(tmp_path, "a"))
    with pytest.raises(ValueError, match="different settings"):
        # the search state of a run killed before its first checkpoint; without resume the run
        # directory is refused before the search ("already holds a run")
        shutil.rmtree(tmp_path / "a" / "checkpoints")
        (tmp_path / "a" / "summary.json").unlink()  # a run killed in its search has no summary either
        train(_config(tmp_path, "a", partial_steps=16), resume=True)


def test_bad_arguments_name_themselves() -> None:
    with pytest.raises(ValueError, match="popsize"):
        TaylorGLOLearner(popsize=1)
    with pytest.raises(TypeError, match="generations"):
        TaylorGLOLearner(generations=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="x0"):
        TaylorGLOLearner(x0=[0.0] * 7)
    with pytest.raises(TypeError, match="unknown_option|does not take"):
        train(TrainConfig(method="taylorglo", steps=2, progress="off", method_args={"unknown_option": 1}))
