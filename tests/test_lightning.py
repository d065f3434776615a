"""adaloss.lightning: AdaLFL under manual optimisation and ALA as a callback, in real (tiny) CPU runs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip("lightning")

import lightning.pytorch as L  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import Logger  # noqa: E402

import adaloss  # noqa: E402
from adaloss.lightning import AdaLFLMixin, ALACallback, adalfl_training_step  # noqa: E402

# Lightning's advice for real runs, not errors of these tiny ones
pytestmark = [
    pytest.mark.filterwarnings("ignore:The '(train|val)_dataloader' does not have many workers"),
    pytest.mark.filterwarnings("ignore:The number of training batches .* is smaller than the logging interval"),
    # Lightning 2.6 with torch 2.13: its data loader flattening uses torch's deprecated LeafSpec
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning"),
]

IN, C = 8, 3


class RecordingLogger(Logger):
    """Keeps every ``log_metrics`` call in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.records.append(dict(metrics))

    def keys(self) -> set[str]:
        return {k for r in self.records for k in r}


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, IN, generator=g)
    w = torch.randn(IN, C, generator=torch.Generator().manual_seed(99))
    return x, (x @ w).argmax(1)


def _loader(seed: int = 0) -> DataLoader:
    return DataLoader(TensorDataset(*_data(64, seed)), batch_size=16, shuffle=True,
                      generator=torch.Generator().manual_seed(seed))


def _trainer(max_steps: int, logger: Logger, **kwargs: Any) -> L.Trainer:
    kwargs.setdefault("enable_checkpointing", False)
    return L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=logger, log_every_n_steps=1,
                     enable_progress_bar=False, enable_model_summary=False, **kwargs)


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(IN, 16), nn.ReLU(), nn.Linear(16, C))


class AdaLFLModule(AdaLFLMixin, L.LightningModule):
    def __init__(self, loss: adaloss.LossNetwork, meta_batch: Any, *, initialized: bool = True) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net = _net()
        self.loss_network = [loss]  # in a list: not a submodule, so not in self.parameters()
        self.meta_batch = meta_batch
        self.initialized = initialized

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)}

    def configure_adalfl(self) -> adaloss.AdaLFL:
        return adaloss.AdaLFL(self, self.optimizers().optimizer, loss=self.loss_network[0],
                              initialized=self.initialized, max_grad_norm=10.0)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        self.adalfl_step(batch, self.meta_batch)
        self.lr_schedulers().step()


def test_adalfl_manual_optimisation_moves_phi_logs_and_resumes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    loss = adaloss.LossNetwork(task="classification")
    phi0 = [p.detach().clone() for p in loss.parameters()]
    module = AdaLFLModule(loss, _data(32, 1))
    theta0 = [p.detach().clone() for p in module.parameters()]
    logger = RecordingLogger()
    trainer = _trainer(24, logger)
    trainer.fit(module, _loader())

    assert trainer.global_step == 24  # each adalfl_step counts as one optimiser step: max_steps is honoured
    assert module.adalfl.steps == 24
    assert module.adalfl.loss is loss
    assert any(not torch.equal(a, b) for a, b in zip(phi0, loss.parameters())), "φ did not move"
    assert any(not torch.equal(a, b) for a, b in zip(theta0, module.parameters())), "θ did not move"
    assert {"loss", "meta_loss", "meta_skipped", "grad_norm"} <= logger.keys()
    assert "meta_loss" in trainer.callback_metrics
    assert all(torch.isfinite(torch.tensor(r["meta_loss"])) for r in logger.records if "meta_loss" in r)
    assert module.optimizers().optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**2)  # the user's schedule

    # the checkpoint carries the AdaLFL; a resumed run continues it (an uninitialised AdaLFL would
    # warn at its first step, an error here: the restored state says it is initialised)
    ckpt = tmp_path / "adalfl.ckpt"
    trainer.save_checkpoint(ckpt)
    phi_saved = [p.detach().clone() for p in loss.parameters()]
    assert "adalfl" in torch.load(ckpt, weights_only=False)
    fresh = adaloss.LossNetwork(task="classification")
    resumed = AdaLFLModule(fresh, _data(32, 1), initialized=False)
    before_resume = {}

    class Peek(L.Callback):
        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            before_resume["phi"] = [p.detach().clone() for p in pl_module.adalfl.loss.parameters()]
            before_resume["steps"] = pl_module.adalfl.steps

    _trainer(30, RecordingLogger(), callbacks=[Peek()]).fit(resumed, _loader(), ckpt_path=ckpt)
    assert before_resume["steps"] == 24
    assert all(torch.equal(a, b) for a, b in zip(phi_saved, before_resume["phi"]))
    assert resumed.adalfl.steps == 30 and resumed.adalfl.initialized


