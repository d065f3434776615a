"""Peers run beside the learned losses: optimisers that need no learning-rate tuning (trained with
the task's plain loss), and a loss that optimises the evaluation metric directly.

Optional dependencies (``adaloss[peers]``): ``schedulefree``, ``prodigyopt``, ``dadaptation``
(:mod:`adaloss.optim`); LibAUC. LibAUC (``adaloss[peers]``): LibAUC. Its PyPI package requires torchvision,
torch_geometric, transformers and more, which do not install beside the pinned CPU torch; its
``losses`` subpackage needs none of them, so it is installed without dependencies (README, "ALA",
the direct-optimisation peer): ``pip install -c constraints.txt -e ".[peers]" && pip install --no-deps libauc==2.0.1``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaloss._optional import import_optional, install_command
from adaloss._validation import check_choice, check_fraction, check_positive
from adaloss.learners.base import Learner, RunOptimizer, TrainContext, loss_step
from adaloss.learners.handcrafted import FixedLossLearner
from adaloss.optim import HypergradientSGD, dadapt_sgd, prodigy, schedulefree_sgd
from adaloss.typing import StateDict

__all__ = ["PEER_OPTIMIZERS", "DAdaptRecipe", "HypergradientRecipe", "LibAUCAveragePrecisionLearner",
           "OptimizerPeerLearner", "ProdigyRecipe", "ScheduleFreeRecipe", "import_libauc_losses"]

#: builds the optimiser a peer trains with from the model's parameters and the run's optimiser settings
OptimizerRecipe = Callable[[list[nn.Parameter], RunOptimizer], torch.optim.Optimizer]


class HypergradientRecipe:
    """``method=hd_sgd``: :class:`~adaloss.optim.HypergradientSGD` (Baydin et al., ICLR 2018) from
    the run's lr (or ``lr``), momentum, Nesterov flag and weight decay.

    Args:
        lr: the initial learning rate (``None``: the run's).
        hypergrad_lr: the hypergradient step ``β`` (the paper's SGD-HD value).
    """

    def __init__(self, *, lr: float | None = None, hypergrad_lr: float = 1e-3) -> None:
        self.lr = None if lr is None else float(check_positive("lr", lr))
        self.hypergrad_lr = float(check_positive("hypergrad_lr", hypergrad_lr, allow_zero=True))

    def __call__(self, params: list[nn.Parameter], run: RunOptimizer) -> torch.optim.Optimizer:
        return HypergradientSGD(params, lr=self.lr or run.lr, hypergrad_lr=self.hypergrad_lr, momentum=run.momentum,
                                nesterov=run.nesterov, weight_decay=run.weight_decay)


class ScheduleFreeRecipe:
    """``method=schedulefree_sgd``: ``schedulefree.SGDScheduleFree`` (Defazio et al., NeurIPS 2024)
    with the package's advice — a learning rate 10–50× a tuned SGD one, momentum 0.9, a warm-up —
    and the run's weight decay; evaluated at its averaged weights (:func:`~adaloss.optim.eval_weights`).

    Args:
        lr: its learning rate (``None``: ``lr_scale`` × the run's).
        lr_scale: the multiple of the run's lr when ``lr`` is ``None``.
        momentum: its interpolation momentum.
        warmup_fraction: the linear warm-up, a share of the run's steps.
    """

    def __init__(self, *, lr: float | None = None, lr_scale: float = 10.0, momentum: float = 0.9,
                 warmup_fraction: float = 0.05) -> None:
        import_optional("schedulefree", needed_for="method='schedulefree_sgd'", extra="peers")  # before training
        self.lr = None if lr is None else float(check_positive("lr", lr))
        self.lr_scale = float(check_positive("lr_scale", lr_scale))
        self.momentum = check_fraction("momentum", momentum, low_open=False, high_open=True)
        self.warmup_fraction = check_fraction("warmup_fraction", warmup_fraction, low_open=False, high_open=True)

    def __call__(self, params: list[nn.Parameter], run: RunOptimizer) -> torch.optim.Optimizer:
        return schedulefree_sgd(params, lr=self.lr or self.lr_scale * run.lr, momentum=self.momentum,
                                weight_decay=run.weight_decay, warmup_steps=round(self.warmup_fraction * run.steps))


class ProdigyRecipe:
    """``method=prodigy``: ``prodigyopt.Prodigy`` (Mishchenko & Defazio, ICML 2024) with the run's
    weight decay (decoupled).

    Args:
        lr: the multiplier on its estimated step size (the package's 1.0).
    """

    def __init__(self, *, lr: float = 1.0) -> None:
        import_optional("prodigyopt", needed_for="method='prodigy'", extra="peers")
        self.lr = float(check_positive("lr", lr))

    def __call__(self, params: list[nn.Parameter], run: RunOptimizer) -> torch.optim.Optimizer:
        return prodigy(params, lr=self.lr, weight_decay=run.weight_decay)


class DAdaptRecipe:
    """``method=dadapt_sgd``: ``dadaptation.DAdaptSGD`` (Defazio & Mishchenko, ICML 2023) with the
    run's weight decay.

    Args:
        lr: the multiplier on its step-size estimate (the package's 1.0).
        momentum: its momentum (the package README's 0.9 for SGD).
    """

    def __init__(self, *, lr: float = 1.0, momentum: float = 0.9) -> None:
        import_optional("dadaptation", needed_for="method='dadapt_sgd'", extra="peers")
        self.lr = float(check_positive("lr", lr))
        self.momentum = check_fraction("momentum", momentum, low_open=False, high_open=True)

    def __call__(self, params: list[nn.Parameter], run: RunOptimizer) -> torch.optim.Optimizer:
        return dadapt_sgd(params, lr=self.lr, momentum=self.momentum, weight_decay=run.weight_decay)


#: method name -> the recipe of its optimiser, whose keyword options are the method's options
PEER_OPTIMIZERS: dict[str, Callable[..., OptimizerRecipe]] = {
    "hd_sgd": HypergradientRecipe, "schedulefree_sgd": ScheduleFreeRecipe, "prodigy": ProdigyRecipe,
    "dadapt_sgd": DAdaptRecipe,
}


class OptimizerPeerLearner(FixedLossLearner):
    """The task's plain loss trained with an optimiser that needs no learning-rate tuning, in place
    of the run's (``method=hd_sgd | schedulefree_sgd | prodigy | dadapt_sgd``).

    Args:
        loss: the criterion (the task's plain loss: cross-entropy or MSE).
        optimizer: builds the optimiser from the model's parameters and the run's optimiser
            settings (:class:`~adaloss.learners.base.RunOptimizer`), e.g. a recipe of :data:`PEER_OPTIMIZERS`.
    """

    def __init__(self, loss: nn.Module, *,
                 optimizer: OptimizerRecipe) -> None:
        super().__init__(loss)
        self.make_optimizer = optimizer

    def create_optimizer(self, params: list[nn.Parameter], run: RunOptimizer) -> torch.optim.Optimizer:
        return self.make_optimizer(params, run)


LIBAUC_INSTALL = install_command("peers") + " && pip install --no-deps libauc==2.0.1"


def import_libauc_losses() -> Any:
    """``libauc.losses``, or an ImportError that says how to install it."""
    try:
        return importlib.import_module("libauc.losses")
    except ImportError as e:
        raise ImportError(f"This method needs LibAUC's losses ({e}); install them with: {LIBAUC_INSTALL}") from None


class LibAUCAveragePrecisionLearner(Learner):
    """Macro AUCPR optimised directly: LibAUC's mean-average-precision loss
    (``libauc.losses.meanAveragePrecisionLoss``; Qi et al. 2021, "Stochastic Optimization of Areas
    Under Precision-Recall Curves with Provable Convergence", the SOAP estimator; Yuan et al. 2023,
    "LibAUC") on each class's one-vs-rest scores — ``method=libauc_ap``.

    The estimator keeps two moving averages per (class, training example), so every batch carries
    its rows' indices in the training split (:attr:`needs_index`). Choices, each an option:

    * ``pretrain_fraction``: cross-entropy for that share of the run's steps, then the AP loss
      (LibAUC's recommended pipeline: AP fine-tuning of a CE-pretrained model; a model trained
      from scratch on the AP surrogate alone has no signal while all scores are equal).
    * ``score``: ``"softmax"`` ranks each class by its softmax probability, which is what the
      protocols' AUCPR ranks; ``"sigmoid"`` is LibAUC's own convention (``sigmoid(logit)``).
    * only the classes present in a batch enter the loss (LibAUC's ``task_id``): a batch without a
      rare class is not an error (LibAUC would assert), and needs no oversampling sampler.
    * the optimiser is the run's (not LibAUC's SOAP/Adam), so that beside CE, the oracle and ALA
      only the loss changes; ``scale`` multiplies the AP loss (with SGD: the fine-tuning phase's
      step size relative to the run's learning rate).

    Args:
        pretrain_fraction: share of the steps trained with cross-entropy first, in [0, 1).
        margin: the squared-hinge surrogate's margin (LibAUC's default 1.0).
        gamma: weight of the new value in the moving averages (LibAUC's default 0.9).
        surrogate: LibAUC's surrogate loss.
        score: how logits become the per-class scores the AP loss ranks.
        scale: factor on the AP loss.
    """

    needs_index = True

    def __init__(
        self,
        *,
        pretrain_fraction: float = 0.5,
        margin: float = 1.0,
        gamma: float = 0.9,
        surrogate: Literal["squared_hinge", "squared", "hinge", "logistic"] = "squared_hinge",
        score: Literal["softmax", "sigmoid"] = "softmax",
        scale: float = 1.0,
    ) -> None:
        self.pretrain_fraction = check_fraction("pretrain_fraction", pretrain_fraction, low_open=False)
        self.margin = float(check_positive("margin", margin))
        self.gamma = check_fraction("gamma", gamma, low_open=True, high_open=False)
        self.surrogate = check_choice("surrogate", surrogate, ("squared_hinge", "squared", "hinge", "logistic"))
        self.score = check_choice("score", score, ("softmax", "sigmoid"))
        self.scale = float(check_positive("scale", scale))
        self.steps = 0
        self._ce = nn.CrossEntropyLoss()

    def bind(self, context: TrainContext) -> None:
        super().bind(context)
        if context.collective.world_size > 1:
            raise ValueError("method=libauc_ap runs in one process: its per-example moving averages would differ "
                             "between torchrun ranks.")
        split = context.train_split
        if split is None or context.total_steps is None:
            raise ValueError("method=libauc_ap needs the training split and the run's number of steps in the context.")
        if split.y.dim() != 1 or split.y.is_floating_point():
            raise ValueError(f"method=libauc_ap needs (N,) integer class labels, but got {split.y.dtype} of shape "
                             f"{tuple(split.y.shape)}.")
        self.num_classes = int(split.y.max()) + 1
        self.pretrain_steps = round(self.pretrain_fraction * context.total_steps)
        losses = import_libauc_losses()
        self.ap = losses.meanAveragePrecisionLoss(
            data_len=len(split), num_labels=self.num_classes, margin=self.margin, gamma=self.gamma,
            surr_loss=self.surrogate, device=context.device,
        )

    @property
    def criterion(self) -> nn.Module:
        """Cross-entropy, the loss of the pretraining phase (the AP loss needs each row's index)."""
        return self._ce

    def ap_loss(self, logits: Tensor, target: Tensor, index: Tensor) -> Tensor:
        """The AP loss of one batch; updates the moving averages of its rows."""
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"method=libauc_ap expects (B, {self.num_classes}) logits (one column per class of the "
                             f"training split), but the model gives {tuple(logits.shape)}.")
        scores = torch.softmax(logits, dim=1) if self.score == "softmax" else torch.sigmoid(logits)
        return self.scale * self.ap(scores, F.one_hot(target, self.num_classes), index, task_id=target)

    def step(self, batch: Any) -> dict[str, Tensor]:
        x, y, index = batch
        ctx = self.context
        ap_phase = self.steps >= self.pretrain_steps
        criterion = (lambda z, t: self.ap_loss(z, t, index)) if ap_phase else self._ce
        scalars = loss_step(ctx.model, ctx.optimizer, criterion, (x, y), collective=ctx.collective)
        self.steps += 1
        scalars["ap_phase"] = torch.tensor(float(ap_phase))
        return scalars

    def state_dict(self) -> StateDict:
        return {"steps": self.steps, "u_all": self.ap.u_all.clone(), "u_pos": self.ap.u_pos.clone()}

    def load_state_dict(self, state: StateDict) -> None:
        for name in ("u_all", "u_pos"):
            if state[name].shape != getattr(self.ap, name).shape:
                raise ValueError(f"The LibAUC state {name} has shape {tuple(state[name].shape)}, but this run's is "
                                 f"{tuple(getattr(self.ap, name).shape)} (another training split?).")
            getattr(self.ap, name).copy_(state[name])
        self.steps = int(state["steps"])
