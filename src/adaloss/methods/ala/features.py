"""ALA's state: per-loss-parameter features the shared policy reads at each controller step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from adaloss._validation import check_int
from adaloss.losses.ala import ClassPairLoss, ClassWeightLoss, PairDistanceLoss, ParametricLoss
from adaloss.metrics import per_class_recall
from adaloss.typing import StateDict

__all__ = [
    "ClassErrorFeatures",
    "Features",
    "MetricHistoryFeatures",
    "Observation",
    "PairConfusionFeatures",
    "PairDistanceFeatures",
    "soft_confusion",
]


def soft_confusion(logits: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """Eq. 7 (reconstructed): ``C_ij`` = mean of ``−log p_j`` over validation samples of class i.

    Rows of classes absent from ``targets`` are 0.
    """
    nll = -F.log_softmax(logits.float(), dim=-1)
    sums = torch.zeros(num_classes, num_classes, device=logits.device).index_add_(0, targets, nll)
    counts = torch.bincount(targets, minlength=num_classes).clamp_min(1).to(sums)
    return sums / counts[:, None]


@dataclass
class Observation:
    """What a state-feature builder sees at a controller step.

    Attributes:
        progress: ``t / T`` (0 when the total step count is unknown).
        metrics: the smoothed validation metric ``M`` of every controller step so far, oldest first.
        phi, lower, upper: the loss parameter vector and its bounds.
        logits, targets: the model's outputs on the validation subset at this step.
        loss: the loss being adapted.
    """

    progress: float
    metrics: list[float]
    phi: Tensor
    lower: Tensor
    upper: Tensor
    logits: Tensor
    targets: Tensor
    loss: ParametricLoss


class PairConfusionFeatures:
    """The 24-d per-class-pair state of the re-implementation (reconstructed).

    For each unordered pair ``i < j`` (the order of a symmetric :class:`ClassPairLoss`'s vector):
    the last ``history`` soft-confusion values ``(C_ij, C_ji)`` (newest first, zero-padded) —
    ``2·history``; their relative change ``(C − mean) / (|mean| + ε)`` against the mean of that
    history — 2; ``Φ_ij`` — 1; ``t / T`` — 1. ``history = 10`` gives 24.

    Addition (ours): with ``log_confusion`` (default) the confusion values, which are
    unbounded NLLs, enter as ``log1p(C)``.
    """

    def __init__(self, *, history: int = 10, log_confusion: bool = True) -> None:
        self.history = check_int("history", history, minimum=1)
        self.log_confusion = bool(log_confusion)
        self._confusions: list[Tensor] = []

    @property
    def num_features(self) -> int:
        return 2 * self.history + 4

    @staticmethod
    def fits(loss: object) -> bool:
        return isinstance(loss, ClassPairLoss) and loss.symmetric and not loss.adapt_diagonal

    def __call__(self, obs: Observation) -> Tensor:
        loss = obs.loss
        if not self.fits(loss):
            raise ValueError("The pair-confusion state needs a ClassPairLoss with symmetric=True and "
                             "adapt_diagonal=False; use features='metric' for other losses.")
        assert isinstance(loss, ClassPairLoss)
        c = loss.num_classes
        conf = soft_confusion(obs.logits, obs.targets, c).cpu()
        if self.log_confusion:
            conf = torch.log1p(conf)
        self._confusions = [conf, *self._confusions][: self.history]
        rows, cols = torch.triu_indices(c, c, offset=1)
        hist = torch.stack(self._confusions)  # (h, C, C), newest first
        h = hist.shape[0]
        pair_hist = torch.zeros(rows.numel(), self.history, 2)
        pair_hist[:, :h, 0] = hist[:, rows, cols].T
        pair_hist[:, :h, 1] = hist[:, cols, rows].T
        mean = pair_hist[:, :h].mean(1)
        rel = (pair_hist[:, 0] - mean) / (mean.abs() + 1e-8)
        phi = obs.phi.detach().float().cpu()[:, None]
        progress = torch.full_like(phi, obs.progress)
        return torch.cat([pair_hist.reshape(rows.numel(), -1), rel, phi, progress], dim=1)

    def state_dict(self) -> StateDict:
        return {"confusions": [c.clone() for c in self._confusions]}

    def load_state_dict(self, state: StateDict) -> None:
        self._confusions = [c.clone() for c in state["confusions"]]


class ClassErrorFeatures:
    """A per-class state for one-parameter-per-class losses (:class:`ClassWeightLoss`; ours).

    For each class c, from the validation outputs of the controller step:

    * its error ``e_c = 1 − recall_c`` at the last ``history`` controller steps, newest first,
      zero-padded — ``history``;
    * ``e_c − mean_k e_k``: how much worse than the average class it does now — 1 (the signal a
      rebalancing policy needs: raise the weight of a class left behind);
    * the change of ``e_c`` since the previous controller step — 1;
    * its share of the validation rows times C (1 = balanced; < 1 a minority class) — 1;
    * Φ_c's position within its bounds, scaled to [−1, 1] — 1;
    * ``t / T`` — 1.

    ``history + 5`` numbers. A class absent from the validation subset gets error 0 and share 0.
    """

    def __init__(self, *, history: int = 10) -> None:
        self.history = check_int("history", history, minimum=1)
        self._errors: list[Tensor] = []

    @property
    def num_features(self) -> int:
        return self.history + 5

    @staticmethod
    def fits(loss: object) -> bool:
        return isinstance(loss, ClassWeightLoss)

    def __call__(self, obs: Observation) -> Tensor:
        c = obs.phi.numel()
        if obs.logits.dim() != 2 or obs.logits.shape[1] != c:
            raise ValueError(f"The class-error state needs one loss parameter per class: the loss has {c}, the "
                             f"model's outputs have shape {tuple(obs.logits.shape)}.")
        logits, targets = obs.logits.detach().float().cpu(), obs.targets.detach().cpu()
        counts = torch.bincount(targets, minlength=c).float()
        present = counts > 0
        error = (1 - per_class_recall(logits, targets, c)).float().nan_to_num(0.0)  # absent class: 0
        self._errors = [error, *self._errors][: self.history]
        hist = torch.zeros(c, self.history)
        for k, e in enumerate(self._errors):
            hist[:, k] = e
        mean = error[present].mean() if bool(present.any()) else torch.tensor(0.0)
        gap = torch.where(present, error - mean, torch.zeros(c))
        change = error - self._errors[1] if len(self._errors) > 1 else torch.zeros(c)
        share = counts / counts.sum().clamp_min(1) * c
        phi, lo, hi = (t.detach().float().cpu() for t in (obs.phi, obs.lower, obs.upper))
        pos = 2 * (phi - lo) / (hi - lo) - 1
        return torch.cat([hist, torch.stack([gap, change, share, pos, torch.full((c,), obs.progress)], 1)], 1)

    def state_dict(self) -> StateDict:
        return {"errors": [e.clone() for e in self._errors]}

    def load_state_dict(self, state: StateDict) -> None:
        self._errors = [e.clone() for e in state["errors"]]


class MetricHistoryFeatures:
    """A generic per-parameter state for any :class:`~adaloss.losses.ala.ParametricLoss` (ours).

    For each entry ``φ_k``: its position within its bounds scaled to [−1, 1]; ``t / T``; the
    last ``history`` smoothed validation-metric values (newest first, zero-padded).
    ``2 + history`` numbers; the policy is shared across parameters, as in the pair layout.
    """

    def __init__(self, *, history: int = 10) -> None:
        self.history = check_int("history", history, minimum=1)

    @property
    def num_features(self) -> int:
        return 2 + self.history

    def __call__(self, obs: Observation) -> Tensor:
        phi, lo, hi = (t.detach().float().cpu() for t in (obs.phi, obs.lower, obs.upper))
        pos = 2 * (phi - lo) / (hi - lo) - 1
        recent = list(reversed(obs.metrics[-self.history :]))
        hist = torch.zeros(self.history)
        hist[: len(recent)] = torch.tensor(recent, dtype=torch.float32)
        n = phi.shape[0]
        return torch.cat([pos[:, None], torch.full((n, 1), obs.progress), hist.expand(n, -1)], dim=1)

    def state_dict(self) -> StateDict:
        return {}

    def load_state_dict(self, state: StateDict) -> None:
        pass


class PairDistanceFeatures:
    """The per-bin metric-learning state (Huang et al., ICML 2019, metric learning; a reconstruction).

    At each controller step the validation embeddings give the normalised histograms of the
    positive- and negative-pair distances in the bins of the
    :class:`~adaloss.losses.ala.PairDistanceLoss` (:func:`~adaloss.losses.ala.pair_distance_histograms`),
    so each entry of Φ — a weight of one pair type in one bin — has its own share of pairs. For
    each entry, in Φ's order (positive bins, then negative bins):

    * its share at the last ``history`` controller steps, newest first, zero-padded — ``history``;
    * the change of the current share against the mean of that history — 1 (the shares are
      already on [0, 1], so a difference, not a ratio);
    * the other pair type's current share in the same bin (how much the two overlap) — 1;
    * the pair type, +1 positive / −1 negative — 1;
    * the bin's centre divided by ``max_distance`` — 1;
    * Φ's position within its bounds, scaled to [−1, 1] — 1;
    * ``t / T`` — 1.

    ``history + 6`` numbers (16 for ``history = 10``); the policy is shared across entries, so
    its size does not depend on the number of bins.
    """

    def __init__(self, *, history: int = 10) -> None:
        self.history = check_int("history", history, minimum=1)
        #: (positive, negative) histograms of the controller steps so far, newest first
        self._hists: list[tuple[Tensor, Tensor]] = []

    @property
    def num_features(self) -> int:
        return self.history + 6

    @staticmethod
    def fits(loss: object) -> bool:
        return isinstance(loss, PairDistanceLoss)

    @property
    def latest(self) -> tuple[Tensor, Tensor] | None:
        """The (positive, negative) histograms of the last controller step."""
        return self._hists[0] if self._hists else None

    def __call__(self, obs: Observation) -> Tensor:
        loss = obs.loss
        if not isinstance(loss, PairDistanceLoss):
            raise ValueError("The pair-distance state needs a PairDistanceLoss; "
                             "use features='metric' for other losses.")
        pos, neg = loss.histograms(obs.logits, obs.targets)
        self._hists = [(pos, neg), *self._hists][: self.history]
        b = loss.bins
        hist = torch.zeros(2 * b, self.history)
        for k, (p, q) in enumerate(self._hists):
            hist[:, k] = torch.cat([p, q])
        h = len(self._hists)
        change = hist[:, 0] - hist[:, :h].mean(1)
        other = torch.cat([neg, pos])
        kind = torch.cat([torch.ones(b), -torch.ones(b)])
        centre = ((torch.arange(b, dtype=torch.float32) + 0.5) / b).repeat(2)
        phi, lo, hi = (t.detach().float().cpu() for t in (obs.phi, obs.lower, obs.upper))
        pos_in_bounds = 2 * (phi - lo) / (hi - lo) - 1
        progress = torch.full((2 * b,), obs.progress)
        return torch.cat([hist, torch.stack([change, other, kind, centre, pos_in_bounds, progress], dim=1)], dim=1)

    def state_dict(self) -> StateDict:
        return {"histograms": [(p.clone(), q.clone()) for p, q in self._hists]}

    def load_state_dict(self, state: StateDict) -> None:
        self._hists = [(p.clone(), q.clone()) for p, q in state["histograms"]]


@runtime_checkable
class Features(Protocol):
    """What ALA needs of a state builder: ``num_features`` per loss parameter, a call that maps
    an :class:`Observation` to a ``(P, num_features)`` tensor, and its own state for checkpoints."""

    @property
    def num_features(self) -> int: ...

    def __call__(self, obs: Observation) -> Tensor: ...

    def state_dict(self) -> StateDict: ...

    def load_state_dict(self, state: StateDict) -> None: ...