def test_amortised_adalfl_steps_like_a_plain_loop_under_lightning() -> None:
    """meta_every=3 under Lightning: plain steps run optimizer.step() inside Lightning's closure; the
    trajectory is the one a plain loop over the same AdaLFL settings takes."""

    class Amortised(AdaLFLModule):
        def configure_adalfl(self) -> adaloss.AdaLFL:
            return adaloss.AdaLFL(self, self.optimizers().optimizer, loss=self.loss_network[0], initialized=True,
                                  meta_every=3)

        def training_step(self, batch: Any, batch_idx: int) -> None:
            seen.append([t.clone() for t in batch])
            self.adalfl_step(batch, self.meta_batch if self.adalfl.meta_due else None)

    seen: list[list[torch.Tensor]] = []

    torch.manual_seed(0)
    loss = adaloss.LossNetwork(task="classification")
    reference_loss = copy.deepcopy(loss)
    module = Amortised(loss, _data(32, 1))
    reference = copy.deepcopy(module.net)
    logger = RecordingLogger()
    trainer = _trainer(8, logger)
    trainer.fit(module, _loader())
    assert trainer.global_step == 8 and module.adalfl.steps == 8

    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    plain = adaloss.AdaLFL(reference, optimizer, loss=reference_loss, initialized=True, meta_every=3)
    for batch in seen:  # the batches Lightning fed
        plain.step(batch, _data(32, 1) if plain.meta_due else None)
    for p, q in zip(module.net.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    for p, q in zip(loss.parameters(), reference_loss.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert {"loss", "meta_loss"} <= logger.keys()


def test_accumulated_adalfl_steps_take_one_optimiser_step_per_group_of_batches() -> None:
    """The documented accumulation pattern: training_step collects two batches, then one adalfl_step with
    accumulate=2; global_step counts optimiser steps, and the trajectory is a plain loop's on the same groups."""

    class Accumulating(AdaLFLModule):
        def configure_adalfl(self) -> adaloss.AdaLFL:
            return adaloss.AdaLFL(self, self.optimizers().optimizer, loss=self.loss_network[0], initialized=True)

        def training_step(self, batch: Any, batch_idx: int) -> None:
            pending.append([t.clone() for t in batch])
            if len(pending) == 2:
                groups.append(list(pending))
                self.adalfl_step(list(pending), self.meta_batch, accumulate=2)
                pending.clear()

    pending: list[list[torch.Tensor]] = []
    groups: list[list[list[torch.Tensor]]] = []
    torch.manual_seed(0)
    loss = adaloss.LossNetwork(task="classification")
    reference_loss = copy.deepcopy(loss)
    module = Accumulating(loss, _data(32, 1))
    reference = copy.deepcopy(module.net)
    trainer = _trainer(3, RecordingLogger())
    trainer.fit(module, _loader())
    assert trainer.global_step == 3 and module.adalfl.steps == 3 and len(groups) == 3

    plain = adaloss.AdaLFL(reference, torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9),
                           loss=reference_loss, initialized=True)
    for group in groups:
        plain.step(group, _data(32, 1), accumulate=2)
    for p, q in zip([*module.net.parameters(), *loss.parameters()],
                    [*reference.parameters(), *reference_loss.parameters()]):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


# the checkpoint is wanted after the step (the state a resumed run continues from), which is what Lightning warns of
@pytest.mark.filterwarnings("ignore:Using ModelCheckpoint with manual optimization:UserWarning")
@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty:UserWarning")
def test_the_documented_pattern_resumes_bit_identically(tmp_path: Path) -> None:
    """``self.meta_batches = self.adalfl_meta_batches(valid_loader)``, shuffle off: 40 steps in one go
    against a run resumed from its step-20 checkpoint (an epoch boundary; the meta stream of 6
    batches is mid-cycle there): θ and φ bit-identical, the stream's position restored."""

    def loader(rows: int, seed: int) -> DataLoader:
        return DataLoader(TensorDataset(*_data(rows, seed)), batch_size=8, shuffle=False)

    class Documented(AdaLFLMixin, L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False
            torch.manual_seed(0)
            self.net = _net()
            self.loss_network = [adaloss.LossNetwork(task="classification")]
            self.meta_batches = self.adalfl_meta_batches(loader(48, 3))  # 6 meta batches: mid-cycle at step 20

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

        def configure_adalfl(self) -> adaloss.AdaLFL:
            return adaloss.AdaLFL(self.net, self.optimizers().optimizer, loss=self.loss_network[0],
                                  initialized=True)

        def training_step(self, batch: Any, batch_idx: int) -> None:
            self.adalfl_step(batch, next(self.meta_batches))

    full = Documented()  # uninterrupted, with a checkpoint at step 20 (the end of an epoch of 4 batches)
    keep = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=20, save_top_k=-1)
    _trainer(40, RecordingLogger(), callbacks=[keep], enable_checkpointing=True).fit(full, loader(32, 0))
    (checkpoint,) = [c for c in tmp_path.glob("*.ckpt") if "20" in c.name]
    assert torch.load(checkpoint, weights_only=False)["adalfl_meta_batches"] == {"drawn": 20}
    resumed = Documented()
    again = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=20, save_top_k=-1)  # as the run was made
    _trainer(40, RecordingLogger(), callbacks=[again], enable_checkpointing=True).fit(
        resumed, loader(32, 0), ckpt_path=checkpoint)
    assert resumed.meta_batches.drawn == full.meta_batches.drawn == 40
    for p, q in zip([*full.net.parameters(), *full.loss_network[0].parameters()],
                    [*resumed.net.parameters(), *resumed.loss_network[0].parameters()]):
        assert torch.equal(p, q)


