"""Classification metrics."""

from __future__ import annotations

import torch
from torch import Tensor

from adaloss.metrics.base import Metric, _WholeSetMetric, register_metric

__all__ = ["AUCPR", "BalancedAUCPR", "BalancedError", "ErrorRate", "average_precision", "balanced_error", "error_rate",
           "per_class_recall"]


def error_rate(prediction: Tensor, target: Tensor) -> Tensor:
    """Fraction of rows whose arg-max class differs from ``target``.

    Args:
        prediction: ``(N, C)`` scores or probabilities.
        target: ``(N,)`` class indices.
    """
    return (prediction.argmax(dim=-1) != target).float().mean()


def per_class_recall(prediction: Tensor, target: Tensor, num_classes: int | None = None) -> Tensor:
    """Recall of each class (``(C,)``, float64): the fraction of its rows predicted as it; NaN for
    a class absent from ``target``.

    Args:
        prediction: ``(N, C)`` scores.
        target: ``(N,)`` class indices.
        num_classes: C (default: ``prediction``'s width).
    """
    c = prediction.shape[-1] if num_classes is None else num_classes
    hit = (prediction.argmax(dim=-1) == target).double()
    totals = torch.bincount(target, minlength=c).double()
    hits = torch.zeros(c, dtype=torch.float64, device=target.device).index_add_(0, target, hit)
    return torch.where(totals > 0, hits / totals.clamp_min(1), torch.full_like(hits, float("nan")))


def balanced_error(prediction: Tensor, target: Tensor) -> Tensor:
    """``1 − mean`` per-class recall over the classes present in ``target`` (scikit-learn's
    ``1 − balanced_accuracy_score``): every class counts the same, however rare."""
    recall = per_class_recall(prediction, target)
    return 1.0 - recall[~recall.isnan()].mean()


class _CountingMetric(Metric):
    """Per-class counts of rows and of misclassified rows, accumulated over batches."""

    def reset(self) -> None:
        self._wrong: Tensor | None = None
        self._count: Tensor | None = None

    def update(self, prediction: Tensor, target: Tensor) -> None:
        c = prediction.shape[-1]
        wrong = (prediction.argmax(dim=-1) != target).double()
        w = torch.zeros(c, dtype=torch.float64).index_add_(0, target.cpu(), wrong.cpu())
        n = torch.bincount(target.cpu(), minlength=c).double()
        if self._wrong is None or self._count is None:
            self._wrong, self._count = w, n
        else:
            if self._wrong.shape != w.shape:
                raise ValueError(f"Expected `prediction` with {self._wrong.numel()} columns like the earlier batches, "
                                 f"but got {c}.")
            self._wrong += w
            self._count += n

    def _counts(self) -> tuple[Tensor, Tensor]:
        if self._wrong is None or self._count is None:
            raise RuntimeError(f"{type(self).__name__}.compute() called before any update().")
        return self._wrong, self._count


@register_metric
class ErrorRate(_CountingMetric):
    """Top-1 error rate, in [0, 1]; lower is better.

    :meth:`compute_per_class` splits it into one share per class (their mean is the error rate).
    """

    name = "error"
    higher_is_better = False
    task = "classification"

    def compute(self) -> float:
        wrong, count = self._counts()
        return float(wrong.sum() / count.sum())

    def compute_per_class(self) -> Tensor:
        """``C · wrong_c / N``: class c's share of the error, scaled so that the mean over
        classes is the error rate."""
        wrong, count = self._counts()
        return wrong.numel() * wrong / count.sum()


@register_metric
class BalancedError(_CountingMetric):
    """Balanced error rate: ``1 − mean`` per-class recall over the classes seen (see
    :func:`balanced_error`), in [0, 1]; lower is better. On imbalanced data it is the metric that
    plain cross-entropy serves badly (a rare class's errors weigh as much as a common one's).

    :meth:`compute_per_class` gives each class's error (NaN for a class not seen).
    """

    name = "balanced_error"
    higher_is_better = False
    task = "classification"

    def compute(self) -> float:
        per_class = self.compute_per_class()
        return float(per_class[~per_class.isnan()].mean())

    def compute_per_class(self) -> Tensor:
        wrong, count = self._counts()
        return torch.where(count > 0, wrong / count.clamp_min(1), torch.full_like(wrong, float("nan")))


