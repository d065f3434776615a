"""Divergence caught at the source: the step's losses watched on their device, no host sync per step.

A run has diverged when a watched scalar of a learner's step — the training loss, and a
meta-learner's task loss on the meta batch (``meta_loss``; a learned loss can stay small while the
model it trains explodes) — is non-finite or its magnitude passes the limit ``factor`` × scale, or
``bound``. The scale of ``loss`` is max(|its first value|, 1); that of ``meta_loss`` max(the
untrained model's task loss, 1) (:func:`initial_task_loss`), as its first value already follows
one update. How far healthy runs stay below the default factor: ``experiments/results/divergence_margin.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from adaloss.data.types import TensorSplit
from adaloss.typing import Device, Task

__all__ = ["WATCHED", "DivergenceMonitor", "initial_task_loss", "non_finite_parameters"]

#: the step outputs watched
WATCHED = ("loss", "meta_loss")


class _Watch:
    """One scalar, checked on its device with no host synchronisation: ``ok`` is the AND over the
    values seen of "finite and |value| <= limit" (a few 0-d ops a step); the first bad value is
    kept, and ``good`` counts the values before it, whose steps ``steps`` lists (cleared by
    :meth:`passed`)."""

    def __init__(self, name: str, *, scale: float | None, factor: float | None, bound: float | None) -> None:
        self.name, self.factor, self.bound = name, factor, bound
        self.scale: Tensor | None = None if scale is None else torch.tensor(float(scale))
        self.limit: Tensor | None = None
        self.ok: Tensor | None = None
        self.bad_value: Tensor | None = None
        self.good: Tensor | None = None
        self.steps: list[int] = []

    def update(self, value: Any, step: int) -> None:
        v = value.detach() if isinstance(value, Tensor) else torch.tensor(float(value))
        v = (v if v.dim() == 0 else v.sum()).float()
        if self.ok is None:
            if self.scale is None:  # a non-finite first value is flagged anyway: scale 1
                self.scale = torch.nan_to_num(v.abs(), nan=1.0, posinf=1.0).clamp_min(1.0)
            self.scale = self.scale.to(v.device)
            if self.factor is not None or self.bound is not None:
                limit = self.scale * self.factor if self.factor is not None else torch.tensor(math.inf, device=v.device)
                self.limit = limit.clamp_max(self.bound) if self.bound is not None else limit
            self.ok = torch.ones((), dtype=torch.bool, device=v.device)
            self.bad_value = torch.zeros((), device=v.device)
            self.good = torch.zeros((), dtype=torch.int64, device=v.device)
        assert self.bad_value is not None and self.good is not None
        # a finite limit is also a finiteness test: NaN and ±inf compare false
        ok = torch.isfinite(v) if self.limit is None else v.abs() <= self.limit
        self.bad_value = torch.where(self.ok, v, self.bad_value)  # frozen once the flag is down
        self.ok.logical_and_(ok)
        self.good.add_(self.ok)
        self.steps.append(step)

    def passed(self) -> None:
        """Every value so far was good (the caller read ``ok``): forget their steps."""
        assert self.good is not None
        self.good.zero_()
        self.steps.clear()

    def describe(self, step: int) -> str:
        what = "Training loss" if self.name == "loss" else f"The task loss on the meta batch ({self.name})"
        bad, first = float(self.bad_value), self.steps[int(self.good)]  # type: ignore[arg-type]
        if not math.isfinite(bad):
            return f"{what} became {bad} by step {step} (first non-finite at step {first})"
        terms = []
        if self.factor is not None and self.scale is not None:
            terms.append(f"divergence_factor={self.factor:g} × {float(self.scale):.4g}")
        if self.bound is not None:
            terms.append(f"divergence_bound={self.bound:g}")
        return (f"{what} diverged: {bad:.4g} at step {first}, past the divergence limit {float(self.limit):.4g} "  # type: ignore[arg-type]
                f"({', at most '.join(terms)})")


class DivergenceMonitor:
    """Watches the :data:`WATCHED` scalars of every step (:meth:`observe`, no host synchronisation)
    and reports the first bad one (:meth:`check`, one synchronisation).

    Args:
        factor: the limit's multiple of each scalar's scale (``None``: none).
        bound: an absolute limit on the magnitude (``None``: none).
    """

    def __init__(self, *, factor: float | None = 1e3, bound: float | None = None) -> None:
        for name, value in (("divergence_factor", factor), ("divergence_bound", bound)):
            if value is not None and not value > 0:
                raise ValueError(f"Expected `{name}` to be a positive number or None (no limit), but got {value!r}.")
        self.factor, self.bound = factor, bound
        self.scales: dict[str, float] = {}
        self._watches: dict[str, _Watch] = {}

    def observe(self, out: Mapping[str, Any], step: int) -> None:
        """Fold one step's outputs into the flags."""
        for key in WATCHED:
            value = out.get(key)
            if value is None:
                continue
            watch = self._watches.get(key)
            if watch is None:
                watch = self._watches[key] = _Watch(key, scale=self.scales.get(key), factor=self.factor,
                                                    bound=self.bound)
            watch.update(value, step)

    def check(self, step: int) -> str | None:
        """``None`` while every watched scalar so far was good; else what went wrong, and where."""
        watches = [w for w in self._watches.values() if w.ok is not None]
        if not watches or bool(torch.stack([w.ok.to(watches[0].ok.device) for w in watches]).all()):  # type: ignore[union-attr]
            for w in watches:
                w.passed()
            return None
        return next(w for w in watches if not bool(w.ok)).describe(step)

    def state_dict(self) -> dict[str, float]:
        """The scales (kept in checkpoints, so a resumed run keeps its limits)."""
        scales = dict(self.scales)
        for key, watch in self._watches.items():
            if watch.scale is not None:
                scales[key] = float(watch.scale)
        return scales

    def load_state_dict(self, scales: Mapping[str, float | None] | None) -> None:
        """Restore the scales; the flags start afresh (the checkpoint holds no bad step)."""
        self.scales = {k: float(v) for k, v in (scales or {}).items() if v is not None}
        self._watches = {}


def initial_task_loss(model: nn.Module, split: TensorSplit | None, task: Task, *, device: Device = "cpu",
                      rows: int = 1000) -> float | None:
    """The task's plain loss (cross-entropy, MSE) of ``model`` on up to ``rows`` rows of ``split`` in
    eval mode (no RNG, no BatchNorm update), at least 1 — the scale of ``meta_loss``; ``None`` for
    the embedding task, no split, or a model the plain loss does not fit."""
    if split is None or len(split) == 0 or task == "embedding":
        return None
    from adaloss.learners.registry import default_method
    from adaloss.losses import create_loss

    loss_fn = create_loss(default_method(task), task=task)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            value = float(loss_fn(model(split.x[:rows].to(device)), split.y[:rows].to(device)))
    except (RuntimeError, ValueError, TypeError):  # an unusual model or target: the first value is the scale
        return None
    finally:
        model.train(was_training)
    return max(abs(value), 1.0) if math.isfinite(value) else None


def non_finite_parameters(model: nn.Module) -> list[str]:
    """The floating-point parameters and buffers of ``model`` holding a non-finite value (one
    host synchronisation when all are finite)."""
    tensors = {k: t for k, t in model.state_dict().items() if t.is_floating_point()}
    if not tensors or bool(torch.stack([torch.isfinite(t).all() for t in tensors.values()]).all()):
        return []
    return [k for k, t in tensors.items() if not bool(torch.isfinite(t).all())]
