"""``method=ala``: the trainer's adapter over :class:`~adaloss.methods.ALA`."""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Iterable
from typing import Any, Literal, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaloss._validation import check_choice, check_int, check_known_options
from adaloss.data.loader import iterate_batches
from adaloss.functional.losses import contrastive_loss
from adaloss.learners.base import Learner, TrainContext, loss_step
from adaloss.losses.ala import ClassPairLoss, ClassWeightLoss, FrequencyWeightLoss, PairDistanceLoss, ParametricLoss
from adaloss.methods.ala.policy import POLICY_FILE, policy_state
from adaloss.methods.ala.presets import (
    ALA_EMBEDDING_LOSS_OPTIONS,
    ALA_LOSS_OPTIONS,
    DEFAULT_TARGET_METRIC,
    PRESET_FAMILIES,
    PRESET_FORMS,
    check_preset,
)
from adaloss.methods.ala.scheduler import ALA
from adaloss.metrics import create_metric
from adaloss.typing import Batch, StateDict, Task

__all__ = ["ALALearner", "check_family", "create_ala_learner", "resolve_val_subset"]

#: options :class:`ALALearner` passes to :class:`ALA` as they are (see its docstring)
CORE_OPTIONS = ("beta", "gamma", "smoothing_window", "history", "hidden", "policy_lr", "baseline_decay",
                "entropy_coef", "replay_capacity", "replay_batch", "clip_ratio", "reward")

#: option names of earlier releases, still accepted with a ``FutureWarning``
RENAMED_OPTIONS = {"K": "every", "state": "features", "policy_path": "policy"}

LossSpec = Union[ParametricLoss, Callable[[int], ParametricLoss], None]


