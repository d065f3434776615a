from __future__ import annotations

import pytest
import torch

from adaloss.data import TensorSplit
from adaloss.data.loader import BatchLoader, iterate_batches


def _split(n: int = 50) -> TensorSplit:
    return TensorSplit(x=torch.arange(n, dtype=torch.float32).unsqueeze(1), y=torch.arange(n))


def test_each_epoch_visits_each_example_at_most_once_and_drops_the_remainder() -> None:
    loader = BatchLoader(_split(50), batch_size=8, seed=0)
    seen = torch.cat([next(loader)[1] for _ in range(6)])  # 6 full batches per epoch
    assert len(seen) == 48 and len(set(seen.tolist())) == 48
    x, y = next(loader)  # first batch of epoch 2
    assert loader.epoch == 1 and torch.equal(x.squeeze(1).long(), y)


def test_same_seed_same_batches_and_matches_a_plain_randperm_loop() -> None:
    a = BatchLoader(_split(), batch_size=7, seed=3)
    g = torch.Generator().manual_seed(3)
    for _epoch in range(3):
        perm = torch.randperm(50, generator=g)
        for b in range(50 // 7):
            assert torch.equal(next(a)[1], perm[b * 7 : (b + 1) * 7])


def test_state_dict_resumes_exactly() -> None:
    a = BatchLoader(_split(), batch_size=8, seed=1)
    for _ in range(9):
        next(a)
    state = a.state_dict()
    expected = [next(a)[1] for _ in range(10)]
    b = BatchLoader(_split(), batch_size=8, seed=123)
    b.load_state_dict(state)
    assert all(torch.equal(next(b)[1], e) for e in expected)


def test_errors_and_in_order_iteration() -> None:
    with pytest.raises(ValueError, match="`batch_size` to be at most the split size 50, but got 51"):
        BatchLoader(_split(), batch_size=51, seed=0)
    with pytest.raises(ValueError, match=r"`augment` to be one of \['crop_flip', 'none'\], but got 'flip'"):
        BatchLoader(_split(), batch_size=5, seed=0, augment="flip")  # type: ignore[arg-type]
    ys = [y for _, y in iterate_batches(_split(), batch_size=20)]
    assert [len(y) for y in ys] == [20, 20, 10] and torch.equal(torch.cat(ys), torch.arange(50))


def test_crop_flip_batches_are_seeded_and_resume_exactly() -> None:
    g = torch.Generator().manual_seed(0)
    split = TensorSplit(x=torch.rand(40, 3, 32, 32, generator=g), y=torch.arange(40))
    a = BatchLoader(split, batch_size=8, seed=5, augment="crop_flip")
    b = BatchLoader(split, batch_size=8, seed=5, augment="crop_flip")
    xa, ya = next(a)
    xb, yb = next(b)
    assert xa.shape == (8, 3, 32, 32) and torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(xa, split.x[ya])  # augmented, not the raw images
    state = a.state_dict()
    expected = [next(a)[0] for _ in range(6)]  # crosses an epoch boundary
    c = BatchLoader(split, batch_size=8, seed=99, augment="crop_flip")
    c.load_state_dict(state)
    assert all(torch.equal(next(c)[0], e) for e in expected)
