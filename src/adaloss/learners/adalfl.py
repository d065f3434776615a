"""AdaLFL: a learned loss fitted offline (Alg. 1) and adapted online after every base step (Alg. 2)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.optim import Optimizer

from adaloss._validation import check_choice, check_positive
from adaloss.functional.meta import capture_rng, loss_meta_gradient, model_jvp
from adaloss.learners.base import Learner, TrainContext, TrainingDiverged
from adaloss.learners.differentiable import DifferentiableOptimizer
from adaloss.losses.network import LossNetwork
from adaloss.typing import Batch, Criterion, Params, StateDict, Task

__all__ = ["AdaLFLLearner", "task_loss_for"]

MetaOptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]


def task_loss_for(task: Task) -> Criterion:
    """The meta-objective L_T: cross-entropy for classification, squared error for regression."""
    return F.cross_entropy if task == "classification" else F.mse_loss


def _adam_1e3(params: Iterable[nn.Parameter]) -> Optimizer:
    return torch.optim.Adam(params, lr=1e-3)


class AdaLFLLearner(Learner):
    """Online loss-function learning (Raymond et al., "Meta-Learning Adaptive Loss Functions").

    Each :meth:`step`: θ' = U(θ, ∇_θ M_φ) with the run's own optimiser U (SGD with momentum /
    Nesterov / weight decay, Adam, AdamW; its state carried exactly as ``torch.optim`` carries
    it, the LR schedule applied), then φ moves along ∇_φ L_T(f_θ'(x_meta)) and θ' is kept as the
    base update. The meta-gradient is exact for the one-step unroll and is computed through the
    model outputs (see :mod:`adaloss.functional.meta`).

    Forward passes and model state:

    * The base forward on the training batch is the only one that updates BatchNorm running
      statistics. The meta forward at θ' and the Jacobian-vector product use cloned buffers, in
      the model's train mode (batch statistics, differentiated through).
    * Dropout: the Jacobian-vector product replays the base forward's masks (same RNG state),
      so the meta-gradient is that of the step actually taken; the meta forward at θ' draws
      fresh masks, like any other training-mode forward.

    Args:
        loss: the learned loss (default: a fresh :class:`~adaloss.losses.LossNetwork` for the task).
        meta_optimizer: factory for φ's optimiser (default: Adam, lr 1e-3, as in the authors' code).
        init_steps: offline initialisation steps S_init run by :meth:`prepare` (Alg. 1; 0 = none).
        online: adapt φ after every base step (``False`` = the loss stays frozen after
            initialisation: the offline ML3 method).
        meta_batch: where the meta batch comes from: the validation split (paper) or the
            training batch of the same step.
        grad_ratio_every: every this many steps also compute ‖∇_θ M_φ‖ / ‖∇_θ CE‖, the implicit
            learning-rate effect (one extra backward; 0 = never).
        task: classification or regression (set by the method registry).
    """

    def __init__(
        self,
        *,
        task: Task = "classification",
        loss: LossNetwork | None = None,
        meta_optimizer: MetaOptimizerFactory = _adam_1e3,
        init_steps: int = 2500,
        online: bool = True,
        meta_batch: Literal["valid", "train"] = "valid",
        grad_ratio_every: int = 10,
    ) -> None:
        self.task: Task = task
        self.loss = loss if loss is not None else LossNetwork(task=task)
        if self.loss.task != task:
            raise ValueError(f"The loss network is for {self.loss.task}, but the task is {task}.")
        self.meta_optimizer = meta_optimizer(self.loss.parameters())
        self.init_steps = int(check_positive("init_steps", init_steps, allow_zero=True))
        self.online = bool(online)
        self.meta_batch = check_choice("meta_batch", meta_batch, ("valid", "train"))
        self.grad_ratio_every = int(check_positive("grad_ratio_every", grad_ratio_every, allow_zero=True))
        self.task_loss = task_loss_for(task)
        self.steps = 0
        self.skipped_meta_steps = 0
        self._diffopt: DifferentiableOptimizer | None = None

    @property
    def criterion(self) -> nn.Module:
        return self.loss

    # ------------------------------------------------------------------ the one-step meta-gradient
    def _meta_batch(self, batch: Batch) -> Batch:
        if self.meta_batch == "train":
            return batch
        meta = self.context.meta_batches
        if meta is None:
            raise ValueError("`meta_batch='valid'` needs a validation split; the run has none (valid_fraction).")
        return next(meta)

    def _meta_step(
        self, model: nn.Module, diffopt: DifferentiableOptimizer, batch: Batch, meta_batch: Batch, *, ratio: bool
    ) -> tuple[Params, dict[str, dict[str, Tensor]], dict[str, Tensor], tuple[Tensor, ...]]:
        """One base step θ → θ' with the learned loss, and the exact ∇_φ L_T(f_θ'(x_meta))."""
        x, y = batch
        trainable = set(diffopt.names)
        params = {n: p for n, p in model.named_parameters() if n in trainable}
        rng = capture_rng(x.device)
        z = model(x)  # the one forward that updates BatchNorm running statistics
        m = self._checked_loss(z, y)
        scalars: dict[str, Tensor] = {"loss": m.detach()}
        names = list(params)
        g_list = torch.autograd.grad(m, [params[n] for n in names], retain_graph=ratio)
        grads = dict(zip(names, g_list))
        if ratio:  # logged from this rank's shard
            ce = torch.autograd.grad(self.task_loss(z, y), [params[n] for n in names])
            scalars["grad_norm_ratio"] = _norm(g_list) / _norm(ce).clamp_min(1e-30)
        sync = self.context.collective
        sync.mean_(g_list)  # data parallel: every rank takes the global-batch base gradient
        with torch.no_grad():
            new_params, new_state = diffopt.update({n: p.detach() for n, p in params.items()}, grads)

        xm, ym = meta_batch
        theta1 = {n: t.detach().requires_grad_(True) for n, t in new_params.items()}
        buffers = {k: b.clone() for k, b in model.named_buffers()}
        meta_loss = self.task_loss(functional_call(model, (theta1, buffers), (xm,)), ym)
        g_meta = torch.autograd.grad(meta_loss, [theta1[n] for n in names])
        sync.mean_(g_meta)  # ∇θ' of the global meta batch: v (and so φ's update) is the same on every rank
        scalars["meta_loss"] = meta_loss.detach()
        v = diffopt.vjp_grads({n: p.detach() for n, p in params.items()}, grads, dict(zip(names, g_meta)))
        u = model_jvp(model, params, v, x, rng_state=rng)
        phi = list(self.loss.parameters())
        meta_grads = loss_meta_gradient(self.loss, z, y, u, phi)
        meta_grads = tuple(torch.zeros_like(p) if g is None else g for p, g in zip(phi, meta_grads))
        # ∇φ is a sum over the training rows (through g): each rank holds its shard's share
        sync.mean_(meta_grads)
        return new_params, new_state, scalars, meta_grads

    def _checked_loss(self, z: Tensor, y: Tensor) -> Tensor:
        m = self.loss(z, y)
        if not torch.isfinite(m):
            raise TrainingDiverged(
                f"The learned loss became {m.item()} at step {self.steps} (non-finite loss-network output); "
                "the last checkpoint is kept."
            )
        return m

    def _apply_meta_gradient(self, meta_grads: tuple[Tensor, ...], scalars: dict[str, Tensor]) -> None:
        finite = bool(torch.stack([torch.isfinite(g).all() for g in meta_grads]).all())  # one sync, not one per tensor
        scalars["meta_skipped"] = torch.tensor(0.0 if finite else 1.0)
        if not finite:
            self.skipped_meta_steps += 1
            return
        for p, g in zip(self.loss.parameters(), meta_grads):
            p.grad = g
        self.meta_optimizer.step()
        self.meta_optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ Learner interface
    def bind(self, context: TrainContext) -> None:
        super().bind(context)
        self._diffopt = DifferentiableOptimizer(context.optimizer, context.model)
        self.loss.to(context.device)

    def prepare(self) -> dict[str, float]:
        """Algorithm 1: S_init one-step unrolls, each from a freshly initialised base model."""
        if self.init_steps == 0:
            return {}
        factory = self.context.model_factory
        if factory is None:
            raise ValueError("AdaLFL's offline initialisation needs `model_factory` in the TrainContext.")
        opt = self.context.optimizer
        total, skipped = 0.0, 0
        for _ in range(self.init_steps):
            fresh = factory().to(self.context.device)
            fresh.train(self.context.model.training)
            fresh_opt = type(opt)(fresh.parameters(), **_group_hyper(opt))
            diffopt = DifferentiableOptimizer(fresh_opt, fresh)
            batch = next(self.context.train_batches)
            _, _, scalars, meta_grads = self._meta_step(fresh, diffopt, batch, self._meta_batch(batch), ratio=False)
            self._apply_meta_gradient(meta_grads, scalars)
            skipped += int(scalars["meta_skipped"])
            total += float(scalars["meta_loss"])
        self.skipped_meta_steps = 0
        return {"meta_loss": total / self.init_steps, "skipped_meta_steps": float(skipped)}

    def step(self, batch: Batch) -> dict[str, Tensor]:
        assert self._diffopt is not None, "bind() first"
        ratio = self.grad_ratio_every > 0 and self.steps % self.grad_ratio_every == 0
        if not self.online:
            scalars = self._frozen_step(batch, ratio=ratio)
        else:
            new_params, new_state, scalars, meta_grads = self._meta_step(
                self.context.model, self._diffopt, batch, self._meta_batch(batch), ratio=ratio
            )
            self._apply_meta_gradient(meta_grads, scalars)
            self._diffopt.commit(new_params, new_state)  # θ' is the base update kept
        self.steps += 1
        return scalars

    def _frozen_step(self, batch: Batch, *, ratio: bool) -> dict[str, Tensor]:
        """An ordinary step with the (now fixed) learned loss: backward and ``optimizer.step()``."""
        x, y = batch
        model, optimizer = self.context.model, self.context.optimizer
        optimizer.zero_grad(set_to_none=True)
        z = model(x)
        m = self._checked_loss(z, y)
        scalars: dict[str, Tensor] = {"loss": m.detach()}
        if ratio:
            params = [p for p in model.parameters() if p.requires_grad]
            ce = torch.autograd.grad(self.task_loss(z, y), params, retain_graph=True)
            m.backward()
            scalars["grad_norm_ratio"] = _norm(p.grad for p in params) / _norm(ce).clamp_min(1e-30)
        else:
            m.backward()
        self.context.collective.mean_grads_(model)
        optimizer.step()
        return scalars

    def snapshot(self) -> dict[str, object]:
        return self.loss.curves()

    def state_dict(self) -> StateDict:
        return {
            "loss": self.loss.state_dict(),
            "loss_config": self.loss.config(),
            "meta_optimizer": self.meta_optimizer.state_dict(),
            "steps": self.steps,
            "skipped_meta_steps": self.skipped_meta_steps,
        }

    def load_state_dict(self, state: StateDict) -> None:
        self.loss.load_state_dict(state["loss"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        self.steps = int(state["steps"])
        self.skipped_meta_steps = int(state["skipped_meta_steps"])


def _norm(tensors: Iterable[Tensor]) -> Tensor:
    return torch.sqrt(sum((t.detach().double() ** 2).sum() for t in tensors))  # type: ignore[arg-type]


def _group_hyper(opt: Optimizer) -> dict[str, object]:
    """The first param group's hyper-parameters (current LR included), to build a fresh optimiser."""
    group = opt.param_groups[0]
    return {k: v for k, v in group.items() if k in opt.defaults and k != "params"}


