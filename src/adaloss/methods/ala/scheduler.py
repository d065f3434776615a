"""ALA as a loss scheduler: the user trains with ``ala.loss`` and calls ``ala.step`` after each step."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Union

import torch
from torch import Tensor, nn

from adaloss._rng import seeded_global_rng
from adaloss._validation import check_choice, check_fraction, check_int
from adaloss.distributed import Collective
from adaloss.losses.ala import (
    ClassPairLoss,
    ClassWeightLoss,
    FrequencyWeightLoss,
    PairDistanceLoss,
    ParametricLoss,
    apply_parameter_delta,
)
from adaloss.methods.ala.features import (
    ClassErrorFeatures,
    Features,
    MetricHistoryFeatures,
    Observation,
    PairConfusionFeatures,
    PairDistanceFeatures,
)
from adaloss.methods.ala.policy import ALAController, ALAPolicy, load_policy
from adaloss.methods.ala.presets import ALA_PRESETS, FAMILY_DEFAULTS, check_preset
from adaloss.metrics import Metric, create_metric, evaluate_batches
from adaloss.typing import BatchForward, BatchTarget, StateDict

__all__ = ["ALA", "DEFAULT_METRIC_OF", "FEATURES", "PHI_TRACE_MAX", "ValidData", "choose_features", "phi_statistics",
           "resolve_metric", "resolve_options", "smoothed_metric"]

#: Φ vectors up to this length are traced entry by entry in snapshots (longer: statistics only)
PHI_TRACE_MAX = 16

#: What ALA evaluates its metric on: an iterable of batches (a DataLoader, a list), one batch
#: ``(x, y)``, or a callable returning either (called only when an evaluation is due).
ValidData = Union[Iterable[Any], tuple[Tensor, Tensor], Callable[[], Iterable[Any]]]
LossOrFactory = Union[ParametricLoss, Callable[[int], ParametricLoss]]

#: the controller's state by name: its features and, for a state made for one loss family, what
#: that family must be (the features' ``fits``); ``metric`` fits every loss
FEATURES: dict[str, tuple[Any, str | None]] = {
    "pair_confusion": (PairConfusionFeatures, "a ClassPairLoss with symmetric=True and adapt_diagonal=False"),
    "pair_distance": (PairDistanceFeatures, "a PairDistanceLoss"),
    "class_error": (ClassErrorFeatures, "a ClassWeightLoss"),
    "metric": (MetricHistoryFeatures, None),
}
#: the metric a loss family targets when none is given
DEFAULT_METRIC_OF: dict[type, str] = {
    PairDistanceLoss: "recall@1", ClassPairLoss: "error", ClassWeightLoss: "error", FrequencyWeightLoss: "error",
}


def resolve_options(preset: str, loss: object, given: dict[str, Any]) -> dict[str, Any]:
    """The controller's options: those ``given`` (not ``None``), else the preset's
    (:data:`ALA_PRESETS`), which the ``default`` preset completes with the measured settings of the
    loss's family (:data:`FAMILY_DEFAULTS`)."""
    preset = check_preset(preset)
    base = {**ALA_PRESETS[preset], **(FAMILY_DEFAULTS.get(type(loss).__name__, {}) if preset == "default" else {})}
    return {k: (base[k] if v is None else v) for k, v in given.items()}


def choose_features(state: str, loss: object, *, history: int, from_preset: bool) -> tuple[str, Features]:
    """The state ``state`` (:data:`FEATURES`, or ``"auto"``: the first that fits ``loss``) for
    ``loss``. A preset's ``pair_confusion`` (``from_preset``) names the paper's state for the paper's
    loss; other losses then get theirs."""
    kind = check_choice("features", state, ("auto", *FEATURES))
    if kind == "auto" or (from_preset and kind == "pair_confusion" and not isinstance(loss, ClassPairLoss)):
        kind = next(k for k, (cls, needs) in FEATURES.items() if needs is None or cls.fits(loss))
    cls, needs = FEATURES[kind]
    if needs is not None and not cls.fits(loss):
        raise ValueError(f"`features={kind!r}` needs {needs}, but the loss is {loss!r}; use features='metric'.")
    return kind, cls(history=history)


