"""Parametric loss families whose parameter vector Φ an ALA controller moves.

One concern — ALA's loss families and the :class:`ParametricLoss` protocol they share (through
:class:`BoundedVectorLoss`); long because there are four families, each with its own math.

ALA (Huang et al., "Addressing the Loss-Metric Mismatch with Adaptive Loss Alignment", ICML 2019)
trains the base model under a loss ``l_Φ`` whose parameters are changed additively,
``Φ_{t+1} = Φ_t + ΔΦ_t``, by a policy every K base steps (its Fig. 2). The
controller needs nothing from a loss but a flat, named, bounded parameter vector: that is the
:class:`ParametricLoss` protocol. Four families are provided:

* :class:`ClassPairLoss` — classification, a C×C matrix on log-probabilities (the paper's Sec. 4).
* :class:`ClassWeightLoss` — classification, one log-weight per class on cross-entropy: C
  parameters, a family that holds the class-weighted CE known to serve imbalanced data (ours,
  beside the paper's C×C matrix).
* :class:`FrequencyWeightLoss` — classification, one parameter: the power τ of inverse class
  frequency weights (ours; the tied form of the class weights).
* :class:`PairDistanceLoss` — metric learning, bin weights over positive/negative pair distances
  (a **reconstruction**: the paper's metric-learning loss is described, not specified).
"""

from __future__ import annotations

import math
from typing import Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaloss._validation import check_choice, check_int, check_positive

__all__ = [
    "BoundedVectorLoss",
    "ClassPairLoss",
    "ClassWeightLoss",
    "FrequencyWeightLoss",
    "PairDistanceLoss",
    "ParametricLoss",
    "apply_parameter_delta",
    "centred_in_bounds",
    "class_pair_loss",
    "distance_bins",
    "pair_distance_histograms",
    "pair_distance_loss",
]


@runtime_checkable
class ParametricLoss(Protocol):
    """A loss whose adaptable parameters form one flat, named, bounded vector Φ.

    Any module with these four members can be driven by
    :class:`~adaloss.methods.ALAController`: the controller reads
    :meth:`parameter_vector`, proposes ``ΔΦ`` and writes ``Φ + ΔΦ`` back with
    :meth:`set_parameter_vector`, which clips it to :attr:`bounds`. Φ is not trained by gradient
    descent (keep it a buffer).
    """

    @property
    def parameter_names(self) -> list[str]:
        """One name per entry of Φ, in vector order."""
        ...

    @property
    def bounds(self) -> tuple[Tensor, Tensor]:
        """``(lower, upper)``, each shaped like :meth:`parameter_vector`."""
        ...

    def parameter_vector(self) -> Tensor:
        """Φ as a flat 1-D tensor (a copy; changing it does not change the loss)."""
        ...

    def set_parameter_vector(self, vector: Tensor) -> None:
        """Replace Φ by ``vector`` (clipped to :attr:`bounds`)."""
        ...


def apply_parameter_delta(loss: ParametricLoss, delta: Tensor) -> int:
    """Write ``Φ + delta`` with :meth:`ParametricLoss.set_parameter_vector`, which clips it. The
    request goes in unclipped so that a loss with a projection of its own sees all of it
    (:class:`ClassWeightLoss` centres before it clips: clipped here first, a push that every entry
    shares, which that loss cannot see, would move Φ at a bound). Returns the clamp hits: the
    entries that the write left on a bound short of the requested value."""
    phi = loss.parameter_vector()
    delta = delta.to(device=phi.device, dtype=phi.dtype)
    if delta.shape != phi.shape:
        raise ValueError(f"Expected a delta of shape {tuple(phi.shape)}, but got {tuple(delta.shape)}.")
    new = phi + delta
    loss.set_parameter_vector(new)
    written = loss.parameter_vector().to(new)
    lower, upper = (b.to(new) for b in loss.bounds)
    held = ((written == upper) & (new > upper)) | ((written == lower) & (new < lower))
    return int(held.sum())


