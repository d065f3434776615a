"""Deep-metric-learning metrics of embeddings against class labels: Recall@k and NMI.

The definitions used by the ALA paper's metric-learning experiments (and the DML literature,
e.g. Song et al. 2016): Recall@k is the fraction of queries with at least one same-class item
among their k nearest other embeddings, NMI the normalized mutual information between the labels
and a k-means clustering of the embeddings with one cluster per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from adaloss._validation import check_choice
from adaloss.metrics.base import _WholeSetMetric, register_metric
from adaloss.metrics.clustering import kmeans, normalized_mutual_info

__all__ = ["NMI", "RecallAt1", "RecallAt2", "RecallAt4", "RecallAt8", "RecallAtK", "nmi", "recall_at_k"]

Distance = Literal["euclidean", "cosine"]

# rows of a query block are chosen so its (rows, N) distance matrix has at most this many entries
_BLOCK_ENTRIES = 1 << 24


def _check_embeddings(embeddings: Tensor, labels: Tensor) -> None:
    if embeddings.dim() != 2:
        raise ValueError(
            f"Expected `embeddings` to be (N, D), but got shape {tuple(embeddings.shape)}."
        )
    if embeddings.is_complex() or embeddings.dtype == torch.bool:
        raise TypeError(f"Expected `embeddings` to be real-valued, but got dtype {embeddings.dtype}.")
    if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"Expected `labels` to be (N,) with N = {embeddings.shape[0]} (the rows of `embeddings`), "
            f"but got shape {tuple(labels.shape)}."
        )
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"Expected `labels` to hold integer class labels, but got dtype {labels.dtype}.")


def _check_k(k: object, n: int | None = None) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"Expected `k` to be a positive integer, but got {k!r}.")
    if n is not None and k > n - 1:
        raise ValueError(
            f"Expected `k` to be at most N - 1 = {n - 1} (the other embeddings of a query), but got {k}."
        )
    return k


def recall_at_k(
    embeddings: Tensor,
    labels: Tensor,
    k: int | Sequence[int] = 1,
    *,
    distance: Distance = "euclidean",
    block_size: int | None = None,
) -> Tensor:
    """Deep-metric-learning Recall@k (not IR recall), leave-one-out over the evaluated set.

    For each query embedding, the k nearest *other* embeddings of the set are found; the query
    counts as a hit when at least one of them has the query's label. Recall@k is the fraction of
    hits. Distances are Euclidean (ranked by squared distance) or cosine (ranked by cosine
    similarity of the L2-normalised embeddings). Ties in distance are broken by
    ``torch.topk`` (unspecified order). Queries are processed in blocks, so memory stays
    ``O(block_size * N)``.

    Args:
        embeddings: ``(N, D)``.
        labels: ``(N,)`` integer class labels.
        k: one k, or several (computed from one neighbour search); each in [1, N - 1].
        distance: ``"euclidean"`` or ``"cosine"``.
        block_size: queries per block (default: a block's distance matrix has at most 2**24 entries).

    Returns:
        A 0-d tensor for an int ``k``, else a 1-D tensor with one recall per k (float64).
    """
    _check_embeddings(embeddings, labels)
    check_choice("distance", distance, ("euclidean", "cosine"))
    n = embeddings.shape[0]
    ks = [_check_k(k, n)] if isinstance(k, int) else [_check_k(v, n) for v in k]
    if not ks:
        raise ValueError("Expected `k` to name at least one k, but got an empty sequence.")
    if block_size is None:
        block_size = max(1, _BLOCK_ENTRIES // n)
    elif isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"Expected `block_size` to be a positive integer, but got {block_size!r}.")
    x = embeddings.detach()
    if not x.is_floating_point():
        x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise ValueError("Expected `embeddings` to be finite, but it contains NaN or infinite values.")
    labels = labels.to(x.device)
    if distance == "cosine":
        x = F.normalize(x, dim=1)
    x_sq = (x * x).sum(dim=1)
    k_max = max(ks)
    hits = torch.zeros(len(ks), dtype=torch.int64, device=x.device)
    k_index = torch.tensor(ks, device=x.device) - 1
    for s in range(0, n, block_size):
        q = x[s : s + block_size]
        rows = torch.arange(q.shape[0], device=x.device)
        # squared distance minus the query's own |q|^2 (constant per row: same ranking)
        d = x_sq - 2 * q @ x.T if distance == "euclidean" else -(q @ x.T)
        d[rows, rows + s] = float("inf")  # leave the query out
        nearest = d.topk(k_max, dim=1, largest=False, sorted=True).indices
        match = (labels[nearest] == labels[s : s + block_size, None]).cummax(dim=1).values
        hits += match[:, k_index].sum(dim=0)
    recall = hits.double() / n
    return recall[0] if isinstance(k, int) else recall


class RecallAtK(_WholeSetMetric):
    """Recall@k of embeddings (:func:`recall_at_k`), in [0, 1]; higher is better.

    The registered metrics are the subclasses ``recall@1``, ``recall@2``, ``recall@4`` and
    ``recall@8`` (the ks of the DML literature); subclass with another ``k`` and ``name`` (and
    :func:`~adaloss.metrics.base.register_metric`) for more. ``update`` takes ``(N, D)``
    embeddings and ``(N,)`` labels; ``compute`` searches the whole accumulated set.

    Args:
        distance: ``"euclidean"`` (default) or ``"cosine"``.
    """

    k: ClassVar[int]
    higher_is_better = True
    task = "embedding"

    def __init__(self, *, distance: Distance = "euclidean") -> None:
        if not hasattr(type(self), "k"):
            raise TypeError("RecallAtK is the base class; use RecallAt1/2/4/8 or recall_at_k for another k.")
        self.distance: Distance = check_choice("distance", distance, ("euclidean", "cosine"))
        super().__init__()

    def _check_batch(self, prediction: Tensor, target: Tensor) -> None:
        _check_embeddings(prediction, target)

    def _compute(self, prediction: Tensor, target: Tensor) -> float:
        return float(recall_at_k(prediction, target, self.k, distance=self.distance))


@register_metric
class RecallAt1(RecallAtK):
    """Recall@1 of embeddings; the ALA metric-learning reward."""

    name = "recall@1"
    k = 1


@register_metric
class RecallAt2(RecallAtK):
    """Recall@2 of embeddings."""

    name = "recall@2"
    k = 2


@register_metric
class RecallAt4(RecallAtK):
    """Recall@4 of embeddings."""

    name = "recall@4"
    k = 4


@register_metric
class RecallAt8(RecallAtK):
    """Recall@8 of embeddings."""

    name = "recall@8"
    k = 8


def nmi(embeddings: Tensor, labels: Tensor, *, n_init: int = 3, max_iter: int = 300, seed: int = 0) -> Tensor:
    """NMI of a k-means clustering of ``embeddings`` against ``labels``, k = number of labels.

    :func:`~adaloss.metrics.clustering.kmeans` (greedy k-means++, Lloyd, best of ``n_init``
    seeded restarts), scored with :func:`~adaloss.metrics.clustering.normalized_mutual_info`
    (sklearn's ``normalized_mutual_info_score``, arithmetic normalisation). Returns a 0-d
    float64 tensor in [0, 1].
    """
    _check_embeddings(embeddings, labels)
    if embeddings.shape[0] == 0:
        raise ValueError("Expected `embeddings` to hold at least one row, but it is empty.")
    n_clusters = int(torch.unique(labels).numel())
    clusters = kmeans(embeddings, n_clusters, n_init=n_init, max_iter=max_iter, seed=seed).labels
    return torch.tensor(normalized_mutual_info(labels.to(clusters.device), clusters), dtype=torch.float64)


@register_metric
class NMI(_WholeSetMetric):
    """Normalized mutual information between labels and a k-means clustering of the embeddings
    (:func:`nmi`), in [0, 1]; higher is better. Deterministic for a given ``seed``."""

    name = "nmi"
    higher_is_better = True
    task = "embedding"

    def __init__(self, *, n_init: int = 3, max_iter: int = 300, seed: int = 0) -> None:
        self.n_init, self.max_iter, self.seed = n_init, max_iter, seed
        super().__init__()

    def _check_batch(self, prediction: Tensor, target: Tensor) -> None:
        _check_embeddings(prediction, target)

    def _compute(self, prediction: Tensor, target: Tensor) -> float:
        return float(nmi(prediction, target, n_init=self.n_init, max_iter=self.max_iter, seed=self.seed))