class ALALearner(Learner):
    """``method=ala``: the :class:`~adaloss.methods.ALA` loss scheduler driven by the trainer.

    Each :meth:`step` is an ordinary base step (backward, ``optimizer.step()``) with the current
    parametric loss ``l_Φ``, then :meth:`ALA.step` on the validation subset; the method's logic
    (evaluation windows, rewards, policy, actions) lives in :class:`ALA` alone. The first action
    is taken before step 0 (:meth:`prepare`), from the metric of the initial model.

    Validation: ``val_batches`` batches of ``ctx.meta_batches``. With ``val_subset="fixed"``
    they are drawn once and reused, so successive ``M_t`` compare the same examples (they are
    kept in checkpoints); ``"stream"`` draws fresh batches for every evaluation; ``"all"``
    evaluates the whole validation split. A retrieval metric (Recall@k, NMI) scores the
    evaluated examples against each other, so a repeated example would find its own copy:
    ``"fixed"`` must then fit in one pass over the validation split and ``"stream"`` is refused.
    ``"auto"`` (default) is ``"fixed"``, except for a retrieval metric whose ``val_batches``
    exceed one pass — then ``"all"``, the same examples without repeats.
    The metric is evaluated after each of the last ``smoothing_window`` steps of every window
    (0 = all K: Eq. 4 verbatim) in eval mode.

    Every option left ``None`` takes the value of ``preset`` (:data:`ALA_PRESETS`).

    Args:
        task: classification or embedding for the default losses (any task with ``loss``).
        loss: a :class:`~adaloss.losses.ala.ParametricLoss` module, a factory ``num_classes →
            loss`` (the class count is read from the model's output), or ``None`` for the
            preset's family (:data:`PRESET_FAMILIES`: the tied ``FrequencyWeightLoss`` with
            ``default``, ``ClassPairLoss(form="sigmoid")`` with ``faithful``; classification) or
            ``PairDistanceLoss()`` (embedding).
        preset: ``"default"`` or ``"faithful"``.
        metric: the validation metric rewarded (a registered metric name fitting the task;
            ``None``: :data:`DEFAULT_TARGET_METRIC` of the task — error, mse, recall@1).
        every: base steps K per controller step.
        features: ``"pair_confusion"`` (24-d, faithful, class-pair loss), ``"pair_distance"``
            (:class:`PairDistanceFeatures`, pair-distance loss), ``"class_error"``
            (:class:`ClassErrorFeatures`, class-weight loss), ``"metric"`` (generic), or
            ``"auto"`` (the one fitting the loss; a preset's ``pair_confusion`` also becomes
            ``pair_distance`` for the pair-distance loss).
        val_batches: validation batches per evaluation.
        val_subset: ``"auto"``, ``"fixed"``, ``"stream"`` or ``"all"``.
        total_steps: T of the ``t / T`` feature (``None``: the trainer's step count; 0 outside a trainer).
        train_policy: ``False`` = frozen policy (transfer).
        greedy: act greedily instead of sampling.
        policy: start from a policy saved by :func:`save_policy`, an ALA checkpoint, or an
            ALA run directory (a run keeps ``<run_dir>/policy.pt`` up to date after every policy update).
        seed: seed of the policy's initialisation and sampling (``None``: drawn from the global
            torch RNG at construction, so it follows the run's seed).
        grad_ratio_every: every this many steps log ``‖∇_θ l_Φ‖ / ‖∇_θ l_ref‖`` (0 =
            never); ``l_ref`` is the loss's ``reference_loss`` if it has one (the pair-distance
            loss at Φ = 1), else CE (classification), MSE (regression) or the contrastive loss.

    Other Parameters:
        **core_options: the controller's options, passed to :class:`~adaloss.methods.ALA` (``beta``,
            ``gamma``, ``smoothing_window``, ``history``, ``hidden``, ``policy_lr``, ``baseline_decay``,
            ``entropy_coef``, ``replay_capacity``, ``replay_batch``, ``clip_ratio``, ``reward``).
    """

    data_parallel = False  # under torchrun every rank is a worker with its own child model (§2)

    def __init__(
        self,
        *,
        task: Task = "classification",
        loss: LossSpec = None,
        preset: Literal["default", "faithful"] = "default",
        metric: str | None = None,
        every: int | None = None,
        features: Literal["auto", "pair_confusion", "pair_distance", "class_error", "metric"] | None = None,
        val_batches: int | None = None,
        val_subset: Literal["auto", "fixed", "stream", "all"] = "auto",
        total_steps: int | None = None,
        train_policy: bool = True,
        greedy: bool = False,
        policy: str | None = None,
        seed: int | None = None,
        grad_ratio_every: int = 10,
        **core_options: Any,
    ) -> None:
        renamed: dict[str, Any] = {"every": every, "features": features, "policy": policy}
        for old, name in RENAMED_OPTIONS.items():
            if old in core_options:
                warnings.warn(f"ALA's option `{old}` is now `{name}`; `{old}` will be removed in a future release.",
                              FutureWarning, stacklevel=2)
                if renamed[name] is not None:
                    raise TypeError(f"ALA's option `{name}` was given twice: as `{name}` and as its old name `{old}`.")
                renamed[name] = core_options.pop(old)
        every, features, policy = renamed["every"], renamed["features"], renamed["policy"]
        check_known_options("ALA's controller and state", core_options, CORE_OPTIONS)
        self.task: Task = task
        if metric is None:
            metric = DEFAULT_TARGET_METRIC[check_choice("task", task, tuple(DEFAULT_TARGET_METRIC))]
        metric_obj = create_metric(metric, task=task)  # unknown or misfit metric: error now, not mid-run
        if loss is None and task == "embedding":
            loss = PairDistanceLoss()
        if loss is None:
            if task != "classification":
                raise ValueError(f"ALA has default losses for classification (ClassPairLoss) and embedding "
                                 f"(PairDistanceLoss), but the task is {task}; pass a ParametricLoss as `loss`.")
            preset_name = check_preset(preset)
            loss = classification_loss(PRESET_FAMILIES[preset_name], preset=preset_name)
        assert loss is not None
        self.core = ALA(
            loss, metric=metric_obj, every=every, total_steps=total_steps, features=features, policy=policy,
            preset=preset, train_policy=train_policy, greedy=greedy, seed=seed, task=task, **core_options,
        )
        self.val_batches = check_int("val_batches", val_batches if val_batches is not None
                                     else self.core.options.get("val_batches", 16), minimum=1)
        self.val_subset = check_choice("val_subset", val_subset, ("auto", "fixed", "stream", "all"))
        if self.val_subset == "stream" and self.core.metric.task == "embedding":
            raise ValueError(f"`val_subset='stream'` is refused for the retrieval metric "
                             f"{self.core.metric.name!r}: a set "
                             "drawn across two passes of the validation split repeats examples, and a repeated example "
                             "finds its own copy; use val_subset='fixed' or 'all'.")
        self.grad_ratio_every = check_int("grad_ratio_every", grad_ratio_every, minimum=0)
        self._val: list[Batch] = []

    # ------------------------------------------------------------------ the object's state, read through
    @property
    def criterion(self) -> nn.Module:
        return self.core.criterion

    @property
    def steps(self) -> int:
        return self.core.steps

    # ------------------------------------------------------------------ the trainer's side
    def bind(self, context: TrainContext) -> None:
        super().bind(context)
        self.core.share(context.collective)
        if self.core.total_steps is None:
            self.core.total_steps = context.total_steps
        if context.meta_batches is None:
            raise ValueError("ALA rewards a validation metric and needs a validation split; the run has none "
                             "(valid_fraction).")
        self.val_subset = resolve_val_subset(
            self.val_subset, val_batches=self.val_batches,
            batches_per_pass=getattr(context.meta_batches, "batches_per_epoch", None),
            retrieval_metric=self.core.metric.name if self.core.metric.task == "embedding" else None,
            has_split=context.valid_split is not None)
        self.core.to(context.device)

    def _valid_data(self) -> Iterable[Batch] | Callable[[], Iterable[Batch]]:
        """The validation subset of ``val_subset``, drawn only when ALA evaluates."""
        ctx = self.context
        if self.val_subset == "fixed":
            return self._val
        if self.val_subset == "all":
            assert ctx.valid_split is not None
            split = ctx.valid_split
            return lambda: iterate_batches(split, batch_size=ctx.batch_size or 1000, device=ctx.device)
        meta = ctx.meta_batches
        assert meta is not None
        return lambda: [next(meta) for _ in range(self.val_batches)]

    def _start(self) -> dict[str, float]:
        if self.val_subset == "fixed":
            assert self.context.meta_batches is not None
            self._val = [next(self.context.meta_batches) for _ in range(self.val_batches)]
        return self.core.start(self.context.model, self._valid_data())

    def _reference_loss(self) -> Callable[[Tensor, Tensor], Tensor]:
        """The loss of the gradient-norm ratio's denominator."""
        reference = getattr(self.core.loss, "reference_loss", None)
        if callable(reference):
            return reference  # type: ignore[no-any-return]
        plain: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
            "classification": F.cross_entropy, "regression": F.mse_loss, "embedding": contrastive_loss}
        return plain[self.task]

    def prepare(self) -> dict[str, float]:
        """Before step 0 of a fresh run: validation subset, initial metric, first action."""
        if self.core.started:
            return {}
        return self._start()

    def step(self, batch: Batch) -> dict[str, Tensor]:
        if not self.core.started:
            self._start()
        ctx = self.context
        ratio = self.grad_ratio_every and self.core.steps % self.grad_ratio_every == 0
        scalars = loss_step(ctx.model, ctx.optimizer, self.criterion, batch,
                            reference=self._reference_loss() if ratio else None)
        for k, v in self.core.step(ctx.model, self._valid_data()).items():
            scalars[k] = torch.tensor(v)
        return scalars

    def artifacts(self) -> dict[str, StateDict]:
        """``policy.pt``: the current policy, which a later run reuses (``policy``)."""
        return {POLICY_FILE: policy_state(self.core.controller.policy)} if self.core.controller.train_policy else {}

    def snapshot(self) -> dict[str, Any] | None:
        return self.core.snapshot()

    def state_dict(self) -> StateDict:
        return {**self.core.state_dict(), "val": [(x.clone(), y.clone()) for x, y in self._val]}

    def load_state_dict(self, state: StateDict) -> None:
        self.core.load_state_dict(state)
        device = self.context.device if hasattr(self, "context") else None
        self._val = [(x.to(device), y.to(device)) if device is not None else (x, y) for x, y in state["val"]]