@torch.no_grad()
def centred_in_bounds(vector: Tensor, lower: float, upper: float) -> Tensor:
    """The nearest vector (Euclidean) to ``vector`` whose mean is 0 and whose entries lie in
    ``[lower, upper]``: ``clip(vector − c, lower, upper)`` with the shift ``c`` that makes its mean
    0 (the mean is piecewise linear and non-increasing in ``c``; ``c`` is found exactly between its
    breakpoints). Adding a constant to ``vector`` does not change the result, and a centred vector
    within the bounds is returned unchanged. When 0 is outside the bounds, the mean is the bound
    nearest 0 instead."""
    v = vector.detach().to(torch.float64).flatten()
    target = min(max(0.0, lower), upper)
    breaks = torch.cat([v - upper, v - lower]).sort().values

    def excess(c: Tensor) -> Tensor:  # mean(clip(v - c)) - target, for each shift in c
        return (v.unsqueeze(0) - c.unsqueeze(1)).clamp(lower, upper).mean(dim=1) - target

    f = excess(breaks)  # non-increasing, f[0] = upper - target ≥ 0 ≥ lower - target = f[-1]
    k = int(torch.searchsorted(-f, torch.zeros(1, dtype=f.dtype), right=True)) - 1
    k = min(max(k, 0), breaks.numel() - 2)
    b0, b1, f0, f1 = breaks[k], breaks[k + 1], f[k], f[k + 1]
    c = b0 if f0 == f1 else b0 + f0 * (b1 - b0) / (f0 - f1)
    return (v - c).clamp(lower, upper).to(vector.dtype).view_as(vector)


def _check_bounds(name: str, bounds: tuple[float, float]) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise TypeError(f"Expected `{name}` to be a pair (lower, upper) of numbers, but got {bounds!r}.") from None
    if not lo < hi:
        raise ValueError(f"Expected `{name}` to satisfy lower < upper, but got {bounds!r}.")
    return lo, hi


class BoundedVectorLoss(nn.Module):
    """The :class:`ParametricLoss` members, once: Φ is the buffer named :attr:`vector_buffer`, held
    between the scalar bounds :meth:`scalar_bounds`; :meth:`set_parameter_vector` clips into them.
    A family whose Φ is laid out otherwise (a matrix's entries) overrides :attr:`bounds`,
    :meth:`parameter_vector` and :meth:`_write`."""

    #: the buffer holding Φ
    vector_buffer: str = ""

    def scalar_bounds(self) -> tuple[float, float]:
        """``(lower, upper)`` of every entry of Φ."""
        raise NotImplementedError

    def _phi(self) -> Tensor:
        return getattr(self, self.vector_buffer)

    @property
    def bounds(self) -> tuple[Tensor, Tensor]:
        lo, hi = self.scalar_bounds()
        phi = self._phi()
        return torch.full_like(phi, lo), torch.full_like(phi, hi)

    def parameter_vector(self) -> Tensor:
        return self._phi().clone()

    @torch.no_grad()
    def set_parameter_vector(self, vector: Tensor) -> None:
        current = self.parameter_vector()
        if vector.shape != current.shape:
            raise ValueError(f"Expected a parameter vector of shape {tuple(current.shape)}, but got "
                             f"{tuple(vector.shape)}.")
        lo, hi = self.bounds
        self._write(torch.maximum(torch.minimum(vector.to(current), hi), lo))

    def _write(self, vector: Tensor) -> None:
        self._phi().copy_(vector)


# ---------------------------------------------------------------------------- classification


