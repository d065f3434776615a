"""Scale-out on ``torch.distributed`` (launched by ``torchrun``): process groups and the collectives
the learners need, behind one small interface that is a no-op in a single process.

Data-parallel training keeps every rank's model identical: each rank draws the same *global*
batch (same seed), computes on its own contiguous shard of it (:class:`ShardedBatches`), and
averages gradients with :meth:`Collective.mean_`; with equal shards the average of the shard
means is the global-batch mean, so N ranks follow the one-process trajectory to float tolerance
(BatchNorm statistics are per shard, the one exception).
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from adaloss._validation import check_choice, check_positive
from adaloss.typing import Batch, StateDict

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

logger = logging.getLogger("adaloss")

Backend = Literal["auto", "gloo", "nccl"]


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


class ProcessGroupCollective(Collective):
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

    def mean_(self, tensors: Sequence[Tensor]) -> None:
        tensors = [t for t in tensors if t is not None]
        if not tensors or self.world_size == 1:
            return
        start = time.perf_counter()
        flat = torch.cat([t.detach().reshape(-1) for t in tensors])
        try:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        except RuntimeError as e:  # gloo: peer closed the connection or timed out; NCCL: watchdog timeout
            raise DistributedError(
                f"An all-reduce across {self.world_size} ranks failed on rank {self.rank}: another rank died or "
                f"did not reach it within the collective timeout (dist_timeout_s). Resume the run from its last "
                f"checkpoint with --resume. Cause: {e}"
            ) from e
        flat /= self.world_size
        _unflatten_(flat, tensors)
        self.seconds += time.perf_counter() - start

    def barrier(self) -> None:
        try:
            dist.barrier(group=self.group)
        except RuntimeError as e:
            raise DistributedError(f"A barrier across {self.world_size} ranks failed on rank {self.rank}: {e}") from e

    def broadcast_(self, tensors: Sequence[Tensor], *, src: int = 0) -> None:
        tensors = [t for t in tensors if t is not None]
        if not tensors or self.world_size == 1:
            return
        start = time.perf_counter()
        flat = torch.cat([t.detach().reshape(-1) for t in tensors])
        try:
            dist.broadcast(flat, src=src, group=self.group)
        except RuntimeError as e:
            raise DistributedError(f"A broadcast across {self.world_size} ranks failed on rank {self.rank}: {e}") from e
        _unflatten_(flat, tensors)
        self.seconds += time.perf_counter() - start

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
            raise DistributedError(f"An all-reduce across {self.world_size} ranks failed on rank {self.rank}: {e}") from e
        return int(t.item())


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
        self._barrier = threading.Barrier(size)
        self._slots: list[Any] = [None] * size
        self.members = [ThreadCollective(self, r) for r in range(size)]

    def abort(self) -> None:
        self._barrier.abort()

    def wait(self, rank: int) -> None:
        try:
            self._barrier.wait(timeout=self.timeout_s)
        except threading.BrokenBarrierError as e:
            raise DistributedError(
                f"Worker {rank} of {self.size} (threads): another worker failed or did not reach the collective "
                f"within {self.timeout_s:g} s (dist_timeout_s)."
            ) from e

    def exchange(self, rank: int, value: Any) -> list[Any]:
        """Every worker's ``value``, in rank order."""
        self._slots[rank] = value
        self.wait(rank)
        values = list(self._slots)
        self.wait(rank)  # nobody overwrites a slot before every worker has read them all
        return values


class ThreadCollective(Collective):
    """One worker of a :class:`ThreadGroup`."""

    def __init__(self, group: ThreadGroup, rank: int) -> None:
        self.group = group
        self.rank = rank
        self.world_size = group.size

    def mean_(self, tensors: Sequence[Tensor]) -> None:
        tensors = [t for t in tensors if t is not None]
        if not tensors or self.world_size == 1:
            return
        start = time.perf_counter()
        flat = torch.cat([t.detach().reshape(-1) for t in tensors])
        parts = self.group.exchange(self.rank, flat)
        total = parts[0].clone()
        for part in parts[1:]:
            total += part
        _unflatten_(total / self.world_size, tensors)
        self.seconds += time.perf_counter() - start

    def broadcast_(self, tensors: Sequence[Tensor], *, src: int = 0) -> None:
        tensors = [t for t in tensors if t is not None]
        if not tensors or self.world_size == 1:
            return
        flat = torch.cat([t.detach().reshape(-1) for t in tensors])
        _unflatten_(self.group.exchange(self.rank, flat)[src].clone(), tensors)

    def min_int(self, value: int) -> int:
        return min(int(v) for v in self.group.exchange(self.rank, int(value)))

    def barrier(self) -> None:
        self.group.wait(self.rank)


def _unflatten_(flat: Tensor, tensors: Sequence[Tensor]) -> None:
    offset = 0
    with torch.no_grad():
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t))
            offset += n


def launched_by_torchrun() -> bool:
    """Whether this process is one of several ranks started by ``torchrun`` (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(
    *, backend: Backend = "auto", timeout_s: float = 300.0, device: torch.device | None = None
) -> Collective:
    """Join the process group ``torchrun`` describes in the environment, or return a local no-op.

    Args:
        backend: ``"gloo"`` (CPU), ``"nccl"`` (GPUs), or ``"auto"``: NCCL for a CUDA ``device``,
            gloo otherwise.
        timeout_s: how long a collective waits for the other ranks before it fails; a rank that
            dies or hangs therefore ends the job with an error, never a silent hang.
        device: the run's device (chooses the backend for ``"auto"``).
    """
    check_choice("backend", backend, ("auto", "gloo", "nccl"))
    check_positive("timeout_s", timeout_s)
    if not launched_by_torchrun():
        return LocalCollective()
    if not dist.is_initialized():
        chosen = backend if backend != "auto" else ("nccl" if device is not None and device.type == "cuda" else "gloo")
        dist.init_process_group(backend=chosen, timeout=datetime.timedelta(seconds=float(timeout_s)))
        logger.info("torch.distributed: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), chosen)
    return ProcessGroupCollective()


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
        x, y = next(self.loader)
        lo = self.rank * self.shard
        return x[lo:lo + self.shard], y[lo:lo + self.shard]

    def state_dict(self) -> StateDict:
        return self.loader.state_dict()

    def load_state_dict(self, state: StateDict) -> None:
        self.loader.load_state_dict(state)

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)