def test_adalfl_training_step_needs_manual_optimisation_and_the_raw_optimiser() -> None:
    class Automatic(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _net()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def training_step(self, batch: Any, batch_idx: int) -> None:
            adalfl = adaloss.AdaLFL(self.net, self.optimizers().optimizer, initialized=True)
            adalfl_training_step(self, adalfl, batch, batch)

    with pytest.raises(RuntimeError, match="automatic_optimization = False"):
        _trainer(2, RecordingLogger()).fit(Automatic(), _loader())

    class Foreign(Automatic):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch: Any, batch_idx: int) -> None:
            other = torch.optim.SGD(self.parameters(), lr=0.1)  # not the Trainer's optimiser
            adalfl_training_step(self, adaloss.AdaLFL(self, other, initialized=True), batch, batch)

    with pytest.raises(ValueError, match="raw"):
        _trainer(2, RecordingLogger()).fit(Foreign(), _loader())


class ALAModule(L.LightningModule):
    def __init__(self, ala: adaloss.ALA) -> None:
        super().__init__()
        self.net = _net()
        self.ala = ala  # not an nn.Module: nothing registered

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return self.ala.loss(self(x), y)


def _ala() -> adaloss.ALA:
    return adaloss.ALA(adaloss.ClassPairLoss(C, form="log_prob"), metric="error", every=3, smoothing_window=2,
                       beta=0.1, seed=0)


def test_ala_callback_moves_phi_logs_and_resumes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ala = _ala()
    phi0 = ala.loss.parameter_vector().clone()
    valid = _data(48, 2)
    logger = RecordingLogger()
    trainer = _trainer(24, logger, callbacks=[ALACallback(ala, valid)])  # 6 epochs of 4 batches
    trainer.fit(ALAModule(ala), _loader())

    assert trainer.global_step == 24 and ala.steps == 24 and ala.started
    assert len(ala.metrics) == 1 + 24 // 3  # the initial metric, then one per controller step
    assert not torch.equal(ala.loss.parameter_vector(), phi0), "Φ never left the identity in 9 actions"
    assert {"ala/ala_metric", "ala/reward", "ala/phi_offdiag_mean"} <= logger.keys()
    # Lightning re-reports a step metric's last value on the later steps of its epoch: at least one per episode
    assert sum("ala/reward" in r for r in logger.records) >= 24 // 3
    assert "ala/ala_metric" in trainer.callback_metrics

    ckpt = tmp_path / "ala.ckpt"
    trainer.save_checkpoint(ckpt)
    phi_saved = ala.loss.parameter_vector().clone()
    again = _ala()
    seen = {}

    class Peek(L.Callback):
        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            seen["phi"] = again.loss.parameter_vector().clone()

    _trainer(36, RecordingLogger(), callbacks=[ALACallback(again, valid), Peek()]).fit(
        ALAModule(again), _loader(), ckpt_path=ckpt)
    assert torch.equal(seen["phi"], phi_saved)  # restored, not started afresh
    assert again.steps == 36 and len(again.metrics) == 1 + 36 // 3


def test_ala_callback_counts_optimiser_steps_not_batches() -> None:
    ala = _ala()
    trainer = _trainer(6, RecordingLogger(), callbacks=[ALACallback(ala, _data(16, 3))], accumulate_grad_batches=2)
    trainer.fit(ALAModule(ala), _loader())
    assert trainer.global_step == 6 and ala.steps == 6


def test_without_lightning_the_import_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import sys

    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "adaloss.lightning"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: the import raises ImportError
    monkeypatch.delitem(sys.modules, "adaloss.lightning")
    with pytest.raises(ImportError, match=r"pip install 'adaloss\[lightning\]'"):
        importlib.import_module("adaloss.lightning")
