"""The trainer against a hand-written PyTorch loop, and resume-after-kill equivalence."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adaloss.data import load_dataset
from adaloss.models import create_model
from adaloss.training import TrainConfig, build_trainer, read_jsonl, train
from adaloss.training.trainer import TrainingDiverged

SMALL = {"model_args": {"hidden": [32]}, "progress": "off"}


def _hand_loop(cfg: TrainConfig) -> torch.nn.Module:
    """A minimal PyTorch loop: the same seed, model, sampling order and SGD settings."""
    data = load_dataset(cfg.dataset, valid_fraction=cfg.valid_fraction, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, data.input_shape, data.num_outputs, **cfg.model_args)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                          weight_decay=cfg.weight_decay)
    x, y = data.train.x, data.train.y
    g = torch.Generator().manual_seed(cfg.seed)
    perm, pos = torch.randperm(len(x), generator=g), 0
    for _ in range(cfg.steps):
        if pos + cfg.batch_size > len(x):
            perm, pos = torch.randperm(len(x), generator=g), 0
        idx = perm[pos : pos + cfg.batch_size]
        pos += cfg.batch_size
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_trainer_matches_hand_written_loop(tmp_path: Path, momentum: float) -> None:
    cfg = TrainConfig(steps=25, batch_size=64, lr=0.05, momentum=momentum, seed=4, run_dir=str(tmp_path), **SMALL)
    trainer = build_trainer(cfg)
    trainer.fit()
    reference = _hand_loop(cfg)
    for (name, p), q in zip(trainer.model.named_parameters(), reference.parameters()):
        assert torch.equal(p, q), name


def test_outputs_of_a_run(tmp_path: Path) -> None:
    cfg = TrainConfig(steps=40, batch_size=32, log_every=10, eval_every=20, checkpoint_every=10,
                      run_dir=str(tmp_path), **SMALL)
    t0 = time.perf_counter()
    summary = train(cfg)
    assert 0 < summary["wall_time_s"] <= time.perf_counter() - t0  # checkpoints must not double-count time
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [10, 20, 30, 40, 40]
    assert {"train_loss", "lr", "valid_error", "test_error"} <= set(records[1])
    assert set(summary["final"]) == {"valid_error", "test_error"}
    assert json.loads((tmp_path / "summary.json").read_text())["final"] == summary["final"]
    assert (tmp_path / "config.yaml").exists()
    assert records[0]["train_loss"] > records[3]["train_loss"]  # it learns


@pytest.mark.slow
def test_resume_after_kill_gives_identical_results(kill_and_resume: Callable[..., Any]) -> None:
    """A run SIGKILLed after a checkpoint (a real kill, in a subprocess) resumes to the uninterrupted run's bits."""
    cfg = TrainConfig(steps=1500, batch_size=32, log_every=50, eval_every=500, checkpoint_every=100, momentum=0.9,
                      model_args={"hidden": [32], "dropout": 0.2}, progress="off", threads=1)
    kill_and_resume(cfg, kill="subprocess")


def test_resume_refuses_a_different_configuration(tmp_path: Path) -> None:
    cfg = TrainConfig(steps=20, batch_size=32, checkpoint_every=10, run_dir=str(tmp_path), **SMALL)
    train(cfg)
    with pytest.raises(ValueError, match=r"different configuration \(lr: 0.01 -> 0.5\)"):
        train(cfg.replace(lr=0.5, steps=20), resume=True)


def test_divergence_stops_with_the_step(tmp_path: Path) -> None:
    cfg = TrainConfig(steps=200, batch_size=32, lr=1e6, log_every=10, run_dir=str(tmp_path), divergence_factor=None,
                      **SMALL)
    with pytest.raises(TrainingDiverged, match=r"Training loss became nan by step \d+"):
        train(cfg)


# ---- the metric-learning (embedding) task ----------------------------------------------------

EMBED = ["dataset=digits", "task=embedding", "model=embedding", "model_args.channels=8", "embedding_dim=8",
         "batch_size=30", "samples_per_class=6", "progress=off", "threads=1"]


