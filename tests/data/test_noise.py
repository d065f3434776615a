"""Label noise: the share replaced, never the true class (symmetric), the next class (pair-flip),
seeded, on the training and validation splits only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adaloss.data import add_label_noise, corrupt_labels, load_dataset
from adaloss.training import ConfigError, TrainConfig, build_trainer


def test_symmetric_noise_flips_the_share_asked_and_never_to_the_true_class() -> None:
    y = torch.arange(60_000) % 10
    noisy = corrupt_labels(y, rate=0.4, num_classes=10, generator=torch.Generator().manual_seed(0))
    flipped = noisy != y
    assert abs(flipped.float().mean().item() - 0.4) <= 0.01
    assert int(flipped.sum()) == 24_000
    # the new class is spread over the other nine, none favoured much (each ≈ 1/9 of the flips)
    shifts = torch.bincount(((noisy - y) % 10)[flipped], minlength=10)
    assert shifts[0] == 0 and (shifts[1:].float() / 24_000 - 1 / 9).abs().max() < 0.01


def test_pairflip_moves_to_the_next_class_and_both_are_seeded() -> None:
    y = torch.arange(10_000) % 7
    noisy = corrupt_labels(y, rate=0.3, num_classes=7, kind="pairflip", generator=torch.Generator().manual_seed(1))
    flipped = noisy != y
    assert int(flipped.sum()) == 3000
    assert torch.equal(noisy[flipped], (y[flipped] + 1) % 7)
    again = corrupt_labels(y, rate=0.3, num_classes=7, kind="pairflip", generator=torch.Generator().manual_seed(1))
    other = corrupt_labels(y, rate=0.3, num_classes=7, kind="pairflip", generator=torch.Generator().manual_seed(2))
    assert torch.equal(noisy, again) and not torch.equal(noisy, other)
    assert torch.equal(y, torch.arange(10_000) % 7)  # the input is not modified


def test_the_splits_noisy_and_clean() -> None:
    data = load_dataset("digits", valid_fraction=0.2, seed=0)
    noisy = add_label_noise(data, rate=0.5, seed=3)
    assert torch.equal(noisy.test.y, data.test.y)
    assert (noisy.train.y != data.train.y).float().mean().item() == pytest.approx(0.5, abs=1 / len(data.train))
    assert (noisy.valid.y != data.valid.y).float().mean().item() == pytest.approx(0.5, abs=1 / len(data.valid))
    clean_valid = add_label_noise(data, rate=0.5, seed=3, valid=False)
    assert torch.equal(clean_valid.valid.y, data.valid.y) and torch.equal(clean_valid.train.y, noisy.train.y)


def test_bad_input_names_the_argument() -> None:
    y = torch.zeros(5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"`label_noise` to be in \[0, 1\), but got 1.0"):
        corrupt_labels(y, rate=1.0, num_classes=3)
    with pytest.raises(ValueError, match="`label_noise_type` to be one of"):
        corrupt_labels(y, rate=0.1, num_classes=3, kind="uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least two classes"):
        corrupt_labels(y, rate=0.1, num_classes=1)


def test_the_config_applies_and_records_the_noise(tmp_path: Path) -> None:
    cfg = TrainConfig(steps=2, progress="off", run_dir=str(tmp_path), label_noise=0.4, label_noise_type="pairflip")
    trainer = build_trainer(cfg)
    clean = load_dataset("digits", valid_fraction=cfg.valid_fraction, seed=cfg.seed)
    train_y = trainer.learner.context.train_split.y  # type: ignore[union-attr]
    assert (train_y != clean.train.y).float().mean().item() == pytest.approx(0.4, abs=1 / len(clean.train))
    assert torch.equal(train_y[train_y != clean.train.y], (clean.train.y[train_y != clean.train.y] + 1) % 10)
    assert cfg.identity()["label_noise"] == 0.4 and "label_noise" not in TrainConfig().identity()
    with pytest.raises(ConfigError, match="`label_noise_valid` applies with `label_noise` only"):
        TrainConfig(label_noise_valid=False)
    with pytest.raises(ConfigError, match="`label_noise` applies to classification"):
        TrainConfig(task="regression", label_noise=0.2)
