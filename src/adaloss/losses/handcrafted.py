"""Handcrafted losses and the name → criterion table the CLI uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from adaloss._optional import import_optional
from adaloss._validation import call_with_options, check_positive, unknown_name_error
from adaloss.functional.losses import (
    contrastive_loss,
    focal_loss,
    generalized_cross_entropy,
    margin_loss,
    symmetric_cross_entropy,
)
from adaloss.typing import Task

__all__ = ["ContrastiveLoss", "FocalLoss", "GeneralizedCrossEntropy", "HANDCRAFTED_LOSSES", "MarginLoss",
           "MultiSimilarityLoss", "OPTIONAL_LOSSES", "SymmetricCrossEntropy", "create_loss"]


class FocalLoss(nn.Module):
    """Focal loss (Lin et al., "Focal Loss for Dense Object Detection", 2017, eq. 4).

    Args:
        gamma: focusing parameter (default: ``2.0``); ``0`` gives cross-entropy.
    """

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        self.gamma = float(check_positive("gamma", gamma, allow_zero=True))

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return focal_loss(prediction, target, gamma=self.gamma)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"


class GeneralizedCrossEntropy(nn.Module):
    """Generalised cross-entropy (:func:`~adaloss.functional.losses.generalized_cross_entropy`;
    Zhang & Sabuncu, NeurIPS 2018), robust to label noise.

    Args:
        q: in (0, 1]; the paper's default ``0.7``.
    """

    def __init__(self, q: float = 0.7) -> None:
        super().__init__()
        if not 0.0 < float(q) <= 1.0:
            raise ValueError(f"Expected `q` to be in (0, 1], but got {q!r}.")
        self.q = float(q)

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return generalized_cross_entropy(prediction, target, q=self.q)

    def extra_repr(self) -> str:
        return f"q={self.q}"


class SymmetricCrossEntropy(nn.Module):
    """Symmetric cross-entropy ``α CE + β RCE`` (:func:`~adaloss.functional.losses.symmetric_cross_entropy`;
    Wang et al., ICCV 2019), robust to label noise.

    Args:
        alpha: weight of cross-entropy (the paper's MNIST value ``0.1``).
        beta: weight of reverse cross-entropy (``1.0``).
        log_zero: ``A``, the value taken for ``log 0`` (``-4.0``).
    """

    def __init__(self, alpha: float = 0.1, beta: float = 1.0, log_zero: float = -4.0) -> None:
        super().__init__()
        self.alpha = float(check_positive("alpha", alpha, allow_zero=True))
        self.beta = float(check_positive("beta", beta, allow_zero=True))
        if not float(log_zero) < 0.0:
            raise ValueError(f"Expected `log_zero` to be negative, but got {log_zero!r}.")
        self.log_zero = float(log_zero)

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return symmetric_cross_entropy(prediction, target, alpha=self.alpha, beta=self.beta, log_zero=self.log_zero)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, log_zero={self.log_zero}"


class ContrastiveLoss(nn.Module):
    """Contrastive loss on embeddings (:func:`~adaloss.functional.losses.contrastive_loss`), the
    fixed-loss baseline of ALA's metric-learning task (Huang et al., ICML 2019, the metric-learning protocol as
    reconstructed here).

    Args:
        margin: the negatives' margin m (default 1.0, the start of ALA's pair-distance loss).
        normalize: L2-normalise the embeddings first.
    """

    def __init__(self, *, margin: float = 1.0, normalize: bool = True) -> None:
        super().__init__()
        self.margin = float(check_positive("margin", margin))
        self.normalize = bool(normalize)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return contrastive_loss(embeddings, labels, margin=self.margin, normalize=self.normalize)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, normalize={self.normalize}"


class MarginLoss(nn.Module):
    """Margin loss of Wu et al. 2017 with a fixed boundary β
    (:func:`~adaloss.functional.losses.margin_loss`), the metric-learning baseline of the ALA
    paper's comparisons (Huang et al., ICML 2019, Sec. 5).

    Args:
        alpha: the margin α (default 0.2).
        beta: the boundary β (default 1.2).
        normalize: L2-normalise the embeddings first.
    """

    def __init__(self, *, alpha: float = 0.2, beta: float = 1.2, normalize: bool = True) -> None:
        super().__init__()
        self.alpha = float(check_positive("alpha", alpha))
        self.beta = float(check_positive("beta", beta))
        self.normalize = bool(normalize)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return margin_loss(embeddings, labels, alpha=self.alpha, beta=self.beta, normalize=self.normalize)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, normalize={self.normalize}"


class MultiSimilarityLoss(nn.Module):
    """Multi-similarity loss with its hard-pair mining (Wang et al., "Multi-Similarity Loss with
    General Pair Weighting for Deep Metric Learning", CVPR 2019, eqs. 10-12), as
    pytorch-metric-learning computes it (``MultiSimilarityLoss`` after ``MultiSimilarityMiner``,
    cosine similarity, the mean over anchors): the metric-learning peer users already know. Needs
    ``adaloss[dml]``.

    For anchor i with similarities S_ij, mining keeps a negative when S_ij + ε > min over its
    positives, a positive when S_ij − ε < max over its negatives; the anchor's loss is
    ``log(1 + Σ_pos exp(−α(S − λ))) / α + log(1 + Σ_neg exp(β(S − λ))) / β``.

    Args:
        alpha: the positives' scale α (the paper's 2).
        beta: the negatives' scale β (the paper's 50).
        base: the similarity margin λ (the paper's 0.5; ``base`` in pytorch-metric-learning).
        epsilon: the mining margin ε (the paper's 0.1); ``None`` uses every pair.
    """

    _loss: Any
    _miner: Any

    def __init__(self, *, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5,
                 epsilon: float | None = 0.1) -> None:
        super().__init__()
        self.alpha = float(check_positive("alpha", alpha))
        self.beta = float(check_positive("beta", beta))
        if isinstance(base, bool) or not isinstance(base, (int, float)) or not -1.0 <= base <= 1.0:
            raise ValueError(f"Expected `base` to be a cosine similarity in [-1, 1], but got {base!r}.")
        self.base = float(base)
        self.epsilon = None if epsilon is None else float(check_positive("epsilon", epsilon, allow_zero=True))
        needed = "loss 'multi_similarity'"
        pml = {name: import_optional(f"pytorch_metric_learning.{name}", needed_for=needed, extra="dml")
               for name in ("losses", "miners", "reducers")}
        # kept out of the module tree: they hold no state, and the loss's own options are above
        self.__dict__["_loss"] = pml["losses"].MultiSimilarityLoss(
            alpha=self.alpha, beta=self.beta, base=self.base, reducer=pml["reducers"].MeanReducer())
        self.__dict__["_miner"] = (None if self.epsilon is None
                                   else pml["miners"].MultiSimilarityMiner(epsilon=self.epsilon))

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        pairs = None if self._miner is None else self._miner(embeddings, labels)
        loss: Tensor = self._loss(embeddings, labels, pairs)
        return loss

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, base={self.base}, epsilon={self.epsilon}"


def _cross_entropy() -> nn.Module:
    return nn.CrossEntropyLoss()


def _label_smoothing(smoothing: float = 0.1) -> nn.Module:
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"Expected `smoothing` to be in [0, 1), but got {smoothing!r}.")
    return nn.CrossEntropyLoss(label_smoothing=float(smoothing))


def _focal(gamma: float = 2.0) -> nn.Module:
    return FocalLoss(gamma=gamma)


def _gce(q: float = 0.7) -> nn.Module:
    return GeneralizedCrossEntropy(q=q)


def _sce(alpha: float = 0.1, beta: float = 1.0, log_zero: float = -4.0) -> nn.Module:
    return SymmetricCrossEntropy(alpha=alpha, beta=beta, log_zero=log_zero)


def _mse() -> nn.Module:
    return nn.MSELoss()


def _contrastive(margin: float = 1.0, normalize: bool = True) -> nn.Module:
    return ContrastiveLoss(margin=margin, normalize=normalize)


def _margin(alpha: float = 0.2, beta: float = 1.2, normalize: bool = True) -> nn.Module:
    return MarginLoss(alpha=alpha, beta=beta, normalize=normalize)


def _multi_similarity(alpha: float = 2.0, beta: float = 50.0, base: float = 0.5,
                      epsilon: float | None = 0.1) -> nn.Module:
    return MultiSimilarityLoss(alpha=alpha, beta=beta, base=base, epsilon=epsilon)


#: name → (task the loss applies to, factory taking the loss's keyword options)
HANDCRAFTED_LOSSES: dict[str, tuple[Task, Callable[..., nn.Module]]] = {
    "ce": ("classification", _cross_entropy),
    "label_smoothing": ("classification", _label_smoothing),
    "focal": ("classification", _focal),
    "gce": ("classification", _gce),
    "sce": ("classification", _sce),
    "mse": ("regression", _mse),
    "contrastive": ("embedding", _contrastive),
    "margin": ("embedding", _margin),
    "multi_similarity": ("embedding", _multi_similarity),
}
#: losses computed by a package outside the base install → the extra that installs it
OPTIONAL_LOSSES: dict[str, str] = {"multi_similarity": "dml"}


def create_loss(name: str, *, task: Task, **options: Any) -> nn.Module:
    """Build the handcrafted loss ``name`` for ``task``, checking that both fit together.

    Raises:
        ValueError: unknown name, a loss for the other task, or an option the loss does not take.
    """
    if name not in HANDCRAFTED_LOSSES:
        raise unknown_name_error("loss", name, HANDCRAFTED_LOSSES)
    loss_task, factory = HANDCRAFTED_LOSSES[name]
    if loss_task != task:
        fitting = sorted(n for n, (t, _) in HANDCRAFTED_LOSSES.items() if t == task)
        raise ValueError(
            f"Loss {name!r} is for {loss_task}, but the task is {task}; losses for {task}: {fitting}."
        )
    return call_with_options(f"loss {name!r}", factory, options)
