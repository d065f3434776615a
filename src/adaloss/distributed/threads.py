"""Workers as threads of one process, with the collectives of a process group."""

from __future__ import annotations

import threading
from typing import Any

from torch import Tensor

from adaloss._validation import check_positive
from adaloss.distributed.collective import DistributedError, FlatCollective

__all__ = ["ThreadCollective", "ThreadGroup"]


class ThreadGroup:
    """Workers in one process, one thread each, with the collectives of a process group.

    ``ThreadGroup(n).members`` are ``n`` :class:`ThreadCollective` objects; each reduction sums the
    workers' buffers in rank order, so every worker gets the same bits (for two workers, the
    bits gloo gives two ranks). A worker that fails calls :meth:`abort`: the others' next
    collective raises :class:`DistributedError` instead of waiting (as does one that waits longer
    than ``timeout_s``).
    """

    def __init__(self, size: int, *, timeout_s: float = 300.0) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"Expected `workers` to be a positive integer, but got {size!r}.")
        self.size = size
        self.timeout_s = float(check_positive("timeout_s", timeout_s))
        # a barrier with generations, not threading.Barrier: there an abort right after a completed
        # wait breaks it for the waiters not yet woken, who then fail a collective that succeeded
        self._cond = threading.Condition()
        self._arrived = 0
        self._generation = 0
        self._broken = False
        self._slots: list[Any] = [None] * size
        self.members = [ThreadCollective(self, r) for r in range(size)]

    def abort(self) -> None:
        """Break the group: every wait not yet completed (and every later one) raises."""
        with self._cond:
            self._broken = True
            self._cond.notify_all()

    def wait(self, rank: int) -> None:
        """Return when every worker has called ``wait``; raise :class:`DistributedError` if the group
        is aborted first or the others do not arrive within ``timeout_s``."""
        with self._cond:
            if not self._broken:
                generation = self._generation
                self._arrived += 1
                if self._arrived == self.size:
                    self._arrived = 0
                    self._generation += 1
                    self._cond.notify_all()
                    return
                self._cond.wait_for(lambda: self._generation != generation or self._broken, timeout=self.timeout_s)
                if self._generation != generation:
                    return  # completed, even if the group was aborted since
                self._broken = True  # a timeout breaks the group for the others too
                self._cond.notify_all()
        raise DistributedError(
            f"Worker {rank} of {self.size} (threads): another worker failed or did not reach the collective "
            f"within {self.timeout_s:g} s (dist_timeout_s)."
        )

    def exchange(self, rank: int, value: Any) -> list[Any]:
        """Every worker's ``value``, in rank order."""
        self._slots[rank] = value
        self.wait(rank)
        values = list(self._slots)
        self.wait(rank)  # nobody overwrites a slot before every worker has read them all
        return values


class ThreadCollective(FlatCollective):
    """One worker of a :class:`ThreadGroup`."""

    def __init__(self, group: ThreadGroup, rank: int) -> None:
        self.group = group
        self.rank = rank
        self.world_size = group.size

    def _sum_flat(self, flat: Tensor) -> Tensor:
        parts = self._gather_flat(flat)
        total = parts[0].clone()
        for part in parts[1:]:
            total += part
        return total

    def _gather_flat(self, flat: Tensor) -> list[Tensor]:
        return list(self.group.exchange(self.rank, flat))

    def _broadcast_flat(self, flat: Tensor, src: int) -> Tensor:
        return self.group.exchange(self.rank, flat)[src].clone()

    def min_int(self, value: int) -> int:
        return min(int(v) for v in self.group.exchange(self.rank, int(value)))

    def barrier(self) -> None:
        self.group.wait(self.rank)