def _recall_brute_force(emb: np.ndarray, labels: np.ndarray, k: int) -> tuple[float, float]:
    """Recall@k with distance ties broken against and in favour of the query: (lowest, highest).
    A query's nearest same-class item lies at distance s; it is surely among the k nearest when
    fewer than k other-class items lie at distance <= s, possibly when fewer than k items lie
    strictly closer than s."""
    d = ((emb[:, None, :] - emb[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    s = np.where(same, d, np.inf).min(axis=1, keepdims=True)
    sure = ((d <= s) & ~same).sum(axis=1) < k
    maybe = (d < s).sum(axis=1) < k
    return float(sure.mean()), float(maybe.mean())


def test_embedding_run_reports_retrieval_metrics_on_the_held_out_classes(tmp_path: Path) -> None:
    from adaloss.checkpoint import load_checkpoint
    from adaloss.cli import main
    from adaloss.metrics import nmi

    assert main(["train", *EMBED, "method=contrastive", "steps=20", "log_every=10", "eval_every=10",
                 "checkpoint_every=20", f"run_dir={tmp_path}"]) == 0
    keys = {f"{s}_{m}" for s in ("valid", "test") for m in ("recall@1", "recall@2", "recall@4", "recall@8", "nmi")}
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [10, 20, 20]
    assert keys <= set(records[0]) and keys == set(records[-1]) - {"step"}
    final = json.loads((tmp_path / "summary.json").read_text())["final"]
    assert set(final) == keys
    # recompute the test metrics from the final model on classes 5-9, independently of adaloss.metrics' search
    data = load_dataset("digits", task="embedding", embedding_dim=8)
    assert set(data.test.y.tolist()) == {5, 6, 7, 8, 9}
    model = create_model("embedding", data.input_shape, 8, channels=8)
    model.load_state_dict(load_checkpoint(tmp_path / "checkpoints" / "last.pt")["model"])
    model.eval()
    with torch.no_grad():
        emb = model(data.test.x)
    labels = data.test.y.numpy()
    for k in (1, 2, 4, 8):
        low, high = _recall_brute_force(emb.double().numpy(), labels, k)
        assert low - 1e-12 <= final[f"test_recall@{k}"] <= high + 1e-12 and high - low < 0.1
    assert final["test_nmi"] == pytest.approx(float(nmi(emb, data.test.y)))
    recalls = [final[f"test_recall@{k}"] for k in (1, 2, 4, 8)]
    assert 0 < recalls[0] < recalls[1] < recalls[2] < recalls[3] < 1  # not a degenerate score


def test_build_trainer_splits_given_data_by_class_and_samples_balanced_batches(tmp_path: Path) -> None:
    from adaloss.data.loader import ClassBalancedLoader
    from adaloss.training.config import ConfigError, load_config

    cfg = load_config(None, [*EMBED, "method=contrastive", "steps=5", f"run_dir={tmp_path}", "train_classes=[2,4,6]",
                             "batch_size=12", "samples_per_class=4"])
    for given in (load_dataset("digits"), load_dataset("digits", task="embedding", train_classes=[6, 4, 2],
                                                       embedding_dim=8)):  # compare passes the dataset's splits
        trainer = build_trainer(cfg, data=given)
        assert set(trainer.eval_splits["test"].y.tolist()) == {0, 1, 3, 5, 7, 8, 9}
        assert set(trainer.eval_splits["valid"].y.tolist()) == {2, 4, 6}
        loader = trainer.train_loader
        assert isinstance(loader, ClassBalancedLoader) and loader.classes.tolist() == [2, 4, 6]
        x, y = next(loader)
        assert trainer.model(x).shape == (12, 8) and y.view(3, 4).unique(dim=1).shape == (3, 1)
    with pytest.raises(ConfigError, match=r"split by class with train_classes=\[0, 1, 2, 3, 4\].*asks for "
                                          r"train_classes=\[2, 4, 6\]"):
        build_trainer(cfg, data=load_dataset("digits", task="embedding", embedding_dim=8))
    with pytest.raises(ConfigError, match=r"Invalid config key `train_classes` for dataset 'digits': Expected "
                                          r"`train_classes` to be .* but got \[2, 40\]"):
        build_trainer(cfg.replace(train_classes=[2, 40]))
