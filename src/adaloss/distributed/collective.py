"""The collectives a learner may call: the one-process no-op and ``torch.distributed`` process groups."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["Collective", "DistributedError", "FlatCollective", "LocalCollective", "ProcessGroupCollective"]


class DistributedError(RuntimeError):
    """A collective failed: another rank died, or did not answer within the timeout."""


class Collective:
    """The collectives a learner may call; this base class is the single-process no-op."""

    rank: int = 0
    world_size: int = 1
    #: wall-clock seconds spent inside collectives (the communication share of a step)
    seconds: float = 0.0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, shows progress and writes checkpoints."""
        return self.rank == 0

    def mean_(self, tensors: Sequence[Tensor]) -> None:
        """Replace each tensor, in place, by its mean over the ranks."""

    def ordered_mean_(self, tensors: Sequence[Tensor]) -> None:
        """:meth:`mean_` summed in rank order on every rank: the same bits whatever the backend's
        reduction order, and the same as workers that are threads of one process (an all-gather:
        for small tensors, e.g. a policy's gradient)."""

    def mean_grads_(self, model: nn.Module) -> None:
        """Average the ``.grad`` of ``model``'s trainable parameters over the ranks (after backward)."""
        self.mean_([p.grad for p in model.parameters() if p.requires_grad and p.grad is not None])

    def barrier(self) -> None:
        """Wait for every rank."""

    def broadcast_(self, tensors: Sequence[Tensor], *, src: int = 0) -> None:
        """Overwrite each tensor, in place, with rank ``src``'s."""

    def min_int(self, value: int) -> int:
        """The smallest ``value`` over the ranks (e.g. the step every rank has a checkpoint of)."""
        return int(value)

    def cpu(self) -> Collective:
        """Collectives for CPU tensors (a gloo group beside an NCCL one; ``self`` otherwise)."""
        return self


class LocalCollective(Collective):
    """One process: every collective is a no-op."""


class FlatCollective(Collective):
    """Several ranks: :meth:`mean_` and :meth:`broadcast_` send the tensors as one flat buffer, so a
    step costs one collective, not one per parameter. Subclasses say how a buffer is summed over
    the ranks (:meth:`_sum_flat`) and broadcast (:meth:`_broadcast_flat`); the time both take is
    added to :attr:`seconds`."""

    def _sum_flat(self, flat: Tensor) -> Tensor:
        """The element-wise sum of every rank's ``flat`` (``flat`` may be overwritten)."""
        raise NotImplementedError

    def _broadcast_flat(self, flat: Tensor, src: int) -> Tensor:
        """Rank ``src``'s ``flat`` (``flat`` may be overwritten)."""
        raise NotImplementedError

    def _gather_flat(self, flat: Tensor) -> list[Tensor]:
        """Every rank's ``flat``, in rank order."""
        raise NotImplementedError

    def mean_(self, tensors: Sequence[Tensor]) -> None:
        self._flat_collective(tensors, lambda flat: self._sum_flat(flat) / self.world_size)

    def ordered_mean_(self, tensors: Sequence[Tensor]) -> None:
        def ordered(flat: Tensor) -> Tensor:
            parts = self._gather_flat(flat)
            total = parts[0].clone()
            for part in parts[1:]:
                total += part
            return total / self.world_size

        self._flat_collective(tensors, ordered)

    def broadcast_(self, tensors: Sequence[Tensor], *, src: int = 0) -> None:
        self._flat_collective(tensors, lambda flat: self._broadcast_flat(flat, src))

    def _flat_collective(self, tensors: Sequence[Tensor], reduce: Callable[[Tensor], Tensor]) -> None:
        tensors = [t for t in tensors if t is not None]
        if not tensors or self.world_size == 1:
            return
        start = time.perf_counter()
        flat = torch.cat([t.detach().reshape(-1) for t in tensors])
        _unflatten_(reduce(flat), tensors)
        self.seconds += time.perf_counter() - start


class ProcessGroupCollective(FlatCollective):
    """Collectives over a ``torch.distributed`` process group (the default group if ``None``).

    :meth:`mean_` flattens the tensors into one buffer, so a step costs one all-reduce, not one
    per parameter.
    """

    def __init__(self, group: Any = None) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("ProcessGroupCollective needs an initialised torch.distributed process group.")
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self._cpu: ProcessGroupCollective | None = None

    def _sum_flat(self, flat: Tensor) -> Tensor:
        try:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        except RuntimeError as e:  # gloo: peer closed the connection or timed out; NCCL: watchdog timeout
            raise DistributedError(
                f"An all-reduce across {self.world_size} ranks failed on rank {self.rank}: another rank died or "
                f"did not reach it within the collective timeout (dist_timeout_s). Resume the run from its last "
                f"checkpoint with --resume. Cause: {e}"
            ) from e
        return flat

    def _gather_flat(self, flat: Tensor) -> list[Tensor]:
        parts = [torch.empty_like(flat) for _ in range(self.world_size)]
        try:
            dist.all_gather(parts, flat, group=self.group)
        except RuntimeError as e:
            raise DistributedError(f"An all-gather across {self.world_size} ranks failed on rank {self.rank}: another "
                                   f"rank died or did not reach it within the collective timeout (dist_timeout_s). "
                                   f"Cause: {e}") from e
        return parts

    def _broadcast_flat(self, flat: Tensor, src: int) -> Tensor:
        try:
            dist.broadcast(flat, src=src, group=self.group)
        except RuntimeError as e:
            raise DistributedError(f"A broadcast across {self.world_size} ranks failed on rank {self.rank}: {e}") from e
        return flat

    def barrier(self) -> None:
        try:
            dist.barrier(group=self.group)
        except RuntimeError as e:
            raise DistributedError(f"A barrier across {self.world_size} ranks failed on rank {self.rank}: {e}") from e

    def cpu(self) -> Collective:
        if dist.get_backend(self.group) == "gloo":
            return self
        if self._cpu is None:  # every rank reaches this at the same point: new_group is collective
            self._cpu = ProcessGroupCollective(dist.new_group(backend="gloo"))
        return self._cpu

    def min_int(self, value: int) -> int:
        if self.world_size == 1:
            return int(value)
        cpu = self.cpu()
        if cpu is not self:
            return cpu.min_int(value)
        t = torch.tensor([int(value)], dtype=torch.int64)
        try:
            dist.all_reduce(t, op=dist.ReduceOp.MIN, group=self.group)
        except RuntimeError as e:
            raise DistributedError(f"An all-reduce across {self.world_size} ranks failed on rank {self.rank}: "
                                   f"{e}") from e
        return int(t.item())


def _unflatten_(flat: Tensor, tensors: Sequence[Tensor]) -> None:
    offset = 0
    with torch.no_grad():
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t))
            offset += n
