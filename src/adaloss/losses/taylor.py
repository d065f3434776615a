"""TaylorGLO's Taylor-polynomial loss as a criterion module (Gonzalez & Miikkulainen, GECCO 2021)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from adaloss._validation import check_choice
from adaloss.functional.losses import target_prediction_pairs
from adaloss.functional.taylor import TAYLOR_PARAMETERS, taylor_loss, taylor_polynomial
from adaloss.typing import Task

__all__ = ["TaylorLoss"]


def as_theta(theta: Sequence[float] | Tensor | None, *, name: str = "theta") -> Tensor:
    """``theta`` as a float32 tensor of 8 finite values (zeros for ``None``); raises naming ``name``."""
    if theta is None:
        return torch.zeros(TAYLOR_PARAMETERS)
    try:
        values = [float(v) for v in (theta.detach().flatten().tolist() if isinstance(theta, Tensor) else theta)]
    except (TypeError, ValueError):
        values = []
    if len(values) != TAYLOR_PARAMETERS or not all(math.isfinite(v) for v in values):
        raise ValueError(f"Expected `{name}` to be {TAYLOR_PARAMETERS} finite numbers, but got {theta!r}.")
    return torch.tensor(values, dtype=torch.float32)


class TaylorLoss(nn.Module):
    """``loss(prediction, target)`` = :func:`~adaloss.functional.taylor_loss` with fixed θ (TaylorGLO).

    θ is a buffer, not a parameter: TaylorGLO finds it by evolution (CMA-ES), not by gradients.

    Args:
        task: ``"classification"`` (``prediction`` are logits ``(N, C)``, ``target`` class indices
            ``(N,)``; the polynomial sees softmax probabilities and one-hot targets) or
            ``"regression"`` (``prediction`` and ``target`` of equal shape, raw values).
        theta: the 8 parameters (default: zeros, a constant loss).
    """

    theta: Tensor

    def __init__(self, *, task: Task = "classification", theta: Sequence[float] | Tensor | None = None) -> None:
        super().__init__()
        self.task: Task = check_choice("task", task, ("classification", "regression"))
        self.register_buffer("theta", as_theta(theta))

    def config(self) -> dict[str, Any]:
        """Constructor arguments, to rebuild this loss (see :func:`adaloss.losses.save`)."""
        return {"task": self.task, "theta": self.theta.tolist()}

    def set_theta(self, theta: Sequence[float] | Tensor) -> None:
        """Replace θ in place (keeps the buffer's device)."""
        self.theta.copy_(as_theta(theta))

    def inputs(self, prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """The (target, prediction) pairs the polynomial sees: one-hot/softmax or raw values."""
        return target_prediction_pairs(prediction, target, task=self.task)

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        y, p = self.inputs(prediction, target)
        return taylor_loss(p, y, self.theta)

    @torch.no_grad()
    def curves(self, num: int = 101) -> dict[str, Any]:
        """The pointwise loss −f, in the snapshot format of :meth:`LossNetwork.curves`, plus θ."""
        theta = self.theta.double()
        if self.task == "classification":
            p = torch.linspace(0.0, 1.0, num, dtype=torch.float64)
            return {
                "kind": "classification",
                "p": p.tolist(),
                "loss_target1": (-taylor_polynomial(torch.ones_like(p), p, theta)).tolist(),
                "loss_target0": (-taylor_polynomial(torch.zeros_like(p), p, theta)).tolist(),
                "theta": self.theta.tolist(),
            }
        r = torch.linspace(-3.0, 3.0, num, dtype=torch.float64)
        return {
            "kind": "regression",
            "residual": r.tolist(),
            "loss": (-taylor_polynomial(torch.zeros_like(r), r, theta)).tolist(),
            "theta": self.theta.tolist(),
        }

    def extra_repr(self) -> str:
        return f"task={self.task!r}, theta={[round(v, 4) for v in self.theta.tolist()]}"
