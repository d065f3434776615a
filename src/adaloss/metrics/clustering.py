"""k-means clustering and normalized mutual information, for the NMI embedding metric.

Plain torch (runs on the embeddings' device); scikit-learn is only the reference in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor

__all__ = ["KMeansResult", "kmeans", "normalized_mutual_info"]

#: Labels given as a tensor or anything ``torch.as_tensor`` takes (a list, a NumPy array).
LabelsLike = Union[Tensor, Sequence[int]]

# rows of a block of the (N, k) distance matrix are chosen so a block has at most this many entries
_BLOCK_ENTRIES = 1 << 24


def _as_labels(name: str, labels: LabelsLike) -> Tensor:
    t = labels if isinstance(labels, Tensor) else torch.as_tensor(labels)
    if t.dim() != 1:
        raise ValueError(f"Expected `{name}` to be a 1-D sequence of labels, but got shape {tuple(t.shape)}.")
    if t.is_floating_point() or t.is_complex():
        raise TypeError(f"Expected `{name}` to hold integer labels, but got dtype {t.dtype}.")
    return t


def normalized_mutual_info(labels_a: LabelsLike, labels_b: LabelsLike) -> float:
    """Normalized mutual information of two labelings, ``MI(a, b) / mean(H(a), H(b))``.

    Matches scikit-learn's ``normalized_mutual_info_score`` with its default arithmetic
    normalisation, including its limit cases: 1.0 when both labelings are a single cluster (or
    empty), 0.0 when the mutual information is 0. Label values are only compared for equality.
    """
    a = _as_labels("labels_a", labels_a)
    b = _as_labels("labels_b", labels_b).to(a.device)
    if a.shape != b.shape:
        raise ValueError(
            f"Expected `labels_a` and `labels_b` to have the same length, but got {a.shape[0]} and {b.shape[0]}."
        )
    n = a.shape[0]
    if n == 0:
        return 1.0
    _, ia = torch.unique(a, return_inverse=True)
    _, ib = torch.unique(b, return_inverse=True)
    ka, kb = int(ia.max()) + 1, int(ib.max()) + 1
    if ka == kb == 1:
        return 1.0
    # sparse contingency table: only the (a, b) pairs that occur
    pairs, counts = torch.unique(ia * kb + ib, return_counts=True)
    p_ab = counts.double() / n
    p_a = torch.bincount(ia, minlength=ka).double() / n
    p_b = torch.bincount(ib, minlength=kb).double() / n
    mi = (p_ab * (p_ab.log() - p_a[pairs // kb].log() - p_b[pairs % kb].log())).sum().clamp_min(0.0)
    if float(mi) == 0.0:
        return 0.0
    h_a = -(p_a * p_a.log()).sum()
    h_b = -(p_b * p_b.log()).sum()
    return float(mi / ((h_a + h_b) / 2))


@dataclass(frozen=True)
class KMeansResult:
    """The best of the k-means restarts."""

    #: ``(N,)`` int64 cluster index of each point.
    labels: Tensor
    #: ``(k, D)`` cluster centres.
    centers: Tensor
    #: Sum of squared distances of the points to their centres.
    inertia: float
    #: Lloyd iterations the best restart ran.
    n_iter: int


def _assign(x: Tensor, x_sq: Tensor, centers: Tensor) -> tuple[Tensor, Tensor]:
    """Squared distance of each point to its nearest centre, and that centre's index (blocked)."""
    c_sq = (centers * centers).sum(dim=1)
    rows = max(1, _BLOCK_ENTRIES // max(1, centers.shape[0]))
    dists, labels = [], []
    for s in range(0, x.shape[0], rows):
        d = (x_sq[s : s + rows, None] - 2 * x[s : s + rows] @ centers.T + c_sq).clamp_min_(0)
        m = d.min(dim=1)
        dists.append(m.values)
        labels.append(m.indices)
    return torch.cat(dists), torch.cat(labels)


def _kmeans_plusplus(x: Tensor, x_sq: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; sklearn's variant with
    ``2 + log(k)`` candidates per centre, keeping the one that lowers the potential most)."""
    n = x.shape[0]
    n_trials = 2 + int(math.log(k))
    first = int(torch.randint(n, (1,), generator=generator))
    centers = [x[first]]
    closest = (x_sq - 2 * x @ x[first] + x_sq[first]).clamp_min_(0).double()
    for _ in range(1, k):
        cum = closest.cumsum(dim=0)
        r = torch.rand(n_trials, generator=generator, dtype=torch.float64).to(x.device) * cum[-1]
        # side="right": never pick a point at distance 0 from the chosen centres unless all are
        cand = torch.searchsorted(cum, r, right=True).clamp_max_(n - 1)
        d = (x_sq - 2 * x[cand] @ x.T + x_sq[cand, None]).clamp_min_(0).double()
        d = torch.minimum(closest, d)
        best = int(d.sum(dim=1).argmin())
        closest = d[best]
        centers.append(x[cand[best]])
    return torch.stack(centers)


def _lloyd(x: Tensor, x_sq: Tensor, centers: Tensor, max_iter: int, tol: float) -> tuple[Tensor, int]:
    k = centers.shape[0]
    previous: Tensor | None = None
    it = 0
    for it in range(1, max_iter + 1):
        dist, labels = _assign(x, x_sq, centers)
        if previous is not None and torch.equal(labels, previous):
            break  # strict convergence: the centres are already the means of these clusters
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        new = sums / counts.clamp_min(1).unsqueeze(1).to(x.dtype)
        empty = (counts == 0).nonzero().squeeze(1)
        if empty.numel():  # relocate empty clusters to the points farthest from their centres
            new[empty] = x[dist.topk(empty.numel()).indices]
        shift = float((new - centers).pow(2).sum())
        centers, previous = new, labels
        if shift <= tol:
            break
    return centers, it


def kmeans(
    x: Tensor,
    n_clusters: int,
    *,
    n_init: int = 3,
    max_iter: int = 300,
    tol: float = 1e-4,
    seed: int = 0,
) -> KMeansResult:
    """k-means (Lloyd's algorithm from greedy k-means++ seeds), the best of ``n_init`` restarts.

    Like scikit-learn's ``KMeans``: a restart stops when the assignments no longer change or the
    centres move by at most ``tol`` times the mean per-feature variance (summed squared shift);
    empty clusters are moved to the points farthest from their centres. Deterministic for a
    given ``seed`` and device.

    Args:
        x: ``(N, D)`` points.
        n_clusters: k, at most N.
        n_init: restarts; the one with the lowest inertia is returned.
        max_iter: Lloyd iterations per restart.
        tol: relative tolerance on the centre shift.
        seed: seed of the k-means++ sampling.
    """
    if x.dim() != 2:
        raise ValueError(f"Expected `x` to be (N, D) points, but got shape {tuple(x.shape)}.")
    for name, value in (("n_clusters", n_clusters), ("n_init", n_init), ("max_iter", max_iter)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Expected `{name}` to be a positive integer, but got {value!r}.")
    if n_clusters > x.shape[0]:
        raise ValueError(f"Expected `n_clusters` to be at most N = {x.shape[0]} points, but got {n_clusters}.")
    if tol < 0:
        raise ValueError(f"Expected `tol` to be >= 0, but got {tol!r}.")
    x = x.detach()
    if not x.is_floating_point():
        x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise ValueError("Expected `x` to be finite, but it contains NaN or infinite values.")
    x_sq = (x * x).sum(dim=1)
    tol_abs = tol * float(x.var(dim=0, unbiased=False).mean()) if x.shape[0] > 1 else 0.0
    generator = torch.Generator().manual_seed(seed)
    best: KMeansResult | None = None
    for _ in range(n_init):
        centers = _kmeans_plusplus(x, x_sq, n_clusters, generator)
        centers, n_iter = _lloyd(x, x_sq, centers, max_iter, tol_abs)
        dist, labels = _assign(x, x_sq, centers)
        inertia = float(dist.double().sum())
        if best is None or inertia < best.inertia:
            best = KMeansResult(labels=labels, centers=centers, inertia=inertia, n_iter=n_iter)
    assert best is not None
    return best