def class_pair_loss(
    logits: Tensor,
    target: Tensor,
    phi: Tensor,
    *,
    form: Literal["sigmoid", "log_prob"] = "log_prob",
    scale: float = 1.0,
) -> Tensor:
    """The class-pair loss of :class:`ClassPairLoss`, functional (differentiable in logits and Φ).

    ``form="sigmoid"`` gives ``−σ(s)`` with ``s = Φ[y] · log p`` (= ``yᵀ Φ log p`` for one-hot
    y; Huang et al., ICML 2019, Eq. 6, as reconstructed). ``form="log_prob"`` gives
    ``−Σ_j [Φ⁺_yj log p_j + Φ⁻_yj log(1 − p_j)]`` with ``Φ⁺ = max(Φ, 0)``, ``Φ⁻ = max(−Φ, 0)``:
    cross-entropy at Φ = I, and bounded below by 0 for every Φ. A negative weight acts on
    ``log(1 − p_j)`` because on ``log p_j`` it would reward ``p_j → 0`` without limit (the loss
    would be unbounded below). Batch mean, times ``scale``.
    """
    rows = phi.index_select(0, target)
    logp = F.log_softmax(logits, dim=-1)
    if form == "sigmoid":
        per_sample = -torch.sigmoid((rows * logp).sum(-1))
    else:
        per_sample = -(rows.clamp(min=0) * logp).sum(-1)
        neg = (-rows).clamp(min=0)
        if bool(neg.ne(0).any()):
            # log(1 − p_j) = logsumexp_{k≠j} z_k − logsumexp_k z_k: finite even where p_j rounds to 1
            c = logits.shape[-1]
            eye = torch.eye(c, dtype=torch.bool, device=logits.device)
            others = logits.unsqueeze(-2).masked_fill(eye, float("-inf")).logsumexp(-1)
            log1mp = others - logits.logsumexp(-1, keepdim=True)
            per_sample = per_sample - (neg * log1mp).sum(-1)
    return scale * per_sample.mean()


