"""Run by ``test_ddp.py`` under torchrun: AdaLFL on a DistributedDataParallel model, default construction.

Every rank seeds its generators with its own rank before building anything (so nothing but AdaLFL
and DDP makes the ranks agree), takes its half of each global batch, and writes θ, φ and ρ to
``OUT/rank<r>.pt``. ``python ddp_adalfl_worker.py OUT STEPS [--plain]``: ``--plain`` runs the same
steps in one process on the whole batches, with rank 0's initialisation, as the reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import adaloss


def batches(step: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1000 + step)
    x, y = torch.randn(32, 6, generator=g, dtype=torch.float64), torch.randint(0, 4, (32,), generator=g)
    xm, ym = torch.randn(32, 6, generator=g, dtype=torch.float64), torch.randint(0, 4, (32,), generator=g)
    return (x, y), (xm, ym)


def build(seed: int) -> tuple[nn.Module, adaloss.LossNetwork]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    return model, adaloss.LossNetwork(task="classification").double()


def main() -> None:
    out, steps, plain = Path(sys.argv[1]), int(sys.argv[2]), "--plain" in sys.argv
    if plain:
        rank, world = 0, 1
        model, loss = build(0)
        wrapped: nn.Module = model
    else:
        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        model, loss = build(rank)  # different on every rank: DDP and AdaLFL must make them agree
        wrapped = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(wrapped.parameters(), lr=0.1, momentum=0.9)
    adalfl = adaloss.AdaLFL(wrapped, optimizer, loss=loss, learn_lr="global", initialized=True,
                            meta_optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
    for step in range(steps):
        (x, y), (xm, ym) = batches(step)
        shard = slice(rank, None, world)
        adalfl.step((x[shard], y[shard]), (xm[shard], ym[shard]))
    torch.save({"theta": [p.detach() for p in model.parameters()], "phi": [p.detach() for p in loss.parameters()],
                "rho": adalfl.log_lr.detach(), "collective": type(adalfl.collective).__name__},
               out / (f"rank{rank}.pt" if not plain else "plain.pt"))
    if not plain:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
