from __future__ import annotations

import numpy as np
import pytest
import torch

from adaloss.data.splits import random_split, stratified_split


def test_stratified_split_keeps_class_shares_and_partitions() -> None:
    y = np.repeat(np.arange(4), [40, 20, 100, 40])
    keep, held = stratified_split(y, fraction=0.1, seed=3)
    assert len(held) == 20 and len(keep) == 180
    assert np.array_equal(np.sort(np.concatenate([keep, held])), np.arange(len(y)))
    assert np.bincount(y[held]).tolist() == [4, 2, 10, 4]


def test_stratified_split_is_seeded() -> None:
    y = torch.arange(300) % 3
    a = stratified_split(y, fraction=0.2, seed=1)
    b = stratified_split(y.numpy(), fraction=0.2, seed=1)
    c = stratified_split(y, fraction=0.2, seed=2)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_random_split() -> None:
    keep, held = random_split(50, fraction=0.2, seed=0)
    assert len(held) == 10 and not set(keep) & set(held)
    assert np.array_equal(held, random_split(50, fraction=0.2, seed=0)[1])


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1])
def test_fraction_validated(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        stratified_split(np.zeros(10, int), fraction=fraction, seed=0)


def test_bad_seed_and_labels() -> None:
    with pytest.raises(TypeError, match="seed"):
        random_split(10, fraction=0.5, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1-D"):
        stratified_split(np.zeros((4, 2)), fraction=0.5, seed=0)
    with pytest.raises(ValueError, match="stratified"):
        stratified_split(np.array([0, 0, 0, 1]), fraction=0.5, seed=0)
