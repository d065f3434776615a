"""``method=hd_sgd | schedulefree_sgd | prodigy | dadapt_sgd``: the task's plain loss trained with
an optimiser that needs no learning-rate tuning, in place of the run's."""

from __future__ import annotations

import sys
from pathlib import Path

import dadaptation
import prodigyopt
import pytest
import schedulefree
import torch
from torch import nn

from adaloss.optim import HypergradientSGD
from adaloss.training import ConfigError, TrainConfig, build_trainer, train
from adaloss.training.evaluation import evaluate


def _cfg(tmp: Path, method: str, **changes: object) -> TrainConfig:
    return TrainConfig(method=method, steps=40, batch_size=32, eval_every=20, log_every=10, progress="off",
                       model_args={"hidden": [16]}, run_dir=str(tmp)).replace(**changes)


def test_each_peer_trains_with_its_optimiser_and_the_recommended_settings(tmp_path: Path) -> None:
    hd = build_trainer(_cfg(tmp_path / "hd", "hd_sgd", lr=0.05, momentum=0.9, weight_decay=1e-4))
    assert isinstance(hd.optimizer, HypergradientSGD)
    group = hd.optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["hypergrad_lr"]) == (0.05, 0.9, 1e-4, 1e-3)
    assert isinstance(hd.learner.criterion, nn.CrossEntropyLoss)
    sf = build_trainer(_cfg(tmp_path / "sf", "schedulefree_sgd", lr=0.02, steps=200))
    assert isinstance(sf.optimizer, schedulefree.SGDScheduleFree)
    group = sf.optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["warmup_steps"]) == (pytest.approx(0.2), 0.9, 10)  # 10×, 5 %
    pr = build_trainer(_cfg(tmp_path / "pr", "prodigy", weight_decay=1e-3))
    assert isinstance(pr.optimizer, prodigyopt.Prodigy)
    assert (pr.optimizer.param_groups[0]["lr"], pr.optimizer.param_groups[0]["weight_decay"]) == (1.0, 1e-3)
    da = build_trainer(_cfg(tmp_path / "da", "dadapt_sgd", method_args={"momentum": 0.5, "lr": 0.5}))
    assert isinstance(da.optimizer, dadaptation.DAdaptSGD)
    assert (da.optimizer.param_groups[0]["lr"], da.optimizer.param_groups[0]["momentum"]) == (0.5, 0.5)
    reg = build_trainer(_cfg(tmp_path / "reg", "prodigy", dataset="diabetes", model="mlp_regressor"))
    assert isinstance(reg.learner.criterion, nn.MSELoss)


def test_the_hypergradient_moves_the_logged_learning_rate(tmp_path: Path) -> None:
    summary = train(_cfg(tmp_path, "hd_sgd", lr=0.01, method_args={"hypergrad_lr": 0.01}))
    import json

    lrs = [json.loads(line)["lr"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
           if '"lr"' in line]
    assert lrs and all(lr != 0.01 for lr in lrs)
    assert summary["final"]["test_error"] < 0.5


def test_schedule_free_is_evaluated_at_its_averaged_weights_and_ends_there(tmp_path: Path) -> None:
    trainer = build_trainer(_cfg(tmp_path, "schedulefree_sgd", steps=30, eval_every=0))
    opt = trainer.optimizer
    assert not opt.param_groups[0]["train_mode"]  # the package creates it in eval mode
    trainer.fit()
    assert not opt.param_groups[0]["train_mode"]  # the model ends at x
    x = [p.detach().clone() for p in trainer.model.parameters()]
    opt.train()
    y = [p.detach().clone() for p in trainer.model.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(x, y))
    # in train mode, Trainer.evaluate() scores x and gives y back
    expected = evaluate(_at_x(trainer.model, opt), trainer.eval_splits["test"], trainer.metrics)
    assert trainer.evaluate()["test_error"] == expected["error"]
    assert opt.param_groups[0]["train_mode"]
    for p, b in zip(trainer.model.parameters(), y):  # back at y, to rounding (the package recomputes it from x and z)
        torch.testing.assert_close(p.detach(), b, rtol=0, atol=1e-6)


def _at_x(model: nn.Module, opt: torch.optim.Optimizer) -> nn.Module:
    import copy

    opt.eval()
    frozen = copy.deepcopy(model)
    opt.train()
    return frozen


@pytest.mark.parametrize("method", ["hd_sgd", "schedulefree_sgd", "prodigy"])
def test_resume_is_exact(tmp_path: Path, kill_and_resume, method: str) -> None:  # type: ignore[no-untyped-def]
    run = kill_and_resume(_cfg(tmp_path / "cfg", method, steps=12, checkpoint_every=5, eval_every=6,
                               method_args={"hypergrad_lr": 0.01} if method == "hd_sgd" else {}))
    assert run.killed_at == 5


@pytest.mark.parametrize(("module", "method"), [("schedulefree", "schedulefree_sgd"), ("prodigyopt", "prodigy"),
                                                ("dadaptation", "dadapt_sgd")])
def test_a_missing_package_says_which_extra_installs_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        module: str, method: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=rf"{method}.*'{module}'.*\.\[peers\]"):
        build_trainer(_cfg(tmp_path, method))


def test_bad_input_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"leave `optimizer` at 'sgd'.*optimizer='adam'"):
        build_trainer(_cfg(tmp_path, "prodigy", optimizer="adam"))
    with pytest.raises(ValueError, match="`hypergrad_lr`"):
        build_trainer(_cfg(tmp_path, "hd_sgd", method_args={"hypergrad_lr": -1.0}))
    with pytest.raises(ValueError, match="`warmup_fraction`"):
        build_trainer(_cfg(tmp_path, "schedulefree_sgd", method_args={"warmup_fraction": 1.5}))
    with pytest.raises(TypeError, match=r"Unknown option.*\['betas'\].*method 'dadapt_sgd'"):
        build_trainer(_cfg(tmp_path, "dadapt_sgd", method_args={"betas": [0.9, 0.99]}))
    # an option of another peer is not silently ignored
    with pytest.raises(TypeError, match=r"Unknown option.*\['momentum'\].*method 'hd_sgd'"):
        build_trainer(_cfg(tmp_path, "hd_sgd", method_args={"momentum": 0.5}))
    with pytest.raises(TypeError, match=r"Unknown option.*\['warmup_fraction'\].*method 'prodigy'"):
        build_trainer(_cfg(tmp_path, "prodigy", method_args={"warmup_fraction": 0.1}))
