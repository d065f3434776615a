"""Batches as users' loops produce them: moving them to a device, and cycling any iterable."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar

import torch
from torch import Tensor

__all__ = ["cycle", "move_to"]

T = TypeVar("T")


def move_to(batch: T, device: torch.device) -> T:
    """``batch`` with every tensor in it (nested tuples, lists and dicts) on ``device``.

    Tensors already there are returned as they are (no copy); other leaves are kept.
    """
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)  # type: ignore[return-value]
    if isinstance(batch, Mapping):
        return type(batch)({k: move_to(v, device) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to(v, device) for v in batch))  # type: ignore[return-value]
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)  # type: ignore[return-value]
    return batch


def cycle(batches: Iterable[T], *, name: str = "batches") -> Iterator[T]:
    """Endless batches from ``batches``, epoch after epoch.

    A re-iterable (a ``DataLoader``, a list) is iterated afresh at every pass, so a shuffling
    DataLoader reshuffles (``itertools.cycle`` would replay the first epoch's batches). A
    one-shot iterator is read once; running past its end raises an error naming ``name``.
    """
    one_shot = iter(batches) is batches
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError(f"Expected `{name}` to yield batches, but it is empty"
                             + (" or exhausted (a one-shot iterator is read only once)." if one_shot else "."))
        if one_shot:
            raise ValueError(f"`{name}` is a one-shot iterator and ran out; pass a re-iterable (a DataLoader, a "
                             "list) or an endless iterator.")
