"""Functional forms of the handcrafted losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["focal_loss"]


def focal_loss(logits: Tensor, target: Tensor, *, gamma: float = 2.0) -> Tensor:
    """Mean focal loss ``-(1 - p_t)^gamma * log p_t`` (Lin et al. 2017, eq. 4, without alpha).

    Args:
        logits: ``(N, C)`` unnormalised scores.
        target: ``(N,)`` class indices.
        gamma: focusing parameter; ``gamma=0`` is cross-entropy.

    Returns:
        The scalar mean over the batch.
    """
    log_p = F.log_softmax(logits, dim=-1)
    log_pt = log_p.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    if gamma == 0:
        return -log_pt.mean()
    pt = log_pt.exp()
    # clamp: (1 - pt) can be a tiny negative number from rounding, and a fractional power of it is NaN
    return -(torch.clamp(1.0 - pt, min=0.0).pow(gamma) * log_pt).mean()
