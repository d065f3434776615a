"""The public names of ``adaloss.distributed``, whichever module defines them."""

from __future__ import annotations

import importlib

import adaloss.distributed

PUBLIC = ["Collective", "DistributedError", "LocalCollective", "ProcessGroupCollective", "ShardedBatches",
          "ThreadCollective", "ThreadGroup", "init_distributed", "launched_by_torchrun"]


def test_the_package_exports_the_same_names_as_before_its_split() -> None:
    assert adaloss.distributed.__all__ == PUBLIC
    for name in PUBLIC:
        obj = getattr(adaloss.distributed, name)
        module = importlib.import_module(obj.__module__)
        assert module.__name__.startswith("adaloss.distributed.") and getattr(module, name) is obj, name


def test_one_process_collectives_are_no_ops() -> None:
    import torch

    c = adaloss.distributed.LocalCollective()
    t = torch.tensor([1.0, 2.0])
    c.mean_([t])
    c.broadcast_([t], src=0)
    c.barrier()
    assert torch.equal(t, torch.tensor([1.0, 2.0])) and c.min_int(3) == 3 and c.is_main and c.cpu() is c
    assert adaloss.distributed.init_distributed(backend="gloo").world_size == 1