#: the loss families of ``method=ala`` on the classification task, and the loss options each takes
CLASSIFICATION_FAMILIES: dict[str, tuple[type, tuple[str, ...]]] = {
    "class_pair": (ClassPairLoss, ALA_LOSS_OPTIONS),
    "class_weight": (ClassWeightLoss, ("bounds", "label_smoothing", "num_classes", "center")),
    "class_frequency": (FrequencyWeightLoss, ("bounds", "label_smoothing", "num_classes")),
}


def resolve_val_subset(
    val_subset: Literal["auto", "fixed", "stream", "all"], *, val_batches: int, batches_per_pass: int | None,
    retrieval_metric: str | None, has_split: bool,
) -> Literal["auto", "fixed", "stream", "all"]:
    """Which validation examples ALA's reward reads: ``"auto"`` becomes ``"all"`` (the whole
    split) when ``val_batches`` batches would repeat examples for a retrieval metric (a repeated
    example finds its own copy), else ``"fixed"`` (``val_batches`` batches drawn once).

    Args:
        val_subset: ``"auto"``, ``"fixed"``, ``"stream"`` or ``"all"``.
        val_batches: batches of the validation stream per evaluation.
        batches_per_pass: the stream's batches in one pass over the split (``None``: unknown).
        retrieval_metric: the metric's name when it is a retrieval metric, else ``None``.
        has_split: the whole validation split is at hand.
    """
    repeats = retrieval_metric is not None and batches_per_pass is not None and val_batches > batches_per_pass
    if val_subset == "auto":
        val_subset = "all" if repeats and has_split else "fixed"
    if val_subset == "all" and not has_split:
        raise ValueError("`val_subset='all'` evaluates the whole validation split, but the trainer passed none.")
    if val_subset == "fixed" and repeats:
        raise ValueError(
            f"Expected `val_batches` to be at most {batches_per_pass} (the validation batches of one pass over the "
            f"validation split) for the retrieval metric {retrieval_metric!r}, but got {val_batches}: more "
            "would repeat examples, and a repeated example finds its own copy. Lower it or use val_subset='all'."
        )
    return val_subset


