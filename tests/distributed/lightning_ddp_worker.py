"""Run by ``test_ddp.py``: AdaLFLMixin under Lightning's ``strategy="ddp"`` on 2 CPU processes, no extra code.

Each process seeds its generators with its own rank before building the module (nothing but
Lightning and AdaLFL makes the ranks agree); after the run, each writes θ and φ to ``OUT/rank<r>.pt``.
``python lightning_ddp_worker.py OUT``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import adaloss
from adaloss.lightning import AdaLFLMixin


def data(rows: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 6, generator=g)
    return TensorDataset(x, (x @ torch.randn(6, 3, generator=torch.Generator().manual_seed(9))).argmax(1))


class Module(AdaLFLMixin, L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
        self.loss_network = [adaloss.LossNetwork(task="classification")]
        self.meta_batches = self.adalfl_meta_batches(DataLoader(data(32, 1), batch_size=8))
        self.seen: list[list[torch.Tensor]] = []

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    def configure_adalfl(self) -> adaloss.AdaLFL:
        return adaloss.AdaLFL(self.net, self.optimizers().optimizer, loss=self.loss_network[0], initialized=True)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        self.seen.append([t.clone() for t in batch])  # the shard Lightning's sampler gave this rank
        self.adalfl_step(batch, next(self.meta_batches))


def main() -> None:
    out = Path(sys.argv[1])
    torch.manual_seed(int(os.environ.get("LOCAL_RANK", "0")))  # per-rank seeding before construction
    module = Module()
    trainer = L.Trainer(max_steps=int(sys.argv[2]) if len(sys.argv) > 2 else 10, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(data(64, 0), batch_size=8, shuffle=False))
    torch.save({"theta": [p.detach() for p in module.net.parameters()],
                "phi": [p.detach() for p in module.loss_network[0].parameters()],
                "steps": module.adalfl.steps, "collective": type(module.adalfl.collective).__name__,
                "batches": module.seen},
               out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main()
