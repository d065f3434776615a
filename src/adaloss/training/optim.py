"""Base optimisers and learning-rate schedules, built from plain settings."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, MultiStepLR

from adaloss._validation import check_choice, check_positive

__all__ = ["OPTIMIZERS", "OptimizerName", "create_optimizer", "create_scheduler"]

OptimizerName = Literal["sgd", "adam", "adamw"]
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")


def create_optimizer(
    params: Iterable[nn.Parameter],
    name: OptimizerName = "sgd",
    *,
    lr: float,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> Optimizer:
    """A ``torch.optim`` optimiser: SGD (momentum, Nesterov, weight decay), Adam or AdamW.

    Momentum and Nesterov apply to SGD only; ``betas``/``eps`` to Adam and AdamW. Setting an
    option the chosen optimiser ignores raises, so a config never silently means something else.
    """
    check_choice("optimizer", name, OPTIMIZERS)
    check_positive("lr", lr)
    check_positive("weight_decay", weight_decay, allow_zero=True)
    if name == "sgd":
        check_positive("momentum", momentum, allow_zero=True)
        if nesterov and momentum <= 0:
            raise ValueError(f"`nesterov=True` needs `momentum` > 0, but got momentum={momentum!r}.")
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    if momentum != 0.0 or nesterov:
        raise ValueError(
            f"`momentum`/`nesterov` apply to optimizer='sgd' only, but optimizer={name!r} got "
            f"momentum={momentum!r}, nesterov={nesterov!r}; use `betas` for Adam."
        )
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"Expected `betas` to be two numbers in [0, 1), but got {list(betas)!r}.")
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(params, lr=lr, betas=(float(betas[0]), float(betas[1])), eps=eps, weight_decay=weight_decay)


def create_scheduler(
    optimizer: Optimizer, *, milestones: Sequence[int] = (), gamma: float = 0.1
) -> LRScheduler | None:
    """A multi-step schedule (LR × ``gamma`` at each milestone step), or ``None`` without milestones.

    The scheduler is stepped once per base step, so milestones count gradient steps, as the papers do.
    """
    if not milestones:
        return None
    ms = list(milestones)
    if any(isinstance(m, bool) or not isinstance(m, int) or m <= 0 for m in ms) or ms != sorted(set(ms)):
        raise ValueError(f"Expected `milestones` to be increasing positive step numbers, but got {ms!r}.")
    check_positive("gamma", gamma)
    return MultiStepLR(optimizer, milestones=ms, gamma=gamma)