def resolve_metric(metric: str | Metric | None, loss: object, task: str | None) -> Metric:
    """The metric ALA optimises: given (an adaloss :class:`~adaloss.metrics.Metric` or a name), or the
    loss family's (:data:`DEFAULT_METRIC_OF`)."""
    if metric is None:
        metric = DEFAULT_METRIC_OF.get(type(loss))
        if metric is None:
            raise ValueError(f"Expected `metric` (a Metric or a metric name) for the loss {type(loss).__name__}, "
                             "but got None.")
    if isinstance(metric, str):
        metric = create_metric(metric, task=task)  # type: ignore[arg-type]
    if not all(hasattr(metric, a) for a in ("update", "compute", "reset", "higher_is_better", "name")):
        raise TypeError(f"Expected `metric` to be an adaloss Metric (update/compute/reset, name, "
                        f"higher_is_better) or a metric name, but got {type(metric).__name__}.")
    return metric


def smoothed_metric(values: Sequence[float], gamma: float) -> float:
    """Eq. 4 (reconstructed), normalised: ``Σ_j γ^{n−j} m_j / Σ_j γ^{n−j}`` over ``values = m_1..m_n``.

    The paper's sum is over all K steps of the window and unnormalised; normalising leaves the
    sign reward unchanged and keeps ``M`` on the metric's scale (reconstructed).
    """
    n = len(values)
    if n == 0:
        raise ValueError("smoothed_metric() needs at least one value.")
    weights = [gamma ** (n - 1 - k) for k in range(n)]
    return sum(w * v for w, v in zip(weights, values)) / sum(weights)


def phi_statistics(loss: ParametricLoss) -> dict[str, float]:
    """Summary statistics of Φ for logs and plots.

    A :class:`~adaloss.losses.ala.ClassPairLoss` gives the diagonal mean and the off-diagonal
    mean, mean absolute value, minimum and maximum of the C×C matrix; any other loss the mean,
    mean absolute value, minimum and maximum of its parameter vector, and a
    :class:`~adaloss.losses.ala.PairDistanceLoss` also the means of its positive and negative
    bin weights.
    """
    if isinstance(loss, ClassPairLoss):
        phi = loss.phi.detach().float().cpu()
        off = phi[~torch.eye(loss.num_classes, dtype=torch.bool)]
        return {"diag_mean": float(phi.diagonal().mean()), "offdiag_mean": float(off.mean()),
                "offdiag_mean_abs": float(off.abs().mean()), "offdiag_min": float(off.min()),
                "offdiag_max": float(off.max())}
    v = loss.parameter_vector().detach().float().cpu()
    stats = {"mean": float(v.mean()), "mean_abs": float(v.abs().mean()), "min": float(v.min()), "max": float(v.max())}
    if isinstance(loss, PairDistanceLoss):
        stats["pos_mean"] = float(v[: loss.bins].mean())
        stats["neg_mean"] = float(v[loss.bins :].mean())
    return stats


def _batches(valid_data: ValidData) -> Iterable[Any]:
    data = valid_data() if callable(valid_data) else valid_data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        return [data]  # one (x, y) batch
    return data  # type: ignore[return-value]