class ClassPairLoss(BoundedVectorLoss):
    """ALA's classification loss: a C×C matrix Φ applied to log-probabilities (Huang et al., ICML 2019, Sec. 4;
    reconstructed).

    ``form="log_prob"`` (default): ``l_Φ(z, y) = −Σ_j [Φ⁺_yj log p_j + Φ⁻_yj log(1 − p_j)]``,
    exactly cross-entropy at Φ = I and bounded below for every Φ (see :func:`class_pair_loss`).
    ``form="sigmoid"`` (the paper's form as reconstructed from the public re-implementation,
    "Eq. 6"; the ``faithful`` preset): ``l_Φ(z, y) = −σ(yᵀ Φ log softmax(z))`` — it trains far
    worse than CE (see below and docs/decisions.md, "ALA loss form").

    Gradient scale (reconstructed): at Φ = I the sigmoid form is ``−p_y / (1 + p_y)`` and its
    gradient with respect to the logits is cross-entropy's times ``p_y / (1 + p_y)²`` —
    0.0098 at p_y = 0.01, 0.083 at 0.1, 0.22 at 0.5, never above 0.25. So it trains 4–100×
    more weakly than CE, hard examples damped most; a learning rate copied from a CE recipe
    is effectively scaled down. ``loss_scale`` (default 1, faithful) multiplies the loss; the
    ``log_prob`` form keeps CE's scale.

    Φ starts at the identity. In both forms Φ_{yj} > 0 (j ≠ y) tolerates mass on class j and
    Φ_{yj} < 0 penalises confusion with j.

    The adapted vector (what the controller moves), in order:

    * ``symmetric=True`` (default; reconstructed): one entry per unordered pair i < j
      (row-major upper triangle), written to both Φ_ij and Φ_ji — C(C−1)/2 entries;
      ``symmetric=False``: every off-diagonal entry, row-major — C(C−1) entries;
    * with ``adapt_diagonal=True`` the C diagonal entries follow (default: diagonal fixed at 1,
      the re-implementation's choice [R]).

    Args:
        num_classes: C.
        form: ``"sigmoid"`` or ``"log_prob"``.
        bounds: clip range of the off-diagonal entries; default ``(-1, 1)`` (the
            re-implementation's clamp [R]; the paper's bound, if any, is unknown).
        diagonal_bounds: clip range of the diagonal when adapted; default ``(0, 2)`` (ours).
        symmetric: one shared entry per unordered class pair.
        adapt_diagonal: let the controller move the diagonal too.
        loss_scale: constant factor on the loss (default 1).
    """

    phi: Tensor
    _rows: Tensor
    _cols: Tensor

    def __init__(
        self,
        num_classes: int,
        *,
        form: Literal["sigmoid", "log_prob"] = "log_prob",
        bounds: tuple[float, float] = (-1.0, 1.0),
        diagonal_bounds: tuple[float, float] = (0.0, 2.0),
        symmetric: bool = True,
        adapt_diagonal: bool = False,
        loss_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, minimum=2)
        self.form = check_choice("form", form, ("sigmoid", "log_prob"))
        self.offdiag_bounds = _check_bounds("bounds", bounds)
        self.diagonal_bounds = _check_bounds("diagonal_bounds", diagonal_bounds)
        if self.diagonal_bounds[0] < 0:
            raise ValueError(f"Expected `diagonal_bounds` to have a lower bound >= 0 (a negative weight on the "
                             f"target's log-probability rewards pushing it to 0), but got {diagonal_bounds!r}.")
        self.symmetric = bool(symmetric)
        self.adapt_diagonal = bool(adapt_diagonal)
        self.loss_scale = float(check_positive("loss_scale", loss_scale))
        c = num_classes
        if self.symmetric:
            rows, cols = torch.triu_indices(c, c, offset=1)
        else:
            mask = ~torch.eye(c, dtype=torch.bool)
            rows, cols = mask.nonzero(as_tuple=True)
        self.num_offdiag = int(rows.numel())
        if self.adapt_diagonal:
            diag = torch.arange(c)
            rows, cols = torch.cat([rows, diag]), torch.cat([cols, diag])
        self.register_buffer("phi", torch.eye(c))
        self.register_buffer("_rows", rows.clone(), persistent=False)
        self.register_buffer("_cols", cols.clone(), persistent=False)

    # ------------------------------------------------------------------ ParametricLoss
    @property
    def parameter_names(self) -> list[str]:
        return [f"phi[{i},{j}]" for i, j in zip(self._rows.tolist(), self._cols.tolist())]

    @property
    def bounds(self) -> tuple[Tensor, Tensor]:
        n, d = self.num_offdiag, self._rows.numel() - self.num_offdiag
        lo = torch.cat([torch.full((n,), self.offdiag_bounds[0]), torch.full((d,), self.diagonal_bounds[0])])
        hi = torch.cat([torch.full((n,), self.offdiag_bounds[1]), torch.full((d,), self.diagonal_bounds[1])])
        return lo.to(self.phi), hi.to(self.phi)

    def parameter_vector(self) -> Tensor:
        return self.phi[self._rows, self._cols].clone()

    def _write(self, vector: Tensor) -> None:
        self.phi[self._rows, self._cols] = vector
        if self.symmetric:
            self.phi[self._cols, self._rows] = vector

    # ------------------------------------------------------------------ criterion
    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return class_pair_loss(prediction, target, self.phi.to(prediction.dtype), form=self.form,
                               scale=self.loss_scale)

    def config(self) -> dict[str, object]:
        """Constructor arguments, to rebuild the loss (e.g. from a checkpoint)."""
        return {
            "num_classes": self.num_classes, "form": self.form, "bounds": list(self.offdiag_bounds),
            "diagonal_bounds": list(self.diagonal_bounds), "symmetric": self.symmetric,
            "adapt_diagonal": self.adapt_diagonal, "loss_scale": self.loss_scale,
        }

    def snapshot(self) -> dict[str, object]:
        """Φ as nested lists plus summary statistics of the off-diagonal entries (JSON-able)."""
        c = self.num_classes
        off = self.phi[~torch.eye(c, dtype=torch.bool, device=self.phi.device)]
        return {
            "phi": self.phi.detach().cpu().tolist(),
            "phi_offdiag_mean_abs": float(off.abs().mean()),
            "phi_offdiag_max_abs": float(off.abs().max()),
        }

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, form={self.form!r}, bounds={self.offdiag_bounds}, "
                f"symmetric={self.symmetric}, adapt_diagonal={self.adapt_diagonal}, loss_scale={self.loss_scale}")


