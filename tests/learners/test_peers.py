"""``method=libauc_ap``: LibAUC's mean-average-precision loss as the ALA protocols' peer.

LibAUC is an optional extra. These tests run with a naive reference of its estimator, written here
from the SOAP paper's update (Qi et al. 2021, Algorithm 1) with one Python loop per class and per
positive, injected as the ``libauc.losses`` module; where the real package is installed, it is
checked against that reference.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from adaloss.data import TensorSplit
from adaloss.data.loader import BatchLoader
from adaloss.training import TrainConfig, build_trainer


class NaiveMeanAP:
    """Per class k in the batch, per positive i: ℓ_ij = max(m − (f_i − f_j), 0)²;
    u_all_i ← (1−γ) u_all_i + γ mean_j ℓ_ij, u_pos_i ← (1−γ) u_pos_i + γ mean_j ℓ_ij [y_j = k];
    loss_k = mean_ij w_ij ℓ_ij with w_ij = (u_pos_i − u_all_i [y_j = k]) / u_all_i² held constant;
    the loss is the mean of loss_k over the classes present."""

    calls: list[dict[str, Tensor]] = []

    def __init__(self, data_len: int, num_labels: int, margin: float = 1.0, gamma: float = 0.9,
                 top_k: int = -1, surr_loss: str = "squared_hinge", device: object = None) -> None:
        assert surr_loss == "squared_hinge" and top_k == -1
        self.margin, self.gamma, self.num_labels = margin, gamma, num_labels
        self.u_all = torch.zeros(num_labels, data_len, 1)
        self.u_pos = torch.zeros(num_labels, data_len, 1)

    def __call__(self, y_pred: Tensor, y_true: Tensor, index: Tensor, task_id: Tensor) -> Tensor:
        NaiveMeanAP.calls.append({"y_pred": y_pred.detach().clone(), "y_true": y_true.clone(),
                                  "index": index.clone(), "task_id": task_id.clone()})
        g = self.gamma
        per_class = []
        for k in sorted(set(task_id.tolist())):
            f = y_pred[:, k]
            pos = [i for i in range(len(f)) if int(y_true[i, k]) == 1]
            terms = []
            for i in pos:
                r = int(index[i])
                sur = torch.clamp(self.margin - (f[i] - f), min=0) ** 2
                is_pos = y_true[:, k].to(sur.dtype)
                self.u_all[k, r, 0] = (1 - g) * self.u_all[k, r, 0] + g * sur.mean().detach()
                self.u_pos[k, r, 0] = (1 - g) * self.u_pos[k, r, 0] + g * (sur * is_pos).mean().detach()
                w = (self.u_pos[k, r, 0] - self.u_all[k, r, 0] * is_pos) / self.u_all[k, r, 0] ** 2
                terms.append(w.detach() * sur)
            per_class.append(torch.stack(terms).mean())
        return torch.stack(per_class).mean()


@pytest.fixture
def reference_libauc(monkeypatch: pytest.MonkeyPatch) -> type[NaiveMeanAP]:
    """``libauc.losses`` replaced by :class:`NaiveMeanAP` (call log emptied)."""
    package, losses = types.ModuleType("libauc"), types.ModuleType("libauc.losses")
    losses.meanAveragePrecisionLoss = NaiveMeanAP  # type: ignore[attr-defined]
    package.losses = losses  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "libauc", package)
    monkeypatch.setitem(sys.modules, "libauc.losses", losses)
    NaiveMeanAP.calls = []
    return NaiveMeanAP


def _cfg(tmp: Path, **changes: object) -> TrainConfig:
    return TrainConfig(method="libauc_ap", steps=6, batch_size=32, progress="off", model_args={"hidden": [16]},
                       minority_classes=[1, 2], minority_fraction=0.25, run_dir=str(tmp),
                       method_args={"pretrain_fraction": 0.5}).replace(**changes)


def test_loader_index_names_the_rows_of_the_same_batches() -> None:
    g = torch.Generator().manual_seed(0)
    split = TensorSplit(torch.randn(50, 3, generator=g), torch.randint(0, 4, (50,), generator=g))
    plain = BatchLoader(split, batch_size=8, seed=3)
    indexed = BatchLoader(split, batch_size=8, seed=3, return_index=True)
    for _ in range(15):  # across an epoch boundary (6 batches per epoch)
        (x, y), (xi, yi, idx) = next(plain), next(indexed)
        assert torch.equal(x, xi) and torch.equal(y, yi) and idx.dtype == torch.int64
        assert torch.equal(split.x[idx], x) and torch.equal(split.y[idx], y)


def test_steps_feed_the_ap_loss_softmax_scores_one_hot_targets_and_row_indices(
    tmp_path: Path, reference_libauc: type[NaiveMeanAP]
) -> None:
    trainer = build_trainer(_cfg(tmp_path))
    trainer.fit()
    calls = reference_libauc.calls
    assert len(calls) == 3  # steps 0-2 are cross-entropy (pretrain_fraction 0.5 of 6)
    split = trainer.learner.context.train_split
    classes = int(split.y.max()) + 1
    for c in calls:
        y = split.y[c["index"]]
        assert torch.equal(c["y_true"], F.one_hot(y, classes)) and torch.equal(c["task_id"], y)
        torch.testing.assert_close(c["y_pred"].sum(1), torch.ones(len(y)))
    assert len({tuple(c["index"].tolist()) for c in calls}) == 3
    learner = trainer.learner
    touched = torch.cat([c["index"] for c in calls])
    assert bool((learner.ap.u_all[:, touched] > 0).any()) and learner.state_dict()["steps"] == 6


def test_ap_phase_moves_the_positives_up(tmp_path: Path, reference_libauc: type[NaiveMeanAP]) -> None:
    """A gradient step on the AP loss alone raises the AP of the batch it was taken on."""
    from adaloss.metrics import average_precision

    trainer = build_trainer(_cfg(tmp_path, method_args={"pretrain_fraction": 0.0}, lr=0.5, optimizer="sgd",
                                 momentum=0.0))
    learner, model = trainer.learner, trainer.model
    x, y, index = next(trainer.train_loader)
    before = average_precision(model(x).detach(), y)
    for _ in range(5):
        learner.step((x, y, index))
    assert average_precision(model(x).detach(), y) > before


def test_libauc_matches_the_reference() -> None:
    real = pytest.importorskip("libauc.losses")
    g = torch.Generator().manual_seed(1)
    ours = real.meanAveragePrecisionLoss(data_len=40, num_labels=3, device="cpu")
    ref = NaiveMeanAP(data_len=40, num_labels=3)
    for _ in range(4):  # rows repeat across batches: the moving averages matter
        logits = torch.randn(12, 3, generator=g)  # LibAUC keeps its averages in float32
        y = torch.randint(0, 3, (12,), generator=g)
        index = torch.randperm(40, generator=g)[:12]
        grads = []
        for loss in (ours, ref):
            s = torch.softmax(logits, 1).requires_grad_(True)
            value = loss(s, F.one_hot(y, 3), index, task_id=y)
            grads.append((value.detach(), torch.autograd.grad(value, s)[0]))
        torch.testing.assert_close(grads[0], grads[1])
        torch.testing.assert_close(ours.u_all, ref.u_all)
        torch.testing.assert_close(ours.u_pos, ref.u_pos)


def test_resume_is_exact(tmp_path: Path, reference_libauc: type[NaiveMeanAP], kill_and_resume) -> None:  # type: ignore[no-untyped-def]
    run = kill_and_resume(_cfg(tmp_path / "cfg", steps=8, checkpoint_every=5))
    assert run.killed_at == 5


def test_missing_libauc_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "libauc.losses", None)
    with pytest.raises(ImportError, match=r"--no-deps libauc"):
        build_trainer(_cfg(tmp_path))


@pytest.mark.parametrize(("option", "value"), [("score", "logit"), ("pretrain_fraction", 1.0), ("gamma", 0.0),
                                               ("surrogate", "hinge2"), ("margin", -1.0),
                                               ("scale", 0.0)])
def test_bad_options_name_the_argument(tmp_path: Path, reference_libauc: type[NaiveMeanAP], option: str,
                                       value: object) -> None:
    with pytest.raises(ValueError, match=option):
        build_trainer(_cfg(tmp_path, method_args={option: value}))


def test_trainer_refuses_a_loader_without_indices(tmp_path: Path, reference_libauc: type[NaiveMeanAP]) -> None:
    from adaloss.training.trainer import Trainer

    trainer = build_trainer(_cfg(tmp_path))
    loader = BatchLoader(trainer.learner.context.train_split, batch_size=8, seed=0)
    with pytest.raises(ValueError, match="return_index=True"):
        Trainer(trainer.model, trainer.learner, optimizer=trainer.optimizer, train_loader=loader,
                task="classification", steps=1)


def test_class_balanced_sampler_is_refused(tmp_path: Path, reference_libauc: type[NaiveMeanAP]) -> None:
    from adaloss.training.config import ConfigError

    with pytest.raises(ConfigError, match="samples_per_class"):
        build_trainer(_cfg(tmp_path, samples_per_class=4))


def test_default_compare_leaves_out_the_optional_peer() -> None:
    from adaloss.learners.registry import methods_for

    assert "libauc_ap" not in methods_for("classification", runnable_on_defaults=True)
    assert "libauc_ap" in methods_for("classification")
