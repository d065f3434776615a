"""Mini-batches drawn from splits held in memory as tensors: no per-sample Python work."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import torch

from adaloss._validation import check_choice, check_int, check_positive
from adaloss.typing import Batch, Device, IndexedBatch, StateDict

if TYPE_CHECKING:
    from adaloss.data.types import TensorSplit

__all__ = ["BatchLoader", "ClassBalancedLoader", "iterate_batches"]


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
        return_index: yield ``(x, y, index)``, ``index`` the batch's row numbers in ``split``
            (``(B,)`` int64 on ``device``), for losses that keep per-example state (LibAUC's
            average-precision loss); the batches themselves are the same either way.
    """

    def __init__(
        self,
        split: TensorSplit,
        *,
        batch_size: int,
        seed: int,
        augment: Literal["none", "crop_flip"] = "none",
        device: Device = "cpu",
        return_index: bool = False,
    ) -> None:
        check_positive("batch_size", batch_size)
        n = len(split)
        if batch_size > n:
            raise ValueError(f"Expected `batch_size` to be at most the split size {n}, but got {batch_size}.")
        self.augment = check_choice("augment", augment, ("none", "crop_flip"))
        self.x = split.x.to(device)
        self.y = split.y.to(device)
        self.batch_size = int(batch_size)
        self.return_index = bool(return_index)
        self.batches_per_epoch = n // self.batch_size
        self.generator = torch.Generator().manual_seed(int(seed))
        self.epoch = 0
        self.position = 0
        self._perm = torch.randperm(n, generator=self.generator)

    def __iter__(self) -> Iterator[Batch | IndexedBatch]:
        return self

    def __next__(self) -> Batch | IndexedBatch:
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
        if self.return_index:
            return x, self.y.index_select(0, idx), idx
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


class ClassBalancedLoader:
    """An endless stream of class-balanced mini-batches: P classes × K examples each.

    The sampler of pair-based metric learning (Huang et al., ICML 2019, metric learning: "class-balanced sampler, e.g.
    16 classes × 8 images"): every batch holds positive pairs of each of its classes and
    negative pairs between them. ``K = samples_per_class`` and ``P = batch_size / K``.

    Sampling, all from the loader's own ``torch.Generator`` seeded with ``seed``: at
    construction each class present in the split (ascending) gets its own order
    ``torch.randperm(n_c, generator=g)`` of its rows. Each batch draws its P classes as
    ``torch.randperm(C, generator=g)[:P]`` and takes, class after class in that order, the next
    K rows of each class's order; a class with fewer than K rows left is reshuffled first with a
    new ``randperm`` (its remainder is dropped, as :class:`BatchLoader` drops an epoch's). So
    within one pass over a class no row repeats. Rows ``[pK, (p+1)K)`` of a batch are one class.
    :meth:`state_dict` captures the position exactly, as :class:`BatchLoader`'s does.

    Args:
        split: the data, with ``(N,)`` integer class labels; moved to ``device`` once, here.
        batch_size: examples per batch, a multiple of ``samples_per_class``.
        samples_per_class: K; at most the size of the smallest class.
        seed: seed of the loader's own generator (independent of the global RNG).
        augment: ``"crop_flip"`` applies random 4-pixel crops and horizontal flips per batch.
        device: where batches are produced.
    """

    def __init__(
        self,
        split: TensorSplit,
        *,
        batch_size: int,
        samples_per_class: int,
        seed: int,
        augment: Literal["none", "crop_flip"] = "none",
        device: Device = "cpu",
    ) -> None:
        batch_size = check_int("batch_size", batch_size, minimum=1)
        k = check_int("samples_per_class", samples_per_class, minimum=1)
        if batch_size % k:
            raise ValueError(
                f"Expected `batch_size` to be a multiple of `samples_per_class` ({k}): a class-balanced batch is "
                f"P classes × K examples, P = batch_size / K; but got batch_size={batch_size}."
            )
        labels = split.y
        if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"A class-balanced loader needs (N,) integer class labels, but the split's targets are "
                            f"{labels.dtype} of shape {tuple(labels.shape)}.")
        self.augment = check_choice("augment", augment, ("none", "crop_flip"))
        labels_cpu = labels.cpu()
        self.classes = torch.unique(labels_cpu)  # ascending
        self.members = [(labels_cpu == c).nonzero().squeeze(1) for c in self.classes]
        p = batch_size // k
        if p > len(self.classes):
            raise ValueError(
                f"Expected `batch_size / samples_per_class` (classes per batch, {batch_size} / {k} = {p}) to be at "
                f"most the {len(self.classes)} classes of the split, but got {p}."
            )
        sizes = [len(m) for m in self.members]
        smallest = min(range(len(sizes)), key=sizes.__getitem__)
        if k > sizes[smallest]:
            raise ValueError(
                f"Expected `samples_per_class` to be at most the size of the smallest class of the split "
                f"({sizes[smallest]} examples of class {int(self.classes[smallest])}), but got {k}."
            )
        self.x = split.x.to(device)
        self.y = labels.to(device)
        self.batch_size = batch_size
        self.samples_per_class = k
        self.classes_per_batch = p
        self.generator = torch.Generator().manual_seed(int(seed))
        self.batches = 0
        self._orders = [torch.randperm(n, generator=self.generator) for n in sizes]
        self._positions = [0] * len(sizes)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        k = self.samples_per_class
        chosen = torch.randperm(len(self.classes), generator=self.generator)[: self.classes_per_batch].tolist()
        parts = []
        for c in chosen:
            if self._positions[c] + k > len(self._orders[c]):
                self._orders[c] = torch.randperm(len(self._orders[c]), generator=self.generator)
                self._positions[c] = 0
            start = self._positions[c]
            parts.append(self.members[c][self._orders[c][start : start + k]])
            self._positions[c] = start + k
        self.batches += 1
        idx = torch.cat(parts).to(self.x.device)
        x = self.x.index_select(0, idx)
        if self.augment == "crop_flip":
            from adaloss.data.augment import random_crop_flip

            x = random_crop_flip(x, generator=self.generator)
        return x, self.y.index_select(0, idx)

    def state_dict(self) -> StateDict:
        """Position in the stream: every class's order and position, the batch count and the generator."""
        return {
            "kind": "class_balanced",
            "batches": self.batches,
            "orders": [o.clone() for o in self._orders],
            "positions": list(self._positions),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: StateDict) -> None:
        """Continue exactly where :meth:`state_dict` was taken."""
        if state.get("kind") != "class_balanced":
            raise ValueError("The loader state is not from a class-balanced loader (was the run started with another "
                             "`samples_per_class`?).")
        sizes = [len(m) for m in self.members]
        if [len(o) for o in state["orders"]] != sizes:
            raise ValueError(f"Loader state is for classes of sizes {[len(o) for o in state['orders']]}, but this "
                             f"split's classes have {sizes}.")
        self.batches = int(state["batches"])
        self._orders = [o.clone() for o in state["orders"]]
        self._positions = [int(v) for v in state["positions"]]
        self.generator.set_state(state["generator"])


def iterate_batches(split: TensorSplit, *, batch_size: int, device: Device = "cpu") -> Iterator[Batch]:
    """The split in order, in batches of ``batch_size`` (the last may be smaller); for evaluation."""
    check_positive("batch_size", batch_size)
    for start in range(0, len(split), batch_size):
        yield (
            split.x[start : start + batch_size].to(device, non_blocking=True),
            split.y[start : start + batch_size].to(device, non_blocking=True),
        )