class ClassWeightLoss(BoundedVectorLoss):
    """Cross-entropy with one adaptable log-weight per class: Φ = ``(log w_1, …, log w_C)``.

    ``l_Φ(z, y) = Σ_i w_{y_i} · CE(z_i, y_i) / Σ_i w_{y_i}`` — exactly
    ``F.cross_entropy(z, y, weight=exp(Φ))``: normalised by the batch's total weight, so moving
    every log-weight by the same amount changes nothing (the controller cannot change the step
    size through Φ, only the balance between classes). Φ = 0 (the start) is cross-entropy.

    Not in the ALA paper, which adapts a C×C matrix (:class:`ClassPairLoss`); this family has C
    parameters instead of C(C−1)/2 and contains the class-weighted cross-entropy that is the
    known answer on imbalanced data (weights ∝ 1 / class frequency, :meth:`inverse_frequency`),
    so a controller's result can be checked against it. :class:`ClassPairLoss` with
    ``adapt_diagonal=True`` holds the same weights in its diagonal, but unnormalised.

    Because the loss ignores the log-weights' common mode, ``center=True`` (default) removes it
    whenever Φ is written (the nearest centred vector within the bounds,
    :func:`centred_in_bounds`): uncentred, the common mode is a direction
    the reward cannot see, so a controller's moves random-walk it until every log-weight sits at
    one bound — where the bound blocks the relative moves that do change the loss (measured on the
    planted task: several uncentred runs ended with every weight at e^2 or every weight at e^−2,
    that is cross-entropy; docs/decisions.md, "Centred class weights").

    Args:
        num_classes: C.
        bounds: clip range of every log-weight; default ``(-2, 2)`` (weights e^±2, a ratio up to
            e^4 ≈ 55 between classes; ours).
        label_smoothing: passed to :func:`torch.nn.functional.cross_entropy`.
        center: keep Φ centred (mean 0) on every write.
    """

    log_weights: Tensor

    def __init__(self, num_classes: int, *, bounds: tuple[float, float] = (-2.0, 2.0),
                 label_smoothing: float = 0.0, center: bool = True) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, minimum=2)
        if not isinstance(center, bool):
            raise TypeError(f"Expected `center` to be a bool, but got {center!r} ({type(center).__name__}).")
        self.center = center
        self.log_weight_bounds = _check_bounds("bounds", bounds)
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"Expected `label_smoothing` to be in [0, 1), but got {label_smoothing!r}.")
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("log_weights", torch.zeros(self.num_classes))

    @classmethod
    def inverse_frequency(cls, counts: Tensor | list[int], *, power: float = 1.0,
                          bounds: tuple[float, float] = (-2.0, 2.0)) -> ClassWeightLoss:
        """The class-weighted cross-entropy with ``w_c ∝ (1 / n_c)^power`` from training counts
        ``n_c`` (log-weights centred on their mean, then clipped to ``bounds``): the oracle of
        the imbalanced protocol."""
        counts = torch.as_tensor(counts, dtype=torch.float64)
        if counts.dim() != 1 or counts.numel() < 2 or bool((counts <= 0).any()):
            raise ValueError(f"Expected `counts` to be a 1-D sequence of at least 2 positive class counts, but got "
                             f"{counts.tolist()!r}.")
        loss = cls(int(counts.numel()), bounds=bounds)
        log_w = -float(power) * counts.log()
        centred = (log_w - log_w.mean()).float()
        # the oracle is defined as centred on the mean, then clipped (not a write's projection,
        # which would shift the unclipped weights to keep the mean at 0); centred once more in
        # float32, as the oracle's runs always were
        BoundedVectorLoss.set_parameter_vector(loss, centred - centred.mean())
        return loss

    @property
    def parameter_names(self) -> list[str]:
        return [f"log_w[{c}]" for c in range(self.num_classes)]

    vector_buffer = "log_weights"

    def scalar_bounds(self) -> tuple[float, float]:
        return self.log_weight_bounds

    @property
    def weights(self) -> Tensor:
        """``exp(Φ)``, the class weights."""
        return self.log_weights.exp()

    @torch.no_grad()
    def set_parameter_vector(self, vector: Tensor) -> None:
        if self.center and vector.shape == self.log_weights.shape:
            vector = centred_in_bounds(vector, *self.log_weight_bounds)
        super().set_parameter_vector(vector)

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(prediction, target, weight=self.log_weights.exp().to(prediction.dtype),
                               label_smoothing=self.label_smoothing)

    def config(self) -> dict[str, object]:
        return {"num_classes": self.num_classes, "bounds": list(self.log_weight_bounds),
                "label_smoothing": self.label_smoothing, "center": self.center}

    def snapshot(self) -> dict[str, object]:
        return {"log_weights": self.log_weights.detach().cpu().tolist(),
                "weights": self.weights.detach().cpu().tolist()}

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, bounds={self.log_weight_bounds}, center={self.center}"


