"""Functional forms of the handcrafted losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["contrastive_loss", "focal_loss", "generalized_cross_entropy", "margin_loss", "symmetric_cross_entropy",
           "target_prediction_pairs"]


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


def generalized_cross_entropy(logits: Tensor, target: Tensor, *, q: float = 0.7) -> Tensor:
    """Generalised cross-entropy ``L_q = (1 − p_y^q) / q`` averaged over the batch (Zhang &
    Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy Labels",
    NeurIPS 2018, Eq. 6): cross-entropy as ``q → 0``, MAE (noise-robust) at ``q = 1``."""
    log_p = F.log_softmax(logits, dim=-1).gather(-1, target.long().unsqueeze(-1)).squeeze(-1)
    return ((1.0 - torch.exp(q * log_p)) / q).mean()


def symmetric_cross_entropy(
    logits: Tensor, target: Tensor, *, alpha: float = 0.1, beta: float = 1.0, log_zero: float = -4.0
) -> Tensor:
    """Symmetric cross-entropy ``α CE + β RCE`` averaged over the batch (Wang et al., "Symmetric
    Cross Entropy for Robust Learning with Noisy Labels", ICCV 2019, Eq. 4): the reverse term
    ``RCE = −Σ_k p_k log q_k`` with the one-hot label ``q`` and ``log 0`` taken as ``A`` =
    ``log_zero`` is ``−A (1 − p_y)``. Defaults: the paper's MNIST setting (α 0.1, β 1, A −4)."""
    ce = F.cross_entropy(logits, target.long())
    p_y = F.softmax(logits, dim=-1).gather(-1, target.long().unsqueeze(-1)).squeeze(-1)
    return alpha * ce + beta * (-log_zero * (1.0 - p_y)).mean()


def _pair_distances(embeddings: Tensor, labels: Tensor, normalize: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Distances of all pairs ``i != j`` from the Gram matrix: ``(d, same, pair_mask)``, each ``(N, N)``."""
    if embeddings.dim() != 2 or labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(f"Expected (N, D) embeddings and (N,) labels, but got shapes {tuple(embeddings.shape)} and "
                         f"{tuple(labels.shape)}.")
    if embeddings.shape[0] < 2:
        raise ValueError(f"Expected a batch of at least 2 embeddings to form pairs, but got {embeddings.shape[0]}.")
    x = F.normalize(embeddings, dim=-1) if normalize else embeddings
    sq = (x * x).sum(-1)
    d2 = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(1e-12)
    n = x.shape[0]
    mask = ~torch.eye(n, dtype=torch.bool, device=x.device)
    return d2.sqrt(), labels[:, None] == labels[None, :], mask


def contrastive_loss(embeddings: Tensor, labels: Tensor, *, margin: float = 1.0, normalize: bool = True) -> Tensor:
    """Contrastive loss (Hadsell, Chopra & LeCun 2006), mean over all unordered pairs of the batch.

    A pair at Euclidean distance ``d`` costs ``d²`` if its labels agree, else
    ``max(0, margin − d)²``. With ``normalize`` the embeddings are L2-normalised first (so
    ``d ∈ [0, 2]``). ALA's :class:`~adaloss.losses.ala.PairDistanceLoss` with all bin
    weights 1 equals this loss (Huang et al., ICML 2019, metric learning; reconstructed); the two are computed
    independently.
    """
    d, same, mask = _pair_distances(embeddings, labels, normalize)
    per_pair = torch.where(same, d * d, F.relu(margin - d) ** 2)
    return per_pair[mask].mean()  # each unordered pair appears twice: the mean is unchanged


def margin_loss(
    embeddings: Tensor, labels: Tensor, *, alpha: float = 0.2, beta: float = 1.2, normalize: bool = True
) -> Tensor:
    """Margin loss of Wu et al. ("Sampling Matters in Deep Embedding Learning", 2017, eq. 4) with a
    fixed boundary β, mean over all unordered pairs: ``max(0, α + y_ij (d − β))``, ``y_ij = ±1``
    for same/different labels."""
    d, same, mask = _pair_distances(embeddings, labels, normalize)
    sign = same.to(d.dtype) * 2 - 1
    return F.relu(alpha + sign * (d - beta))[mask].mean()


def target_prediction_pairs(prediction: Tensor, target: Tensor, *, task: str) -> tuple[Tensor, Tensor]:
    """The elementwise ``(target, prediction)`` pairs a learned loss ℓ(y_i, p_i) sees (ML3, AdaLFL,
    TaylorGLO): one-hot targets and softmax probabilities for classification, raw values otherwise."""
    if task == "classification":
        if prediction.dim() != 2 or target.shape != prediction.shape[:1]:
            raise ValueError(
                "Expected `prediction` of shape (N, C) and `target` class indices of shape (N,), but got "
                f"{tuple(prediction.shape)} and {tuple(target.shape)}."
            )
        p = prediction.softmax(dim=-1)
        return F.one_hot(target, prediction.shape[-1]).to(p.dtype), p
    if target.shape != prediction.shape:
        raise ValueError(
            f"Expected `prediction` and `target` of the same shape, but got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}."
        )
    return target.to(prediction.dtype), prediction
