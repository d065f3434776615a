"""Global gradient norms and norm clipping as pure functions (``torch.nn.utils.clip_grad_norm_``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

__all__ = ["clip_by_global_norm", "clip_by_global_norm_vjp", "global_norm"]

#: the ``1e-6`` that ``torch.nn.utils.clip_grad_norm_`` adds to the norm before dividing
CLIP_EPS = 1e-6


def global_norm(tensors: Iterable[Tensor], *, dtype: torch.dtype | None = None) -> Tensor:
    """The 2-norm of all ``tensors`` taken together, computed as ``clip_grad_norm_`` computes it
    (the norm of the per-tensor norms); ``dtype`` (e.g. ``torch.float64`` for logging) casts first."""
    norms = [torch.linalg.vector_norm(t if dtype is None else t.to(dtype), 2) for t in tensors]
    if not norms:
        return torch.zeros((), dtype=dtype or torch.float32)
    return torch.linalg.vector_norm(torch.stack(norms), 2)


def _coefficient(norm: Tensor, max_norm: float) -> Tensor:
    return torch.clamp(max_norm / (norm + CLIP_EPS), max=1.0)


def clip_by_global_norm(grads: Sequence[Tensor], max_norm: float) -> tuple[list[Tensor], Tensor]:
    """``grads`` scaled as ``clip_grad_norm_(…, max_norm)`` scales them in place, out of place.

    Returns the scaled gradients and the total norm before clipping (what ``clip_grad_norm_``
    returns). The coefficient ``min(1, max_norm / (‖g‖ + 1e-6))`` multiplies every gradient,
    as torch does (also when it is 1).
    """
    norm = global_norm(grads)
    coef = _coefficient(norm, max_norm)
    return [g * coef.to(g.dtype) for g in grads], norm


def clip_by_global_norm_vjp(grads: Sequence[Tensor], cotangent: Sequence[Tensor], max_norm: float) -> list[Tensor]:
    """``(∂ clip(g) / ∂g)ᵀ w``: a cotangent of the clipped gradients pulled back to ``g``.

    With ``n = ‖g‖`` and ``c = min(1, M / (n + ε))``: ``c·w`` where ``c`` is 1 (unclipped, the
    clamp's slope is 0), else ``c·w − M / (n + ε)² · (gᵀw / n) · g``.
    """
    norm = global_norm(grads)
    coef = _coefficient(norm, max_norm)
    if bool(coef >= 1.0):
        return list(cotangent)
    dot = sum((g.double() * w.double()).sum() for g, w in zip(grads, cotangent))
    k = (max_norm / (norm.double() + CLIP_EPS) ** 2) * dot / norm.double()
    return [coef.to(w.dtype) * w - k.to(w.dtype) * g for g, w in zip(grads, cotangent)]
