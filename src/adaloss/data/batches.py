"""Batches as users' loops produce them: moving them to a device, and cycling any iterable."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from adaloss.typing import BatchForward, BatchTarget

__all__ = ["ResumableCycle", "apply_model", "cycle", "move_to", "split_batch"]

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


class ResumableCycle(Iterator[T]):
    """:func:`cycle` that a checkpoint can resume: it counts the batches drawn (:meth:`state_dict`), and
    after :meth:`load_state_dict` its first draw skips that many, so the stream continues where the
    saved one stopped. The skip replays the batches (loading them, no compute), so it resumes exactly
    when ``batches`` yields the same sequence again: a DataLoader without shuffling, or one whose
    ``generator`` is seeded the same way when it is rebuilt.
    """

    def __init__(self, batches: Iterable[T], *, name: str = "batches") -> None:
        self.batches, self.name = batches, name
        self.drawn = 0
        self._skip = 0
        self._it: Iterator[T] | None = None

    def __iter__(self) -> ResumableCycle[T]:
        return self

    def __next__(self) -> T:
        if self._it is None:
            self._it = cycle(self.batches, name=self.name)
            for _ in range(self._skip):
                next(self._it)
        self.drawn += 1
        return next(self._it)

    def state_dict(self) -> dict[str, int]:
        return {"drawn": self.drawn}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.drawn = self._skip = int(state["drawn"])
        self._it = None


def split_batch(
    model: nn.Module, batch: Any, forward: BatchForward | None, target: BatchTarget | None
) -> tuple[Any, Tensor]:
    """What the model is called on and the targets: ``(batch[0], batch[1])`` by default, or
    ``(batch, target(batch))`` with a ``forward`` hook (which then receives the whole batch)."""
    if forward is None:
        if target is None:
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise TypeError(
                    "Expected a batch `(inputs, targets)`, but got "
                    f"{type(batch).__name__}{f' of length {len(batch)}' if isinstance(batch, (tuple, list)) else ''}; "
                    "pass `forward=` (how to get outputs from a batch) and `target=` for other batches."
                )
            return batch[0], batch[1]
        return batch[0], target(batch)
    return batch, (target(batch) if target is not None else batch[1])


def apply_model(model: nn.Module, inputs: Any, forward: BatchForward | None) -> Tensor:
    """The outputs for what :func:`split_batch` returned."""
    return model(inputs) if forward is None else forward(model, inputs)