class FrequencyWeightLoss(BoundedVectorLoss):
    """Cross-entropy weighted by class frequency to an adaptable power: Φ = ``(τ,)``.

    ``w_c ∝ f_c^(−τ)``, ``l_Φ = F.cross_entropy(z, y, weight=w)`` (normalised by the batch's
    total weight, as :class:`ClassWeightLoss`). ``τ = 0`` is cross-entropy, ``τ = 1`` the inverse
    class frequency, ``τ = ½`` its square root: one parameter spans the class-weighted losses
    known to serve imbalanced data, so a controller makes one decision per episode instead of C
    (ours: the tied form of :class:`ClassWeightLoss`, ``Φ_c = −τ log f_c``).

    ``f_c``: ``counts`` when given (e.g. the training split's class counts); otherwise counted
    from the targets of every call in training mode (the ``class_counts`` buffer, kept in the
    state dict), each count plus one, so the loss needs nothing but the batches it trains on.

    Args:
        num_classes: C.
        counts: fixed class counts (length C, positive), or ``None`` to count the training targets.
        bounds: clip range of τ; default ``(0, 1)``: from cross-entropy to the full inverse-frequency
            weighting (ours). Wider is allowed; on the planted task τ = 1 already over-weights at a
            higher learning rate (``experiments/results/ala_planted.md``).
        label_smoothing: passed to :func:`torch.nn.functional.cross_entropy`.
    """

    tau: Tensor
    class_counts: Tensor

    def __init__(self, num_classes: int, *, counts: Tensor | list[int] | None = None,
                 bounds: tuple[float, float] = (0.0, 1.0), label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, minimum=2)
        self.tau_bounds = _check_bounds("bounds", bounds)
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"Expected `label_smoothing` to be in [0, 1), but got {label_smoothing!r}.")
        self.label_smoothing = float(label_smoothing)
        self.fixed_counts = counts is not None
        if counts is not None:
            counts = torch.as_tensor(counts, dtype=torch.float64)
            if counts.shape != (self.num_classes,) or bool((counts <= 0).any()):
                raise ValueError(f"Expected `counts` to hold {self.num_classes} positive class counts, but got "
                                 f"{counts.tolist()!r}.")
        self.register_buffer("tau", torch.zeros(1))
        self.register_buffer("class_counts", torch.zeros(self.num_classes, dtype=torch.float64)
                             if counts is None else counts.clone())

    @property
    def parameter_names(self) -> list[str]:
        return ["tau"]

    vector_buffer = "tau"

    def scalar_bounds(self) -> tuple[float, float]:
        return self.tau_bounds

    @property
    def log_weights(self) -> Tensor:
        """``−τ log f_c``, centred on their mean (the weights' scale does not matter)."""
        counts = self.class_counts if self.fixed_counts else self.class_counts + 1
        log_w = -self.tau.to(counts) * counts.log()
        return (log_w - log_w.mean()).float()

    @property
    def weights(self) -> Tensor:
        """The class weights ``f_c^(−τ)``, geometric mean 1."""
        return self.log_weights.exp()

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        if self.training and not self.fixed_counts:
            with torch.no_grad():
                self.class_counts += torch.bincount(target.detach().flatten(), minlength=self.num_classes).to(
                    self.class_counts)[: self.num_classes]
        return F.cross_entropy(prediction, target, weight=self.weights.to(prediction.device, prediction.dtype),
                               label_smoothing=self.label_smoothing)

    def config(self) -> dict[str, object]:
        return {"num_classes": self.num_classes, "bounds": list(self.tau_bounds),
                "label_smoothing": self.label_smoothing, "fixed_counts": self.fixed_counts}

    def snapshot(self) -> dict[str, object]:
        return {"tau": float(self.tau), "weights": self.weights.detach().cpu().tolist()}

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, bounds={self.tau_bounds}, fixed_counts={self.fixed_counts}"


# ---------------------------------------------------------------------------- metric learning