def _check_scores_and_labels(prediction: Tensor, target: Tensor) -> None:
    if prediction.dim() not in (1, 2):
        raise ValueError(
            f"Expected `prediction` to be (N,) or (N, C) scores, but got shape {tuple(prediction.shape)}."
        )
    if prediction.is_complex() or prediction.dtype == torch.bool:
        raise TypeError(f"Expected `prediction` to be real-valued, but got dtype {prediction.dtype}.")
    if target.dim() != 1 or target.shape[0] != prediction.shape[0]:
        raise ValueError(
            f"Expected `target` to be (N,) labels with N = {prediction.shape[0]} (the rows of `prediction`), "
            f"but got shape {tuple(target.shape)}."
        )
    if target.is_floating_point() or target.is_complex():
        raise TypeError(f"Expected `target` to hold integer class indices, but got dtype {target.dtype}.")


def _positive_class_scores(prediction: Tensor, from_logits: bool) -> Tensor:
    """``(N, C)`` per-class ranking scores in float64 (``(N, 1)`` for the binary layouts).

    With ``from_logits``, rows are log-softmaxed: that ranks every column exactly as the softmax
    probabilities do (per-class AP compares one class's score *across* samples, which raw logits do
    not preserve), without the ties that underflowing probabilities would create.
    """
    scores = prediction.double()
    if scores.dim() == 1:
        return scores.unsqueeze(1)
    if scores.shape[1] == 1:
        return scores  # one score/logit of the positive class; sigmoid would not change the ranking
    if scores.shape[1] == 2:
        # binary with two columns: the positive class is 1; softmax p1 = sigmoid(z1 - z0)
        return (scores[:, 1:] - scores[:, :1]) if from_logits else scores[:, 1:]
    return torch.log_softmax(scores, dim=1) if from_logits else scores


