"""Each rank's share of the global batch (data-parallel training)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from adaloss.distributed.collective import Collective
from adaloss.typing import Batch, StateDict

__all__ = ["ShardedBatches"]


class ShardedBatches:
    """This rank's contiguous shard of every global batch drawn from ``loader``.

    Every rank holds the same loader (same seed), so every rank draws the same global batch of
    ``loader.batch_size`` rows; rank ``r`` of ``N`` keeps rows ``[r·B/N, (r+1)·B/N)``. The loader's
    state (and so a checkpoint's data position) is the same on every rank. Attributes other than
    iteration are the loader's (``x``, ``y``, ``batch_size``: the *global* batch size, ...).
    """

    def __init__(self, loader: Any, collective: Collective) -> None:
        size = int(loader.batch_size)
        if size % collective.world_size:
            raise ValueError(
                f"Expected the global `batch_size` to be divisible by the number of ranks ({collective.world_size}), "
                f"but got {size}."
            )
        self.loader = loader
        self.rank = collective.rank
        self.shard = size // collective.world_size

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        lo = self.rank * self.shard
        return tuple(t[lo:lo + self.shard] for t in next(self.loader))  # (x, y) or (x, y, index)

    def state_dict(self) -> StateDict:
        return self.loader.state_dict()

    def load_state_dict(self, state: StateDict) -> None:
        self.loader.load_state_dict(state)

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)
