"""``method=ce_weighted``: class-weighted cross-entropy from the training split's class counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from adaloss.training import TrainConfig, build_trainer


def _cfg(tmp: Path, **changes: object) -> TrainConfig:
    return TrainConfig(method="ce_weighted", steps=4, batch_size=32, progress="off", model_args={"hidden": [16]},
                       minority_classes=[1, 2], minority_fraction=0.25, run_dir=str(tmp)).replace(**changes)


@pytest.mark.parametrize("power", [1.0, 0.5])
def test_weights_are_a_power_of_the_inverse_training_frequencies(tmp_path: Path, power: float) -> None:
    trainer = build_trainer(_cfg(tmp_path, method_args={"power": power}))
    loss = trainer.learner.loss
    y = trainer.learner.context.train_split.y
    counts = torch.bincount(y).double()
    assert counts[1] < counts[0] / 2  # the minority classes were thinned
    expected = counts ** -power
    w = loss.weights.double()
    torch.testing.assert_close(w / w[0], expected / expected[0], rtol=1e-5, atol=0)
    # the loss it trains with: the weighted mean of the per-example NLL, by hand
    g = torch.Generator().manual_seed(0)
    z, t = torch.randn(20, len(counts), generator=g), torch.randint(0, len(counts), (20,), generator=g)
    nll = F.cross_entropy(z, t, reduction="none")
    torch.testing.assert_close(loss(z, t), (loss.weights[t] * nll).sum() / loss.weights[t].sum())


def test_bad_power_names_the_argument(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="power"):
        build_trainer(_cfg(tmp_path, method_args={"power": 3.0}))
