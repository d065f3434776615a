"""AdaLFL and ALA in PyTorch Lightning, with :mod:`adaloss.lightning` (``pip install 'adaloss[lightning]'``).

* AdaLFL replaces the optimiser step, so its LightningModule optimises manually:
  :class:`~adaloss.lightning.AdaLFLMixin` builds the AdaLFL on the Trainer's optimiser, steps it
  (``self.adalfl_step``: counted as an optimiser step, ``loss``/``meta_loss`` logged) and keeps
  its state in Lightning checkpoints.
* ALA is a loss scheduler: an ordinary LightningModule trains with ``ala.loss`` and
  :class:`~adaloss.lightning.ALACallback` steps the scheduler after every optimiser step,
  logging ``ala/ala_metric``, ``ala/reward`` and Φ's statistics.

Data: scikit-learn's bundled digits (no download).

    python examples/lightning_adalfl_ala.py                       # both, 300 steps each, seconds on a CPU
    python examples/lightning_adalfl_ala.py --method ala --steps 2000 --log-dir lightning_logs
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import CSVLogger
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import adaloss
from adaloss.lightning import AdaLFLMixin, ALACallback


def digits_loaders(seed: int, batch_size: int) -> dict[str, Any]:
    """Train / valid DataLoaders and test tensors of the digits data (60 / 20 / 20 %, stratified)."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, stratify=y, random_state=seed)
    x_valid, x_test, y_valid, y_test = train_test_split(x_rest, y_rest, test_size=0.5, stratify=y_rest,
                                                        random_state=seed)
    g = torch.Generator().manual_seed(seed)
    return {"train": DataLoader(TensorDataset(x_train, y_train), batch_size=batch_size, shuffle=True, generator=g),
            "valid": DataLoader(TensorDataset(x_valid, y_valid), batch_size=batch_size, shuffle=True, generator=g),
            "valid_tensors": (x_valid, y_valid), "test": (x_test, y_test)}


def make_net() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


class AdaLFLClassifier(AdaLFLMixin, L.LightningModule):
    """AdaLFL under manual optimisation: the mixin builds, steps, logs and checkpoints it."""

    def __init__(self, train_loader: DataLoader, valid_loader: DataLoader, *, lr: float, steps: int,
                 init_steps: int) -> None:
        super().__init__()
        self.automatic_optimization = False           # AdaLFL takes the optimiser step itself
        self.net = make_net()
        self.train_loader, self.valid_loader = train_loader, valid_loader
        self.lr, self.steps, self.init_steps = lr, steps, init_steps
        self.meta_batches = self.adalfl_meta_batches(valid_loader)   # resumed exactly from checkpoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.steps)}

    def configure_adalfl(self) -> adaloss.AdaLFL:
        return adaloss.AdaLFL(self.net, self.optimizers().optimizer)   # the raw optimiser, not the wrapper

    def on_fit_start(self) -> None:
        if not self.adalfl.initialized:               # a resumed run restores a fitted loss from the checkpoint
            self.adalfl.initialize(make_net, self.train_loader, self.valid_loader, steps=self.init_steps)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        self.adalfl_step(batch, next(self.meta_batches), prog_bar=True)
        self.lr_schedulers().step()                   # manual optimisation: the schedule is stepped by hand


class ALAClassifier(L.LightningModule):
    """An ordinary (automatic-optimisation) module that trains with ALA's current loss."""

    def __init__(self, ala: adaloss.ALA, *, lr: float) -> None:
        super().__init__()
        self.net = make_net()
        self.ala = ala                                # not an nn.Module: nothing is registered
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return self.ala.loss(self(x), y)


@torch.no_grad()
def accuracy(module: L.LightningModule, x: torch.Tensor, y: torch.Tensor) -> float:
    module.eval()
    return float((module(x).argmax(1) == y).float().mean())


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per method (default 300)")
    parser.add_argument("--method", choices=("adalfl", "ala", "both"), default="both")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", default=None,
                        help="where the CSV logs and checkpoints go (default: a temporary directory)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="adaloss-lightning-")
    methods = ("adalfl", "ala") if args.method == "both" else (args.method,)

    results: dict[str, dict[str, Any]] = {}
    for method in methods:
        L.seed_everything(args.seed, verbose=False)
        data = digits_loaders(args.seed, args.batch_size)
        callbacks: list[L.Callback] = []
        module: L.LightningModule
        if method == "adalfl":
            module = AdaLFLClassifier(data["train"], data["valid"], lr=args.lr, steps=args.steps,
                                      init_steps=max(args.steps // 3, 1))
        else:
            every = max(args.steps // 20, 2)
            ala = adaloss.ALA(adaloss.ClassPairLoss(10, form="log_prob"), metric="error", every=every,
                              smoothing_window=max(every // 5, 1), total_steps=args.steps, seed=args.seed)
            module = ALAClassifier(ala, lr=args.lr)
            callbacks.append(ALACallback(ala, data["valid_tensors"]))   # ALA's metric: the whole validation split
        trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", devices=1, callbacks=callbacks,
                            logger=CSVLogger(log_dir, name=method), default_root_dir=log_dir,
                            log_every_n_steps=10, enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(module, data["train"])
        logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
        results[method] = {"test_accuracy": accuracy(module, *data["test"]), "logged": logged,
                           "global_step": trainer.global_step}

    print(f"digits, {args.steps} steps per method, SGD lr {args.lr} momentum 0.9, seed {args.seed}; logs in {log_dir}")
    for method, r in results.items():
        shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(r["logged"].items()))
        print(f"  {method}: test accuracy {r['test_accuracy']:.4f}; last logged: {shown}")
    return results


if __name__ == "__main__":
    main()
