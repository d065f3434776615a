from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from adaloss.data.augment import random_crop_flip


def naive_crop_flip(x: torch.Tensor, *, generator: torch.Generator, padding: int) -> torch.Tensor:
    """Per-sample loop drawing the same random numbers as the documented order."""
    n, _, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    padded = F.pad(x, (padding,) * 4)
    out = []
    for i in range(n):
        dy, dx = int(offsets[0, i]), int(offsets[1, i])
        crop = padded[i, :, dy : dy + h, dx : dx + w]
        out.append(crop.flip(-1) if flip[i] else crop)
    return torch.stack(out)


@pytest.mark.parametrize("padding", [0, 1, 4])
def test_matches_naive_reference(padding: int) -> None:
    x = torch.randn(16, 3, 8, 10)
    got = random_crop_flip(x, generator=torch.Generator().manual_seed(5), padding=padding)
    want = naive_crop_flip(x, generator=torch.Generator().manual_seed(5), padding=padding)
    assert got.shape == x.shape and got.dtype == x.dtype
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_deterministic_and_random() -> None:
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32).repeat(8, 1, 1, 1)
    a = random_crop_flip(x, generator=torch.Generator().manual_seed(0))
    b = random_crop_flip(x, generator=torch.Generator().manual_seed(0))
    c = random_crop_flip(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # A crop of the zero-padded image never invents values.
    assert set(a.unique().tolist()) <= set(x.unique().tolist()) | {0.0}


def test_rejects_bad_input() -> None:
    g = torch.Generator()
    with pytest.raises(ValueError, match="x"):
        random_crop_flip(torch.zeros(3, 8, 8), generator=g)
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(torch.zeros(1, 3, 8, 8), generator=g, padding=-1)
