"""Scale-out on ``torch.distributed`` (launched by ``torchrun``): process groups and the collectives
the learners need, behind one small interface that is a no-op in a single process.

Data-parallel training keeps every rank's model identical: each rank draws the same *global*
batch (same seed), computes on its own contiguous shard of it (:class:`ShardedBatches`), and
averages gradients with :meth:`Collective.mean_`; with equal shards the average of the shard
means is the global-batch mean, so N ranks follow the one-process trajectory to float tolerance
(BatchNorm statistics are per shard, the one exception).

Modules: :mod:`~adaloss.distributed.collective` (the :class:`Collective` interface, the
one-process no-op and ``torch.distributed`` process groups), :mod:`~adaloss.distributed.threads`
(workers as threads of one process), :mod:`~adaloss.distributed.sharding` (each rank's share of
the global batch) and :mod:`~adaloss.distributed.launch` (joining the group ``torchrun`` starts).
"""

from __future__ import annotations

from adaloss.distributed.collective import Collective, DistributedError, LocalCollective, ProcessGroupCollective
from adaloss.distributed.launch import init_distributed, launched_by_torchrun
from adaloss.distributed.sharding import ShardedBatches
from adaloss.distributed.threads import ThreadCollective, ThreadGroup

__all__ = [
    "Collective",
    "DistributedError",
    "LocalCollective",
    "ProcessGroupCollective",
    "ShardedBatches",
    "ThreadCollective",
    "ThreadGroup",
    "init_distributed",
    "launched_by_torchrun",
]
