"""Activations of the learned loss network."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["smooth_leaky_relu"]


def smooth_leaky_relu(x: Tensor, *, beta: float = 2.0, gamma: float = 0.25) -> Tensor:
    """``gamma * x + (1 - gamma) * softplus_beta(x)`` (AdaLFL, Raymond et al., App. B.2).

    C¹ everywhere and, for ``gamma > 0``, unbounded with linear asymptotes of slope ``gamma``
    (x → −∞) and 1 (x → +∞). ``softplus_beta(x) = log(1 + exp(beta x)) / beta``, computed with
    ``F.softplus`` (stable for large ``beta x``).
    """
    return gamma * x + (1.0 - gamma) * F.softplus(x, beta=beta)
