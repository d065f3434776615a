"""Type aliases shared across adaloss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Union

import torch
from torch import Tensor

__all__ = [
    "Batch",
    "BatchForward",
    "BatchTarget",
    "Criterion",
    "Device",
    "IndexedBatch",
    "Params",
    "StateDict",
    "Task",
]

#: A batch of inputs and targets, already on the training device.
Batch = tuple[Tensor, Tensor]
#: ``(x, y, index)``: a batch with its rows' positions in the training split
#: (``BatchLoader(return_index=True)``, for learners with ``needs_index``).
IndexedBatch = tuple[Tensor, Tensor, Tensor]
#: ``forward(model, batch) -> outputs``: how a model is applied to a batch of a user's loop (dict
#: batches, extra model arguments); the default is ``model(batch[0])``.
BatchForward = Callable[[Any, Any], Tensor]
#: ``target(batch) -> targets`` (default ``batch[1]``).
BatchTarget = Callable[[Any], Tensor]
#: Named tensors of a module (parameters or buffers), as ``torch.func.functional_call`` takes them.
Params = dict[str, Tensor]
#: A criterion ``loss(prediction, target) -> scalar``.
Criterion = Callable[[Tensor, Tensor], Tensor]
#: What ``state_dict()`` returns: only tensors, numbers, strings, lists, tuples and dicts, so it
#: round-trips through ``torch.load(weights_only=True)``.
StateDict = dict[str, Any]
Device = Union[str, torch.device]
#: The task kinds the library trains: the two supervised ones, and ``"embedding"`` (deep metric
#: learning: the model maps inputs to embeddings, scored by retrieval on held-out classes).
Task = Literal["classification", "regression", "embedding"]
