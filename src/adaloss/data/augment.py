"""Batched image augmentation with tensor ops (no Python loop over samples)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["random_crop_flip"]


def random_crop_flip(x: Tensor, *, generator: torch.Generator, padding: int = 4) -> Tensor:
    """Zero-pad, randomly crop back to the original size and flip horizontally with p = 0.5.

    Each sample gets its own offsets and flip. The random draws, in this order and on the
    generator's device, are ``torch.randint(0, 2 * padding + 1, (2, N))`` (row offsets, then
    column offsets) and ``torch.rand(N) < 0.5`` (flip), so the result is a function of the
    generator state.

    Args:
        x: Images ``(N, C, H, W)`` on any device.
        generator: Source of randomness.
        padding: Zero padding on every side; 0 leaves only the flips.

    Returns:
        Augmented images with the shape, dtype and device of ``x``.
    """
    if x.ndim != 4:
        raise ValueError(f"Expected `x` to have shape (N, C, H, W), but got {tuple(x.shape)}.")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"Expected `padding` to be an int >= 0, but got {padding!r}.")
    n, _, height, width = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=generator.device)
    flip = torch.rand(n, generator=generator, device=generator.device) < 0.5
    offsets, flip = offsets.to(x.device), flip.to(x.device)

    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    rows = offsets[0, :, None] + torch.arange(height, device=x.device)  # (N, H)
    cols = offsets[1, :, None] + torch.arange(width, device=x.device)  # (N, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indices split by a slice put the broadcast dims first: (N, H, W, C).
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()
