"""Mini-batches drawn from splits held in memory as tensors: no per-sample Python work."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from adaloss._validation import check_choice, check_positive
from adaloss.typing import Batch, Device, StateDict

if TYPE_CHECKING:
    from adaloss.data.datasets import TensorSplit

__all__ = ["BatchLoader", "iterate_batches"]


class BatchLoader:
    """An endless stream of shuffled mini-batches over one in-memory split.

    Sampling: epoch ``e`` visits ``torch.randperm(n, generator=g)`` in consecutive slices of
    ``batch_size``; the last incomplete slice is dropped, so every batch has the same shape (the
    papers count steps, not epochs). ``g`` is a ``torch.Generator`` seeded with ``seed``; the
    same seed gives the same batches, and :meth:`state_dict` captures the position exactly, so
    a resumed run sees the batches the uninterrupted run would have seen.

    Args:
        split: the data; it is moved to ``device`` once, here.
        batch_size: examples per batch; at most ``len(split)``.
        seed: seed of the loader's own generator (independent of the global RNG).
        augment: ``"crop_flip"`` applies random 4-pixel crops and horizontal flips per batch.
        device: where batches are produced.
    """

    def __init__(
        self,
        split: TensorSplit,
        *,
        batch_size: int,
        seed: int,
        augment: Literal["none", "crop_flip"] = "none",
        device: Device = "cpu",
    ) -> None:
        check_positive("batch_size", batch_size)
        n = len(split)
        if batch_size > n:
            raise ValueError(f"Expected `batch_size` to be at most the split size {n}, but got {batch_size}.")
        self.augment = check_choice("augment", augment, ("none", "crop_flip"))
        self.x = split.x.to(device)
        self.y = split.y.to(device)
        self.batch_size = int(batch_size)
        self.batches_per_epoch = n // self.batch_size
        self.generator = torch.Generator().manual_seed(int(seed))
        self.epoch = 0
        self.position = 0
        self._perm = torch.randperm(n, generator=self.generator)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        if self.position == self.batches_per_epoch:
            self.epoch += 1
            self.position = 0
            self._perm = torch.randperm(self.x.shape[0], generator=self.generator)
        start = self.position * self.batch_size
        idx = self._perm[start : start + self.batch_size].to(self.x.device)
        self.position += 1
        x = self.x.index_select(0, idx)
        if self.augment == "crop_flip":
            from adaloss.data.augment import random_crop_flip

            x = random_crop_flip(x, generator=self.generator)
        return x, self.y.index_select(0, idx)

    def state_dict(self) -> StateDict:
        """Position in the stream: epoch, batch index, this epoch's order and the generator."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "perm": self._perm.clone(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: StateDict) -> None:
        """Continue exactly where :meth:`state_dict` was taken."""
        perm = state["perm"]
        if perm.shape != self._perm.shape:
            raise ValueError(
                f"Loader state is for a split of {perm.shape[0]} examples, but this split has {self._perm.shape[0]}."
            )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._perm = perm.clone()
        self.generator.set_state(state["generator"])


def iterate_batches(split: TensorSplit, *, batch_size: int, device: Device = "cpu") -> Iterator[Batch]:
    """The split in order, in batches of ``batch_size`` (the last may be smaller); for evaluation."""
    check_positive("batch_size", batch_size)
    for start in range(0, len(split), batch_size):
        yield (
            split.x[start : start + batch_size].to(device, non_blocking=True),
            split.y[start : start + batch_size].to(device, non_blocking=True),
        )