class ALA:
    """Adaptive Loss Alignment (Huang et al., ICML 2019) as a *loss scheduler*.

    The user trains with ``ala.loss`` (a :class:`~adaloss.losses.ala.ParametricLoss` ``l_Φ``) and
    steps their own optimiser; :meth:`step`, called after each optimiser step, counts base steps
    and every ``every`` (K) steps closes the controller's episode with the change of the smoothed
    validation metric (Eq. 4; reward Eq. 5), updates the policy by REINFORCE and moves Φ by one
    sampled action ``{−β, 0, +β}`` per loss parameter. The metric is evaluated after each of the
    last ``smoothing_window`` steps of every window. :meth:`start` (before the first step)
    evaluates the initial model and takes the first action.

    Example::

        ala = adaloss.ALA(ClassPairLoss(10), metric="error", every=200, total_steps=10_000)
        ala.start(model, valid_loader)
        for x, y in train_loader:
            optimizer.zero_grad()
            ala.loss(model(x), y).backward()
            optimizer.step()
            ala.step(model, valid_loader)

    Every option left ``None`` takes the value of ``preset`` (:data:`ALA_PRESETS`); with the ``default``
    preset, a loss family's measured settings come first (:data:`FAMILY_DEFAULTS`).

    Args:
        loss: the parametric loss, or a factory ``num_classes -> loss`` called at :meth:`start`
            with the width of the model's output.
        metric: the validation metric rewarded: a :class:`~adaloss.metrics.Metric` or a registered
            name (default: ``error`` for a class-pair loss, ``recall@1`` for a pair-distance loss).
        every: base steps K per controller step.
        total_steps: T of the state's ``t / T`` feature (``None``: 0 in the features).
        features: the state builder — ``"auto"`` (the one fitting the loss), ``"pair_confusion"``,
            ``"pair_distance"``, ``"class_error"``, ``"metric"``, or an object with ``num_features``, ``__call__(obs)``,
            ``state_dict`` and ``load_state_dict`` (:class:`~adaloss.methods.ala.Features`).
        policy: an :class:`ALAPolicy` to start from (e.g. one trained on another task), a path
            :func:`load_policy` reads, or ``None`` for a fresh one (seeded by ``seed``).
        preset: ``"default"`` or ``"faithful"``.
        beta: action step size β (:class:`ALAController`).
        gamma: discount γ of Eq. 4.
        smoothing_window: evaluate the metric after each of the last L steps of a window (0 = K).
        history: controller steps of history in the state.
        hidden: the policy's hidden widths.
        policy_lr: Adam learning rate of the policy.
        baseline_decay: ρ of the reward baseline.
        entropy_coef: c_H (0 = none).
        replay_capacity: replay memory size (0 = on-policy only).
        replay_batch: replayed episodes per update.
        clip_ratio: the clipped importance ratio of replayed episodes.
        reward: ``"sign"``, ``"difference"`` or ``"normalized"`` (:class:`ALAController`).
        train_policy: ``False`` freezes the policy (transfer).
        greedy: take the most probable action instead of sampling.
        seed: seed of the policy's initialisation and sampling (``None``: drawn from torch's
            global generator now, so it follows the caller's seed).
        forward: how to get outputs from a validation batch (as in :class:`adaloss.AdaLFL`).
        target: how to get targets from a validation batch.
        task: checks that a metric given by name fits the task.
    """

    def __init__(
        self,
        loss: LossOrFactory,
        *,
        metric: str | Metric | None = None,
        every: int | None = None,
        total_steps: int | None = None,
        features: Literal["auto", "pair_confusion", "pair_distance", "class_error", "metric"] | Features | None = None,
        policy: ALAPolicy | str | os.PathLike[str] | None = None,
        preset: Literal["default", "faithful"] = "default",
        beta: float | None = None,
        gamma: float | None = None,
        smoothing_window: int | None = None,
        history: int | None = None,
        hidden: Sequence[int] | None = None,
        policy_lr: float | None = None,
        baseline_decay: float | None = None,
        entropy_coef: float | None = None,
        replay_capacity: int | None = None,
        replay_batch: int | None = None,
        clip_ratio: float | None = None,
        reward: Literal["sign", "difference", "normalized"] | None = None,
        train_policy: bool = True,
        greedy: bool = False,
        seed: int | None = None,
        forward: BatchForward | None = None,
        target: BatchTarget | None = None,
        task: str | None = None,
    ) -> None:
        self.preset = check_preset(preset)
        given: dict[str, Any] = {
            "every": every, "beta": beta, "gamma": gamma, "smoothing_window": smoothing_window,
            "features": features if isinstance(features, str) else None, "history": history, "hidden": hidden,
            "policy_lr": policy_lr, "baseline_decay": baseline_decay, "entropy_coef": entropy_coef,
            "replay_capacity": replay_capacity, "replay_batch": replay_batch, "clip_ratio": clip_ratio,
            "reward": reward,
        }
        # the loss: now, or at start() from the model's output width
        self.loss: ParametricLoss | None = None
        self._loss_factory: Callable[[int], ParametricLoss] | None = None
        self._num_classes: int | None = None
        if isinstance(loss, nn.Module):
            if not isinstance(loss, ParametricLoss):
                raise TypeError(f"Expected `loss` to expose parameter_vector/set_parameter_vector/bounds/"
                                f"parameter_names (ParametricLoss), but got {type(loss).__name__}.")
            self.loss = loss
        elif callable(loss):
            self._loss_factory = loss
        else:
            raise TypeError(f"Expected `loss` to be a ParametricLoss or a factory num_classes -> ParametricLoss, "
                            f"but got {type(loss).__name__}.")
        probe = self.loss if self.loss is not None else self._loss_factory(2)  # type: ignore[misc]
        opts = self.options = resolve_options(self.preset, probe, given)
        self.every = check_int("every", opts["every"], minimum=1)
        self.gamma = check_fraction("gamma", opts["gamma"], high_open=False)
        self.smoothing_window = check_int("smoothing_window", opts["smoothing_window"], minimum=0)
        self.total_steps = None if total_steps is None else check_int("total_steps", total_steps, minimum=1)
        self.forward, self.target = forward, target

        self.metric: Metric = resolve_metric(metric, probe, task)
        history_len = check_int("history", opts["history"], minimum=1)
        self.features: Features
        if features is None or isinstance(features, str):
            self.state_kind, self.features = choose_features(opts["features"], probe, history=history_len,
                                                             from_preset=features is None)
        elif isinstance(features, Features):
            self.state_kind = type(features).__name__
            self.features = features
        else:
            raise TypeError(f"Expected `features` to be one of {['auto', *FEATURES]} or an object with "
                            f"num_features, __call__, state_dict, load_state_dict, but got {type(features).__name__}.")

        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)))
        seed = check_int("seed", seed, minimum=0)
        if policy is None:
            with seeded_global_rng(seed):
                policy = ALAPolicy(self.features.num_features, opts["hidden"])
        elif not isinstance(policy, ALAPolicy):
            source = policy
            policy = load_policy(policy)
            if policy.in_features != self.features.num_features:
                raise ValueError(
                    f"The policy in {str(source)!r} takes {policy.in_features} features per parameter, but the "
                    f"{self.state_kind!r} state with history={history_len} gives {self.features.num_features}."
                )
        elif policy.in_features != self.features.num_features:
            raise ValueError(f"Expected `policy` to take {self.features.num_features} features per parameter (the "
                             f"{self.state_kind!r} state), but it takes {policy.in_features}.")
        self.controller = ALAController(
            policy, beta=opts["beta"], lr=opts["policy_lr"], baseline_decay=opts["baseline_decay"],
            entropy_coef=opts["entropy_coef"], replay_capacity=opts["replay_capacity"],
            replay_batch=opts["replay_batch"], clip_ratio=opts["clip_ratio"], reward=opts["reward"],
            train_policy=train_policy, greedy=greedy, seed=seed,
        )
        self.steps = 0
        self.started = False
        self.window_start = 0
        self.window_values: list[float] = []
        self.metrics: list[float] = []
        self.clamp_hits = 0
        #: per controller action: the step, Φ's statistics after the action, and (short Φ) Φ itself
        self.history: dict[str, Any] = {"step": [], "phi_stats": {}, "phi_trace": []}
        self._device: torch.device | None = None

    # ------------------------------------------------------------------ the loss
    @property
    def policy(self) -> ALAPolicy:
        return self.controller.policy

    @property
    def criterion(self) -> nn.Module:
        """The current loss ``l_Φ`` (built at :meth:`start` when a factory was given)."""
        if self.loss is None:
            raise RuntimeError("The ALA loss is built when the class count is known: call ala.start(model, "
                               "valid_data) first (or load_state_dict).")
        assert isinstance(self.loss, nn.Module)
        return self.loss

    def __call__(self, prediction: Tensor, target: Tensor) -> Tensor:
        """``l_Φ(prediction, target)``: the loss to train with."""
        return self.criterion(prediction, target)

    def _build_loss(self, num_classes: int) -> None:
        if self.loss is None:
            assert self._loss_factory is not None
            self.loss = self._loss_factory(num_classes)
            self._num_classes = num_classes
            if self._device is not None:
                self.criterion.to(self._device)

    def to(self, device: torch.device | str) -> ALA:
        """Move the loss to ``device`` (the policy stays on the CPU). Returns ``self``."""
        self._device = torch.device(device)
        if self.loss is not None:
            self.criterion.to(self._device)
        return self

    def share(self, collective: Collective) -> None:
        """Share one policy among workers (see :meth:`ALAController.share`)."""
        self.controller.share(collective)

    # ------------------------------------------------------------------ the loop
    def _progress(self) -> float:
        return min(self.steps / self.total_steps, 1.0) if self.total_steps else 0.0

    def _evaluate(self, model: nn.Module, valid_data: ValidData, keep_outputs: bool) -> tuple[float, Any, Any]:
        first = next(model.parameters(), None)
        if first is not None and first.device != self._device:  # the loss follows the model
            self.to(first.device)
        self.metric.reset()
        result = evaluate_batches(model, _batches(valid_data), [self.metric], forward=self.forward,
                                  target=self.target, keep_outputs=keep_outputs)
        return float(result.values[self.metric.name]), result.outputs, result.targets

    def _act(self, logits: Tensor, targets: Tensor) -> dict[str, float]:
        loss = self.loss
        assert loss is not None
        lower, upper = loss.bounds
        obs = Observation(progress=self._progress(), metrics=list(self.metrics), phi=loss.parameter_vector(),
                          lower=lower, upper=upper, logits=logits, targets=targets, loss=loss)
        delta = self.controller.act(self.features(obs))
        hits = apply_parameter_delta(loss, delta)
        self.clamp_hits += hits
        stats = phi_statistics(loss)
        self.history["step"].append(self.steps)
        for k, v in stats.items():
            self.history["phi_stats"].setdefault(k, []).append(v)
        phi = loss.parameter_vector()
        if phi.numel() <= PHI_TRACE_MAX:
            self.history["phi_trace"].append(phi.cpu().tolist())
        phi_scalars = {f"phi_{k}": v for k, v in stats.items()}
        latest = getattr(self.features, "latest", None)
        if isinstance(self.features, PairDistanceFeatures) and latest is not None:
            pos, neg = latest  # the validation distances the action was taken on
            self.history.setdefault("distance_hist", {"pos": [], "neg": []})
            self.history["distance_hist"]["pos"].append(pos.tolist())
            self.history["distance_hist"]["neg"].append(neg.tolist())
        return {**self.controller.last_act_stats, "clamp_hits": float(hits), **phi_scalars}

    def start(self, model: nn.Module, valid_data: ValidData) -> dict[str, float]:
        """Evaluate the initial model, build the loss (from a factory), take the first action.

        Call once before training; :meth:`step` calls it itself if it was not.

        Returns:
            ``ala_metric`` (the initial metric) and ``phi_*`` statistics of Φ after the action.
        """
        value, logits, targets = self._evaluate(model, valid_data, True)
        self._build_loss(int(logits.shape[-1]))
        self.metrics = [value]
        self._act(logits, targets)
        self.started = True
        self.window_start = self.steps
        assert self.loss is not None
        return {"ala_metric": value, **{f"phi_{k}": v for k, v in phi_statistics(self.loss).items()}}

    def step(self, model: nn.Module, valid_data: ValidData) -> dict[str, float]:
        """Count one base step (call it after ``optimizer.step()``); evaluate and act when due.

        Args:
            model: the model being trained (evaluated in eval mode; its mode is restored).
            valid_data: the validation batches of the reward — a DataLoader, a list of batches,
                one ``(x, y)`` batch, or a callable returning one of them (called only when an
                evaluation is due). Pass the same examples every time, so successive metrics compare.

        Returns:
            Scalars of this step: empty between evaluations; at a controller step ``ala_metric``
            (the smoothed M), ``reward``, ``advantage``, ``policy_loss``, the action statistics
            and ``phi_*``.
        """
        if not self.started:
            return self.start(model, valid_data)
        self.steps += 1
        j = self.steps - self.window_start
        window = self.smoothing_window or self.every
        if j <= self.every - window:
            return {}
        value, logits, targets = self._evaluate(model, valid_data, keep_outputs=j == self.every)
        self.window_values.append(value)
        if j < self.every:
            return {}
        m = smoothed_metric(self.window_values, self.gamma)
        prev = self.metrics[-1]
        improvement = m - prev if self.metric.higher_is_better else prev - m
        scalars: dict[str, float] = {"ala_metric": m}
        if self.controller.pending is not None:
            scalars.update(self.controller.give_reward(improvement))
        self.metrics.append(m)
        self.window_values = []
        self.window_start = self.steps
        scalars.update(self._act(logits, targets))
        return scalars

    # ------------------------------------------------------------------ state
    def snapshot(self) -> dict[str, Any] | None:
        """Φ now (the loss's own snapshot, else name → value) and the controller's history:
        ``metric`` (M of every controller step, the initial value first) at ``controller_steps``;
        ``rewards`` (one per closed episode, i.e. per ``controller_steps[1:]``); ``phi_stats``
        and, for at most :data:`PHI_TRACE_MAX` entries, ``phi_trace`` — Φ after each action;
        with the pair-distance state, ``distance_hist`` — the validation positive/negative-pair
        distance histograms each action was taken on (``pos``, ``neg``: one list per action)."""
        if self.loss is None:
            return None
        snap = getattr(self.loss, "snapshot", None)
        base = snap() if callable(snap) else {
            "parameters": dict(zip(self.loss.parameter_names, self.loss.parameter_vector().cpu().tolist()))
        }
        names = self.loss.parameter_names
        return {
            "kind": "ala", **base, "metric_name": self.metric.name,
            "higher_is_better": self.metric.higher_is_better,
            "controller_steps": list(self.history["step"]), "metric": list(self.metrics),
            "rewards": list(self.controller.rewards),
            "phi_stats": {k: list(v) for k, v in self.history["phi_stats"].items()},
            **({"parameter_names": names, "phi_trace": [list(v) for v in self.history["phi_trace"]]}
               if len(names) <= PHI_TRACE_MAX else {}),
            "clamp_hits": self.clamp_hits,
            **({"distance_hist": copy.deepcopy(self.history["distance_hist"])} if "distance_hist" in self.history
               else {}),
        }

    def state_dict(self) -> StateDict:
        """Φ, the controller (policy, its optimiser, baseline, pending episode, sampler), the
        features' history and the window counters: everything to continue exactly."""
        loss = self.loss
        return {
            "num_classes": self._num_classes,
            "loss": loss.state_dict() if isinstance(loss, nn.Module) else None,
            "loss_config": loss.config() if isinstance(loss, ClassPairLoss) else None,
            "controller": self.controller.state_dict(),
            "features": self.features.state_dict(),
            "steps": self.steps,
            "started": self.started,
            "window_start": self.window_start,
            "window_values": list(self.window_values),
            "metrics": list(self.metrics),
            "clamp_hits": self.clamp_hits,
            "history": copy.deepcopy(self.history),
        }

    def load_state_dict(self, state: StateDict) -> None:
        """Restore :meth:`state_dict`."""
        if state["num_classes"] is not None:
            self._build_loss(int(state["num_classes"]))
        if state["loss"] is not None:
            if self.loss is None:
                raise ValueError("The state holds a loss, but ALA cannot build one to load it into (give the loss or "
                                 "its factory).")
            self.criterion.load_state_dict(state["loss"])
        self.controller.load_state_dict(state["controller"])
        self.features.load_state_dict(state["features"])
        self.steps = int(state["steps"])
        self.started = bool(state["started"])
        self.window_start = int(state["window_start"])
        self.window_values = [float(v) for v in state["window_values"]]
        self.metrics = [float(v) for v in state["metrics"]]
        self.clamp_hits = int(state["clamp_hits"])
        self.history = copy.deepcopy(state["history"])
