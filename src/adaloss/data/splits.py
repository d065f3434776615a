"""Seeded index splits: stratified for class labels, plain random for regression targets."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor

from adaloss._validation import check_fraction

__all__ = ["random_split", "stratified_split"]


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"Expected `seed` to be an int, but got {seed!r} ({type(seed).__name__}).")
    if seed < 0:
        raise ValueError(f"Expected `seed` to be >= 0, but got {seed!r}.")
    return int(seed)


def _split(
    num_samples: int, *, fraction: float, seed: int, stratify: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    fraction = check_fraction("fraction", fraction)
    seed = _check_seed(seed)
    if num_samples < 2:
        raise ValueError(f"Cannot split {num_samples} sample(s) into two non-empty parts.")
    indices = np.arange(num_samples)
    try:
        keep, held_out = train_test_split(
            indices, test_size=fraction, random_state=seed, shuffle=True, stratify=stratify
        )
    except ValueError as error:
        # sklearn's message ("least populated class ...") does not say which split failed.
        raise ValueError(
            f"Cannot carve a {'stratified ' if stratify is not None else ''}{fraction:g} fraction "
            f"out of {num_samples} samples: {error}"
        ) from error
    # Sorted indices keep the source order inside each part; loaders shuffle anyway.
    return np.sort(keep), np.sort(held_out)


def stratified_split(
    y: Tensor | np.ndarray, *, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices so that each class keeps its share in both parts.

    Args:
        y: Integer class labels, shape ``(N,)``.
        fraction: Share of samples held out, in (0, 1).
        seed: Seed of the shuffle; the same seed and labels give the same split.

    Returns:
        ``(keep_idx, held_out_idx)``: sorted int64 index arrays that partition ``range(N)``.
    """
    labels = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if labels.ndim != 1:
        raise ValueError(f"Expected `y` to be 1-D class labels, but got shape {labels.shape}.")
    return _split(len(labels), fraction=fraction, seed=seed, stratify=labels)


def random_split(num_samples: int, *, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(num_samples)`` at random (for regression, where there are no classes).

    Returns:
        ``(keep_idx, held_out_idx)``: sorted int64 index arrays.
    """
    return _split(num_samples, fraction=fraction, seed=seed, stratify=None)
