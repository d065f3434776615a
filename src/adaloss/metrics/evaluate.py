"""The one evaluation loop: a model over batches in eval mode, feeding metrics."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from adaloss.data.batches import apply_model, move_to, split_batch
from adaloss.metrics.base import Metric
from adaloss.typing import BatchForward, BatchTarget

__all__ = ["Evaluation", "NonFiniteOutputs", "evaluate_batches"]


class NonFiniteOutputs(RuntimeError):
    """The evaluated model produced a non-finite output (``check_finite=True``)."""


@dataclass
class Evaluation:
    """What :func:`evaluate_batches` returns: metric values by name, and the outputs and targets
    concatenated when asked for (else ``None``)."""

    values: dict[str, float]
    outputs: Tensor | None = None
    targets: Tensor | None = None


@torch.no_grad()
def evaluate_batches(
    model: nn.Module,
    batches: Iterable[Any],
    metrics: Sequence[Metric],
    *,
    forward: BatchForward | None = None,
    target: BatchTarget | None = None,
    keep_outputs: bool = False,
    check_finite: bool = False,
) -> Evaluation:
    """Every metric of ``model`` over ``batches``, in eval mode (no dropout, BatchNorm running
    statistics); the model's train/eval mode is restored afterwards.

    Batches are moved to the model's device; ``forward``/``target`` as in :class:`adaloss.AdaLFL`.
    With ``check_finite`` a non-finite output raises :class:`NonFiniteOutputs`.
    """
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    outputs: list[Tensor] = []
    targets: list[Tensor] = []
    try:
        for m in metrics:
            m.reset()
        for batch in batches:
            inputs, y = split_batch(model, move_to(batch, device), forward, target)
            z = apply_model(model, inputs, forward)
            if check_finite and not bool(torch.isfinite(z).all()):
                raise NonFiniteOutputs("the evaluated model outputs non-finite values")
            for m in metrics:
                m.update(z, y)
            if keep_outputs:
                outputs.append(z)
                targets.append(y)
        values = {m.name: m.compute() for m in metrics}
    finally:
        model.train(was_training)
    if not keep_outputs:
        return Evaluation(values)
    return Evaluation(values, torch.cat(outputs), torch.cat(targets))