def check_family(family: str) -> str:
    """``family`` if it names one of :data:`CLASSIFICATION_FAMILIES`; else a ``ValueError`` naming it."""
    return check_choice("family", family, tuple(CLASSIFICATION_FAMILIES))


def create_ala_learner(*, task: Task, family: str | None = None, **options: Any) -> ALALearner:
    """``method=ala``: split ``options`` between :class:`ALALearner` and the task's default loss —
    for classification the ``family`` (``"class_pair"``: :class:`~adaloss.losses.ala.ClassPairLoss`,
    the paper's C×C matrix, :data:`ALA_LOSS_OPTIONS`; ``"class_weight"``:
    :class:`~adaloss.losses.ala.ClassWeightLoss`, one log-weight per class; ``"class_frequency"``:
    :class:`~adaloss.losses.ala.FrequencyWeightLoss`, one power of the class frequencies; default: the
    preset's, :data:`~adaloss.methods.ala.presets.PRESET_FAMILIES`), for embedding
    :class:`~adaloss.losses.ala.PairDistanceLoss` (:data:`ALA_EMBEDDING_LOSS_OPTIONS`) —
    naming unknown ones."""
    learner_options = sorted([*(n for n in inspect.signature(ALALearner).parameters
                                if n not in ("task", "loss", "core_options")), *CORE_OPTIONS, "family"])
    preset = check_preset(options.get("preset", "default"))
    if task == "embedding":
        if family is not None:
            raise ValueError(f"`family` chooses the classification loss; the embedding task has one "
                             f"(PairDistanceLoss), but got family={family!r}.")
        loss_names: tuple[str, ...] = ALA_EMBEDDING_LOSS_OPTIONS
    else:
        family = check_family(PRESET_FAMILIES[preset] if family is None else family)
        loss_names = CLASSIFICATION_FAMILIES[family][1]
    all_loss_names = {*ALA_EMBEDDING_LOSS_OPTIONS} if task == "embedding" else {
        n for _, names in CLASSIFICATION_FAMILIES.values() for n in names}
    unknown = sorted(set(options) - set(learner_options) - all_loss_names - set(RENAMED_OPTIONS))
    if unknown:
        raise TypeError(f"Unknown option(s) {unknown} for method 'ala' on the {task} task; learner options: "
                        f"{learner_options}; loss options: {sorted(loss_names)}.")
    misplaced = sorted((set(options) & all_loss_names) - set(loss_names))
    if misplaced:
        raise TypeError(f"Option(s) {misplaced} do not apply to the {family!r} loss family; its loss options: "
                        f"{sorted(loss_names)}.")
    loss_options = {k: options.pop(k) for k in loss_names if k in options}
    loss: LossSpec = (PairDistanceLoss(**loss_options) if task == "embedding"
                      else classification_loss(family, preset=preset, **loss_options))  # type: ignore[arg-type]
    return ALALearner(task=task, loss=loss, **options)


def classification_loss(family: str, *, preset: str = "default", **loss_options: Any) -> LossSpec:
    """ALA's classification loss of ``family`` (:data:`CLASSIFICATION_FAMILIES`): built now when
    ``num_classes`` is among ``loss_options``, else a factory ``num_classes → loss``. The
    class-pair family takes the preset's ``form`` unless one is given."""
    cls = CLASSIFICATION_FAMILIES[check_family(family)][0]
    if "bounds" in loss_options:
        loss_options["bounds"] = tuple(loss_options["bounds"])
    if cls is ClassPairLoss:
        loss_options.setdefault("form", PRESET_FORMS[check_preset(preset)])
    return cls(**loss_options) if "num_classes" in loss_options else functools.partial(cls, **loss_options)