def distance_bins(distances: Tensor, *, bins: int, max_distance: float) -> Tensor:
    """The bin of each distance: ``floor(d / max_distance · B)`` clamped to ``[0, B−1]`` (so
    distances beyond ``max_distance`` fall in the last bin)."""
    return (distances / max_distance * bins).floor().long().clamp_(0, bins - 1)


@torch.no_grad()
def pair_distance_histograms(
    embeddings: Tensor,
    labels: Tensor,
    *,
    bins: int = 10,
    max_distance: float = 2.0,
    normalize: bool = True,
) -> tuple[Tensor, Tensor]:
    """Normalised histograms of the positive- and negative-pair distances of a set (the metric-learning
    state; reconstructed).

    Over all unordered pairs ``i < j`` of ``embeddings`` (L2-normalised first with
    ``normalize``), binned as :class:`PairDistanceLoss` bins them (:func:`distance_bins`); each
    histogram sums to 1 (all zeros when the set has no pair of that kind). Distances come from
    the float64 Gram matrix, so memory is ``O(N²)``, not ``O(N² · D)``. Returns
    ``(positive, negative)``, each ``(bins,)`` float32 on the CPU.
    """
    x = embeddings.detach().double()
    if normalize:
        x = F.normalize(x, dim=-1)
    sq = (x * x).sum(-1)
    d = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0).sqrt()
    n = x.shape[0]
    i, j = torch.triu_indices(n, n, offset=1, device=x.device)
    dist = d[i, j]
    same = labels[i] == labels[j]
    b = distance_bins(dist, bins=bins, max_distance=max_distance)
    out = []
    for mask in (same, ~same):
        counts = torch.bincount(b[mask], minlength=bins).double()
        out.append((counts / counts.sum().clamp_min(1)).float().cpu())
    return out[0], out[1]


def pair_distance_loss(
    embeddings: Tensor,
    labels: Tensor,
    weights_pos: Tensor,
    weights_neg: Tensor,
    *,
    base: Literal["contrastive", "margin"] = "contrastive",
    margin: float = 1.0,
    boundary: float = 1.2,
    max_distance: float = 2.0,
    normalize: bool = True,
) -> Tensor:
    """The bin-weighted pair loss of :class:`PairDistanceLoss`, functional.

    Pairs are the ``i < j`` pairs of the batch. A pair at distance ``d`` falls in bin
    ``b = floor(d / max_distance · B)`` (clamped to ``[0, B−1]``) and contributes
    ``w⁺_b · ℓ⁺(d)`` if same-label, ``w⁻_b · ℓ⁻(d)`` otherwise; the result is the mean over all
    pairs. ``base="contrastive"``: ``ℓ⁺ = d²``, ``ℓ⁻ = relu(margin − d)²`` (Hadsell et al. 2006);
    ``base="margin"``: ``ℓ⁺ = relu(d − (boundary − margin))``, ``ℓ⁻ = relu(boundary + margin − d)``
    (Wu et al. 2017 with a fixed boundary β).
    """
    if normalize:
        embeddings = F.normalize(embeddings, dim=-1)
    n = embeddings.shape[0]
    i, j = torch.triu_indices(n, n, offset=1, device=embeddings.device)
    diff = embeddings[i] - embeddings[j]
    d = torch.sqrt((diff * diff).sum(-1).clamp_min(1e-12))
    same = labels[i] == labels[j]
    bins = weights_pos.shape[0]
    b = distance_bins(d.detach(), bins=bins, max_distance=max_distance)
    if base == "contrastive":
        lp, ln = d * d, F.relu(margin - d) ** 2
    else:
        lp, ln = F.relu(d - (boundary - margin)), F.relu(boundary + margin - d)
    per_pair = torch.where(same, weights_pos[b] * lp, weights_neg[b] * ln)
    return per_pair.mean()


