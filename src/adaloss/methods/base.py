"""What every method shares: the ordinary training step, and the error a diverging loss raises."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from adaloss.data.batches import apply_model, split_batch
from adaloss.distributed import Collective
from adaloss.functional.clip import global_norm
from adaloss.typing import BatchForward, BatchTarget

__all__ = ["TrainingDiverged", "group_hyperparameters", "loss_step"]


class TrainingDiverged(RuntimeError):
    """The loss a model is trained with became non-finite; the last checkpoint on disk is kept."""


def loss_step(
    model: nn.Module,
    optimizer: Optimizer,
    criterion: Callable[[Tensor, Tensor], Tensor],
    batch: Any,
    *,
    forward: BatchForward | None = None,
    target: BatchTarget | None = None,
    collective: Collective | None = None,
    reference: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> dict[str, Tensor]:
    """One ordinary step: ``zero_grad``, ``criterion(model(x), y).backward()``, ``optimizer.step()``.

    Under torchrun the gradients are averaged over the ranks (``collective``) before the step.
    With ``reference`` also returns ``grad_norm_ratio`` = ‖∇_θ criterion‖ / ‖∇_θ reference‖ (the
    implicit learning-rate effect of a learned loss; one extra backward).

    Returns:
        Detached scalar tensors: ``loss`` (and ``grad_norm_ratio``).
    """
    inputs, y = split_batch(model, batch, forward, target)
    optimizer.zero_grad(set_to_none=True)
    z = apply_model(model, inputs, forward)
    loss = criterion(z, y)
    scalars: dict[str, Tensor] = {"loss": loss.detach()}
    if reference is not None:
        params = [p for p in model.parameters() if p.requires_grad]
        ref = torch.autograd.grad(reference(z, y), params, retain_graph=True)
        loss.backward()
        own = global_norm([p.grad for p in params if p.grad is not None], dtype=torch.float64)
        scalars["grad_norm_ratio"] = own / global_norm(ref, dtype=torch.float64).clamp_min(1e-30)
    else:
        loss.backward()
    if collective is not None:
        collective.mean_grads_(model)  # data parallel: the global-batch gradient
    optimizer.step()
    return scalars


def group_hyperparameters(optimizer: Optimizer, index: int = 0) -> dict[str, Any]:
    """Param group ``index``'s hyperparameters (the optimiser's own options, current LR included; not
    its ``params``), to build the same optimiser over another model's parameters."""
    group = optimizer.param_groups[index]
    return {k: v for k, v in group.items() if k in optimizer.defaults and k != "params"}
