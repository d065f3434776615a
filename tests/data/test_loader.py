from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adaloss.checkpoint import load_checkpoint, save_checkpoint
from adaloss.data import TensorSplit
from adaloss.data.loader import BatchLoader, ClassBalancedLoader, iterate_batches


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


# ---- class-balanced batches (P classes × K examples, Huang et al., ICML 2019) ----------------

#: class sizes 7, 9, 5, 12, 6 (class c has label 10 * c: labels need not be 0..C-1)
SIZES = [7, 9, 5, 12, 6]


def _labelled_split() -> TensorSplit:
    g = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.full((n,), 10 * c) for c, n in enumerate(SIZES)])
    labels = labels[torch.randperm(len(labels), generator=g)]
    return TensorSplit(x=torch.arange(len(labels), dtype=torch.float32).unsqueeze(1), y=labels)


def _reference_pk(split: TensorSplit, *, p: int, k: int, seed: int, batches: int) -> list[torch.Tensor]:
    """The documented sampling written out by hand: per-class orders at start, P classes per batch
    from randperm(C)[:P], the next K of each class, a class reshuffled when fewer than K remain."""
    g = torch.Generator().manual_seed(seed)
    classes = sorted(set(split.y.tolist()))
    rows = {c: [i for i, y in enumerate(split.y.tolist()) if y == c] for c in classes}
    orders = {c: torch.randperm(len(rows[c]), generator=g).tolist() for c in classes}
    pos = {c: 0 for c in classes}
    out = []
    for _ in range(batches):
        batch: list[int] = []
        for ci in torch.randperm(len(classes), generator=g)[:p].tolist():
            c = classes[ci]
            if pos[c] + k > len(rows[c]):
                orders[c], pos[c] = torch.randperm(len(rows[c]), generator=g).tolist(), 0
            batch += [rows[c][j] for j in orders[c][pos[c] : pos[c] + k]]
            pos[c] += k
        out.append(torch.tensor(batch))
    return out


def test_class_balanced_batches_hold_p_classes_of_k_and_match_the_documented_sampling() -> None:
    split = _labelled_split()
    loader = ClassBalancedLoader(split, batch_size=12, samples_per_class=4, seed=3)
    assert (loader.classes_per_batch, loader.samples_per_class) == (3, 4)
    reference = _reference_pk(split, p=3, k=4, seed=3, batches=40)
    for want in reference:
        x, y = next(loader)
        idx = x.squeeze(1).long()
        assert torch.equal(idx, want)
        assert torch.equal(y, split.y[idx])
        groups = y.view(3, 4)  # class-major: P groups of K
        assert (groups == groups[:, :1]).all() and len(set(groups[:, 0].tolist())) == 3
    assert loader.batches == 40


def test_class_balanced_no_repeat_within_a_pass_and_classes_drawn_uniformly() -> None:
    split = _labelled_split()
    loader = ClassBalancedLoader(split, batch_size=6, samples_per_class=3, seed=0)
    drawn: dict[int, list[int]] = {}
    counts = torch.zeros(5)
    for _ in range(2000):
        x, y = next(loader)
        for c, rows in zip(y.view(2, 3)[:, 0].tolist(), x.squeeze(1).long().view(2, 3).tolist()):
            drawn.setdefault(c, []).extend(rows)
            counts[c // 10] += 1
    for c, n in enumerate(SIZES):
        per_pass = (n // 3) * 3  # a pass uses floor(n / K) groups, then the class is reshuffled
        seq = drawn[10 * c]
        for start in range(0, len(seq) - per_pass + 1, per_pass):
            assert len(set(seq[start : start + per_pass])) == per_pass
    share = counts / counts.sum()  # each class is one of P = 2 of C = 5: 1/5 of the groups
    assert (share - 0.2).abs().max() < 0.02, share


def test_class_balanced_state_resumes_exactly_through_a_checkpoint(tmp_path: Path) -> None:
    split = _labelled_split()
    a = ClassBalancedLoader(split, batch_size=10, samples_per_class=5, seed=1)
    for _ in range(7):
        next(a)
    path = save_checkpoint({"loader": a.state_dict()}, tmp_path / "c.pt")  # the trainer's format
    expected = [next(a)[0] for _ in range(15)]  # crosses several per-class reshuffles
    b = ClassBalancedLoader(split, batch_size=10, samples_per_class=5, seed=999)
    assert not torch.equal(next(b)[0], expected[0])
    b.load_state_dict(load_checkpoint(path)["loader"])
    assert all(torch.equal(next(b)[0], e) for e in expected)
    assert b.batches == a.batches


def test_class_balanced_errors() -> None:
    split = _labelled_split()
    with pytest.raises(ValueError, match=r"`batch_size` to be a multiple of `samples_per_class` \(4\).*got "
                                         r"batch_size=10"):
        ClassBalancedLoader(split, batch_size=10, samples_per_class=4, seed=0)
    with pytest.raises(ValueError, match=r"classes per batch, 12 / 2 = 6\) to be at most the 5 classes"):
        ClassBalancedLoader(split, batch_size=12, samples_per_class=2, seed=0)
    with pytest.raises(ValueError, match=r"smallest class of the split \(5 examples of class 20\), but got 6"):
        ClassBalancedLoader(split, batch_size=12, samples_per_class=6, seed=0)
    with pytest.raises(ValueError, match=r"`samples_per_class` to be >= 1, but got 0"):
        ClassBalancedLoader(split, batch_size=12, samples_per_class=0, seed=0)
    with pytest.raises(TypeError, match="integer class labels"):
        ClassBalancedLoader(TensorSplit(split.x, split.y.float()), batch_size=4, samples_per_class=2, seed=0)
    loader = ClassBalancedLoader(split, batch_size=4, samples_per_class=2, seed=0)
    with pytest.raises(ValueError, match="not from a class-balanced loader"):
        loader.load_state_dict(BatchLoader(split, batch_size=4, seed=0).state_dict())
    other = ClassBalancedLoader(_split(50), batch_size=4, samples_per_class=1, seed=0)
    with pytest.raises(ValueError, match="classes of sizes"):
        loader.load_state_dict(other.state_dict())


def test_resumable_cycle_continues_where_the_saved_one_stopped() -> None:
    from adaloss.data.batches import ResumableCycle

    stream = ResumableCycle([1, 2, 3])
    assert [next(stream) for _ in range(4)] == [1, 2, 3, 1]
    again = ResumableCycle([1, 2, 3])
    again.load_state_dict(stream.state_dict())
    assert [next(again) for _ in range(4)] == [2, 3, 1, 2] and again.drawn == 8