class PairDistanceLoss(BoundedVectorLoss):
    """A metric-learning pair loss re-weighted over bins of pair distance (reconstructed).

    **Reconstruction**: the paper's metric-learning parameterisation could
    not be read. Here the range ``[0, max_distance]`` of pair distances (2 for L2-normalised
    embeddings) is split into ``bins`` equal bins; Φ = ``(w⁺_1..w⁺_B, w⁻_1..w⁻_B)`` weights the
    positive-pair and negative-pair terms by the bin their distance falls in, so the
    controller reshapes how strongly each distance range is pulled together or pushed apart.
    At Φ = 1 (the start) the loss is exactly the base loss: the contrastive loss
    (``base="contrastive"``) or the margin loss with a fixed boundary (``base="margin"``) —
    see :func:`pair_distance_loss`. This differs from a hinge-segment form
    (§10.2), which reshapes the penalty's slope rather than re-weighting it.

    Args:
        bins: B, bins per pair type (default 10).
        base: the pair loss at Φ = 1.
        margin: contrastive margin m, or the margin-loss α (default 1.0 for contrastive; use
            0.2 with ``base="margin"`` for Wu et al.'s α).
        boundary: the margin loss's β (default 1.2, Wu et al.'s β₀; unused by contrastive).
        max_distance: upper end of the binned range.
        normalize: L2-normalise the embeddings first.
        bounds: clip range of every weight; default ``(0, 2)`` (ours).
    """

    weights: Tensor

    def __init__(
        self,
        *,
        bins: int = 10,
        base: Literal["contrastive", "margin"] = "contrastive",
        margin: float = 1.0,
        boundary: float = 1.2,
        max_distance: float = 2.0,
        normalize: bool = True,
        bounds: tuple[float, float] = (0.0, 2.0),
    ) -> None:
        super().__init__()
        self.bins = check_int("bins", bins, minimum=1)
        self.base = check_choice("base", base, ("contrastive", "margin"))
        self.margin = float(check_positive("margin", margin))
        self.boundary = float(check_positive("boundary", boundary))
        self.max_distance = float(check_positive("max_distance", max_distance))
        self.normalize = bool(normalize)
        self.weight_bounds = _check_bounds("bounds", bounds)
        self.register_buffer("weights", torch.ones(2 * bins))

    @property
    def parameter_names(self) -> list[str]:
        width = self.max_distance / self.bins
        edges = [f"{k * width:.3g}-{(k + 1) * width:.3g}" for k in range(self.bins)]
        return [f"pos[{e}]" for e in edges] + [f"neg[{e}]" for e in edges]

    vector_buffer = "weights"

    def scalar_bounds(self) -> tuple[float, float]:
        return self.weight_bounds

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        w = self.weights.to(embeddings.dtype)
        return pair_distance_loss(
            embeddings, labels, w[: self.bins], w[self.bins :], base=self.base, margin=self.margin,
            boundary=self.boundary, max_distance=self.max_distance, normalize=self.normalize,
        )

    def reference_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The base loss at Φ = 1 (contrastive or margin), whatever Φ is now — the reference of
        ALA's gradient-norm ratio."""
        ones = torch.ones(self.bins, dtype=embeddings.dtype, device=embeddings.device)
        return pair_distance_loss(embeddings, labels, ones, ones, base=self.base, margin=self.margin,
                                  boundary=self.boundary, max_distance=self.max_distance, normalize=self.normalize)

    def histograms(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """:func:`pair_distance_histograms` with this loss's bins: one share per entry of Φ."""
        return pair_distance_histograms(embeddings, labels, bins=self.bins, max_distance=self.max_distance,
                                        normalize=self.normalize)

    def config(self) -> dict[str, object]:
        return {"bins": self.bins, "base": self.base, "margin": self.margin, "boundary": self.boundary,
                "max_distance": self.max_distance, "normalize": self.normalize, "bounds": list(self.weight_bounds)}

    def snapshot(self) -> dict[str, object]:
        w = self.weights.detach().cpu()
        return {"weights_pos": w[: self.bins].tolist(), "weights_neg": w[self.bins :].tolist(),
                "max_distance": self.max_distance}

    def extra_repr(self) -> str:
        return f"bins={self.bins}, base={self.base!r}, margin={self.margin}, bounds={self.weight_bounds}"


def sigmoid_gradient_ratio(p: float) -> float:
    """Gradient of the sigmoid form at Φ = I relative to cross-entropy's: ``p / (1 + p)²``."""
    return p / (1.0 + p) ** 2 if 0 < p <= 1 else math.nan