def _binary_average_precision(scores: Tensor, positives: Tensor, weights: Tensor | None = None) -> Tensor:
    """Per-column AP of ``(N, C)`` float64 ``scores`` against ``(N, C)`` bool ``positives``.

    sklearn's step-wise definition ``AP = sum_n (R_n - R_{n-1}) P_n`` with one threshold per
    distinct score: tied samples enter the ranking together, at the precision of their whole group.
    Columns without positives score 0, as in sklearn (which warns). ``weights`` (``(N,)``) weigh
    the rows in every count, as sklearn's ``sample_weight``.
    """
    n = scores.shape[0]
    sorted_scores, order = scores.sort(dim=0, descending=True, stable=True)
    pos = positives.gather(0, order).double()
    if weights is None:
        w = torch.ones_like(pos)
    else:
        w = weights.double().unsqueeze(1).expand_as(scores).gather(0, order)
    tps = (pos * w).cumsum(dim=0)
    seen = w.cumsum(dim=0)
    # last row of each run of equal scores; every row takes the precision at its run's end
    is_end = torch.ones_like(positives)
    is_end[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    row = torch.arange(n, device=scores.device).unsqueeze(1).expand_as(is_end)
    end = torch.where(is_end, row, n).flip(0).cummin(dim=0).values.flip(0)
    precision_at_end = (tps / seen).gather(0, end)  # seen > 0: weights are positive
    n_pos = tps[-1]
    ap = (precision_at_end * pos * w).sum(dim=0) / n_pos.clamp_min(torch.finfo(torch.float64).tiny)
    return torch.where(n_pos > 0, ap, torch.zeros_like(ap))


def average_precision(
    prediction: Tensor, target: Tensor, *, from_logits: bool = True, class_balanced: bool = False
) -> Tensor:
    """Average precision (area under the precision-recall curve), the ALA paper's AUCPR.

    Follows scikit-learn's ``average_precision_score``: ``AP = sum_n (R_n - R_{n-1}) P_n`` over
    the thresholds at the distinct scores (step-wise, no interpolation; tied scores form one
    step). Binary for ``(N,)``, ``(N, 1)`` (score of the positive class) or ``(N, 2)`` predictions,
    with ``target`` in {0, 1} and class 1 positive; for ``(N, C)`` with C > 2, the macro average of
    the one-vs-rest APs over all C columns, which equals ``average_precision_score(one_hot(target,
    C), scores, average="macro")`` -- a class absent from ``target`` counts with AP 0, as in
    sklearn (which warns "No positive class found").

    Args:
        prediction: ``(N,)``, ``(N, 1)``, ``(N, 2)`` or ``(N, C)`` scores.
        target: ``(N,)`` class indices.
        from_logits: ``prediction`` holds logits (model outputs), so each class is ranked by its
            softmax probability; ``False`` ranks the columns as given (probabilities or any
            per-class scores, as sklearn does). Irrelevant for ``(N,)`` and ``(N, 1)``.
        class_balanced: weigh every row by ``1 / n_y`` (``n_y`` the rows of its class in
            ``target``), i.e. sklearn's ``sample_weight``: each class then has the same total
            weight, and the AP is the one the classes would have at equal prevalence. A rare
            class's precision depends on its prevalence, so on an imbalanced split plain AP and
            the AP of a balanced split can disagree; this removes that.

    Returns:
        A 0-d float64 tensor in [0, 1].
    """
    _check_scores_and_labels(prediction, target)
    if not bool(torch.isfinite(prediction).all()):
        raise ValueError("Expected `prediction` to be finite, but it contains NaN or infinite values.")
    if target.numel() == 0:
        raise ValueError("Expected `target` to hold at least one sample, but it is empty.")
    scores = _positive_class_scores(prediction, from_logits)
    if scores.shape[1] == 1:
        if bool(((target != 0) & (target != 1)).any()):
            raise ValueError(
                "Expected `target` to be in {0, 1} for a binary `prediction` of shape "
                f"{tuple(prediction.shape)}, but got labels {sorted(torch.unique(target).tolist())}."
            )
        positives = (target == 1).unsqueeze(1)
    else:
        n_classes = scores.shape[1]
        if bool(((target < 0) | (target >= n_classes)).any()):
            raise ValueError(
                f"Expected `target` to be class indices in [0, {n_classes}) for {n_classes} columns of "
                f"`prediction`, but got values from {int(target.min())} to {int(target.max())}."
            )
        positives = target.unsqueeze(1) == torch.arange(n_classes, device=target.device)
    weights = None
    if class_balanced:
        counts = torch.bincount(target)
        weights = 1.0 / counts[target].double()
    return _binary_average_precision(scores, positives, weights).mean()


@register_metric
class AUCPR(_WholeSetMetric):
    """Area under the precision-recall curve as average precision (:func:`average_precision`),
    macro over classes for more than two; in [0, 1], higher is better. ALA reports it on CIFAR-10.

    Args:
        from_logits: the model outputs are logits (the default, as the trainer passes them).
    """

    name = "aucpr"
    higher_is_better = True
    task = "classification"

    def __init__(self, *, from_logits: bool = True) -> None:
        self.from_logits = from_logits
        super().__init__()

    def _check_batch(self, prediction: Tensor, target: Tensor) -> None:
        _check_scores_and_labels(prediction, target)

    def _compute(self, prediction: Tensor, target: Tensor) -> float:
        return float(average_precision(prediction, target, from_logits=self.from_logits))

    def compute_per_class(self) -> Tensor:
        """The one-vs-rest AP of each class (``(C,)``; their mean is the macro AUCPR); needs C > 2.
        (Unweighted; :class:`BalancedAUCPR` reports the class-balanced mean only.)"""
        if not self._predictions:
            raise RuntimeError("AUCPR.compute_per_class() called before any update().")
        prediction, target = torch.cat(self._predictions), torch.cat(self._targets)
        if prediction.dim() != 2 or prediction.shape[1] <= 2:
            raise ValueError(f"AUCPR.compute_per_class() needs (N, C) scores with C > 2, but got shape "
                             f"{tuple(prediction.shape)}.")
        scores = _positive_class_scores(prediction, self.from_logits)
        positives = target.unsqueeze(1) == torch.arange(scores.shape[1], device=target.device)
        return _binary_average_precision(scores, positives)


@register_metric
class BalancedAUCPR(AUCPR):
    """Macro AUCPR with every row weighed by ``1 / n_y`` (:func:`average_precision` with
    ``class_balanced=True``): the AUCPR the classes would have at equal prevalence, so an
    imbalanced validation split scores a model as a balanced test split would. Equals
    :class:`AUCPR` on a split whose classes are equally frequent.
    """

    name = "balanced_aucpr"

    def _compute(self, prediction: Tensor, target: Tensor) -> float:
        return float(average_precision(prediction, target, from_logits=self.from_logits, class_balanced=True))

