"""AdaLFL (Raymond, Chen, Xue, Zhang, "Meta-Learning Adaptive Loss Functions", 2023): a learned loss
fitted offline (Alg. 1) and adapted online after every base step (Alg. 2); ML3 (Bechtle et al., ICPR
2021) is its offline half.

One concern: the :class:`AdaLFL` method object, usable in any training loop — its exact one-step
meta-gradient, the amortised and approximate variants, the learned learning rate, the offline
initialisation and its state. It is long because the step is; the trainer's adapter is
:class:`adaloss.learners.AdaLFLLearner`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from tqdm.auto import tqdm

from adaloss._validation import check_choice, check_int, check_positive
from adaloss.data.batches import apply_model, cycle, move_to, split_batch
from adaloss.distributed import Collective, LocalCollective, ProcessGroupCollective
from adaloss.functional.clip import clip_by_global_norm, clip_by_global_norm_vjp, global_norm
from adaloss.functional.meta import (
    FactoredLinear,
    LinearRecord,
    call_at,
    capture_rng,
    model_forward_difference,
    model_jvp,
)
from adaloss.losses.network import LossGradCache, LossNetwork
from adaloss.methods.base import TrainingDiverged, group_hyperparameters, loss_step
from adaloss.methods.differentiable import DifferentiableOptimizer
from adaloss.typing import BatchForward, BatchTarget, Criterion, Params, StateDict, Task

__all__ = ["INIT_STEPS", "META_GRADIENTS", "AdaLFL", "ExtraLoss", "MetaGradient", "MetaOptimizerFactory",
           "task_loss_for"]

#: offline initialisation unrolls S_init of Algorithm 1 (the paper's 2500)
INIT_STEPS = 2500

MetaOptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
#: ``extra_loss(outputs, batch) -> scalar`` added to the learned loss in the base step (e.g. a regulariser)
ExtraLoss = Callable[[Tensor, Any], Tensor]


#: how the model's Jacobian-vector product of the meta-gradient is computed (see :class:`AdaLFL`)
MetaGradient = Literal["exact", "double_backward", "forward_difference"]
META_GRADIENTS: tuple[str, ...] = ("exact", "double_backward", "forward_difference")


@dataclass
class _Micro:
    """What the meta-gradient reuses from the base forward of one (micro-)batch."""

    inputs: Any
    y: Tensor
    z: Tensor
    cache: LossGradCache
    rng: tuple[Tensor, Tensor | None] | None
    s_leaf: Tensor | None
    through: list[Tensor] | None
    record: LinearRecord | None


@dataclass
class _BaseGradient:
    """The base gradient of one step (the mean over its micro-batches) and what each left behind."""

    grads: list[Tensor]
    scalars: dict[str, Tensor]
    micro: list[_Micro]


def task_loss_for(task: Task) -> Criterion:
    """The meta-objective L_T: cross-entropy for classification, squared error for regression."""
    return F.cross_entropy if task == "classification" else F.mse_loss


class AdaLFL:
    """Online loss-function learning (Raymond et al., "Meta-Learning Adaptive Loss Functions").

    Holds a learned loss ``M_φ`` (:class:`~adaloss.losses.LossNetwork`) for ``model`` and
    ``optimizer``. :meth:`step` replaces ``loss.backward(); optimizer.step()``: it takes the base
    step θ' = U(θ, ∇_θ M_φ) with the optimiser's own update (SGD with momentum / Nesterov /
    weight decay, Adam, AdamW; its state carried as ``torch.optim`` carries it, the current LR of
    a schedule applied), moves φ along the exact one-step meta-gradient ∇_φ L_T(f_θ'(x_meta))
    (Alg. 2) and writes θ' and the optimiser state back into ``model`` and ``optimizer``.
    :meth:`initialize` is Alg. 1, the offline initialisation from freshly initialised models.

    Example::

        adalfl = adaloss.AdaLFL(model, optimizer)
        adalfl.initialize(lambda: Net(), train_loader, valid_loader, steps=1000)
        for (batch, meta_batch) in zip(train_loader, itertools.cycle(valid_loader)):
            stats = adalfl.step(batch, meta_batch)   # instead of loss.backward(); optimizer.step()
            scheduler.step()

    The cost of a step (measured by ``benchmarks/step_cost.py``): an exact meta step costs a few
    cross-entropy steps (the base forward's outputs are recorded and reused by the model's
    Jacobian-vector product; the loss network's derivatives are closed-form); with
    ``meta_every=k`` the k − 1 steps between meta steps cost about one cross-entropy step each.

    Forward passes and model state: the base forward on the training batch is the only one that
    updates BatchNorm running statistics; the meta forward at θ' and the model's Jacobian-vector
    product use cloned buffers in the model's train mode. The Jacobian-vector product replays the
    base forward's dropout masks (same RNG state), so φ follows the step actually taken.

    Args:
        model: the base model; its parameters stay the single source of truth between steps.
        optimizer: its ``torch.optim.SGD``, ``Adam`` or ``AdamW`` (the one the user steps today).
        loss: the learned loss (default: a fresh :class:`~adaloss.losses.LossNetwork` for ``task``).
        meta_optimizer: φ's optimiser — an optimiser over ``loss.parameters()`` or a factory
            ``params -> Optimizer`` (default: Adam with ``meta_lr``, as in the authors' code).
        meta_lr: the learning rate of the default meta-optimiser (Adam).
        task: ``"classification"`` (meta-objective cross-entropy) or ``"regression"`` (squared error).
        online: adapt φ after every base step (``False``: the loss stays as it is: ML3's offline method).
        forward: ``forward(model, batch) -> outputs`` for batches that are not ``(inputs, targets)``
            pairs (dict batches, extra model arguments); it then receives the whole batch.
        target: ``target(batch) -> targets`` (default ``batch[1]``).
        max_grad_norm: clip the base gradient to this global 2-norm inside the update, exactly as
            ``torch.nn.utils.clip_grad_norm_`` would before ``optimizer.step()``; the meta-gradient
            is differentiated through the clipping.
        extra_loss: ``extra_loss(outputs, batch) -> scalar`` added to the learned loss in the base
            step (a regulariser, an auxiliary term). It does not depend on φ, so it changes the
            base gradient but not the form of the meta-gradient.
        grad_ratio_every: every this many steps also return ``grad_norm_ratio`` =
            ‖∇_θ M_φ‖ / ‖∇_θ L_T‖, the implicit learning-rate effect (one extra backward, so the
            default, 100, samples it once per log row of the trainer's default ``log_every``; 0 = never).
        learn_lr: meta-learn the base learning rate too (the journal version's Algorithms 3–4, as
            reconstructed here): ``"global"`` one log-multiplier ρ, ``"per_group"`` one per param
            group of ``optimizer``; the step uses ``lr · exp(ρ)`` (the user's LR schedule still
            applies), fitted in :meth:`initialize` and adapted after every step along the exact
            one-step meta-gradient ``∂L/∂ρ = ⟨∇_θ' L, θ' − θ⟩`` (every supported update is linear
            in its LR). ``"off"`` (default): the optimiser's LR as it is.
        lr_meta_optimizer: factory for ρ's optimiser (default: Adam with ``lr_meta_lr``).
        lr_meta_lr: the learning rate of ρ's default optimiser (Adam).
        meta_gradient: how the model's Jacobian-vector product ``J_θ v`` is computed.
            ``"exact"`` (default): forward-mode autodiff (its primal half repeats the base forward);
            ``"double_backward"``: also exact, as the derivative of the base backward ``J^T s``
            with respect to ``s`` along ``v`` (reverse-over-reverse): no repeated forward and the
            base forward's own dropout masks and BatchNorm statistics, but the base graph stays
            alive through the meta pass (memory), and convolutions' double backward is slow on
            CPU — faster for matmul models, slower for conv nets (``benchmarks/step_cost.py``);
            ``"forward_difference"``: ``(f(θ + h v) − f(θ)) / h`` by one extra forward pass that
            reuses the base forward's outputs (cheaper, approximate; its fidelity is measured by
            ``benchmarks/step_cost.py``).
        meta_every: update φ on every ``meta_every``-th step only (amortised meta-updates); the
            steps between are plain base steps with the current learned loss (no meta batch, no
            meta forward, no Jacobian-vector product: about the cost of a cross-entropy step).
            1 (default): every step, the paper's method. See :attr:`meta_due`.
        initialized: the loss is already fitted (loaded, or deliberately used from its random
            initialisation); otherwise the first :meth:`step` before :meth:`initialize` warns.
        collective: how gradients are averaged over data-parallel ranks. Default: over the process
            group of a ``DistributedDataParallel`` ``model`` (which is unwrapped: its reducer only hooks
            ``backward()``, which this step never calls, so AdaLFL does the one all-reduce per
            gradient itself, and broadcasts rank 0's buffers before each base forward as DDP does), or
            over the default process group when one is initialised with more than one rank; else one
            process. Whenever there are several ranks, rank 0's φ, ρ and meta-optimiser state (and the
            model, if not DDP-wrapped) are broadcast at construction and by :meth:`load_state_dict`.
            Pass ``LocalCollective()`` to train each rank on its own.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        *,
        loss: LossNetwork | None = None,
        meta_optimizer: Optimizer | MetaOptimizerFactory | None = None,
        meta_lr: float = 1e-3,
        task: Literal["classification", "regression"] = "classification",
        online: bool = True,
        forward: BatchForward | None = None,
        target: BatchTarget | None = None,
        max_grad_norm: float | None = None,
        extra_loss: ExtraLoss | None = None,
        grad_ratio_every: int = 100,
        learn_lr: Literal["off", "global", "per_group"] = "off",
        lr_meta_optimizer: MetaOptimizerFactory | None = None,
        lr_meta_lr: float = 1e-3,
        meta_gradient: MetaGradient = "exact",
        meta_every: int = 1,
        initialized: bool = False,
        collective: Collective | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Expected `model` to be a torch.nn.Module, but got {type(model).__name__}.")
        self.task: Task = check_choice("task", task, ("classification", "regression"))
        self.loss = loss if loss is not None else LossNetwork(task=task)
        if not isinstance(self.loss, LossNetwork):
            raise TypeError(f"Expected `loss` to be an adaloss.LossNetwork, but got {type(self.loss).__name__}.")
        if self.loss.task != task:
            raise ValueError(f"Expected `loss` to be a loss network for task={task!r}, but got one for "
                             f"{self.loss.task!r}.")
        shared = {id(p) for p in self.loss.parameters()} & {id(p) for p in model.parameters()}
        if shared:
            raise ValueError("Expected `loss` to be kept out of `model` (its parameters are φ, trained by the "
                             f"meta-optimiser), but {len(shared)} of its parameters are also parameters of `model`; "
                             "do not register the loss network as a submodule of the model.")
        #: a DistributedDataParallel wrapper's module: its reducer only hooks ``backward()``, which the
        #: functional step never runs, so AdaLFL averages over the wrapper's process group itself
        self.ddp = model if isinstance(model, DistributedDataParallel) else None
        model = cast(nn.Module, model.module) if self.ddp is not None else model
        self.model = model
        self.optimizer = optimizer
        self.diffopt = DifferentiableOptimizer(optimizer, model)
        self.meta_optimizer = _meta_optimizer(meta_optimizer, self.loss, check_positive("meta_lr", meta_lr))
        self.online = bool(online)
        self.forward = forward
        self.target = target
        self.max_grad_norm = None if max_grad_norm is None else float(check_positive("max_grad_norm", max_grad_norm))
        self.extra_loss = extra_loss
        self.grad_ratio_every = check_int("grad_ratio_every", grad_ratio_every, minimum=0)
        self.initialized = bool(initialized)
        self.learn_lr = check_choice("learn_lr", learn_lr, ("off", "global", "per_group"))
        self.meta_gradient = check_choice("meta_gradient", meta_gradient, META_GRADIENTS)
        self.meta_every = check_int("meta_every", meta_every, minimum=1)
        n_groups = len(optimizer.param_groups)
        #: ρ: the learned log-multiplier of the base LR, one (global) or one per param group
        self.log_lr = nn.Parameter(torch.zeros(1 if self.learn_lr == "global" else n_groups, dtype=torch.float64))
        lr_factory = lr_meta_optimizer or _adam(check_positive("lr_meta_lr", lr_meta_lr))
        self.lr_meta_optimizer = lr_factory([self.log_lr])
        self.collective = collective if collective is not None else _default_collective(self.ddp)
        self.task_loss = task_loss_for(self.task)
        self.steps = 0
        self.skipped_meta_steps = 0
        #: unrolls of :meth:`initialize` done so far, and the non-finite meta-gradients skipped in them
        self.init_done = 0
        self.init_skipped = 0
        self.init_loss_sum = 0.0
        self._warned = False
        self.to(self._device())
        self._broadcast_state(model=self.ddp is None)

    # ------------------------------------------------------------------ device
    def _device(self) -> torch.device:
        first = next(self.model.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    def to(self, device: torch.device | str) -> AdaLFL:
        """Move the loss network and φ's optimiser state to ``device`` (the model's device; the
        model itself is the user's to move; :meth:`step` also follows a moved model). Returns ``self``."""
        device = torch.device(device)
        self.loss.to(device)
        for state in self.meta_optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, Tensor) and key != "step":  # Adam keeps ``step`` on the CPU
                    state[key] = value.to(device)
        return self

    def _follow(self, device: torch.device) -> None:
        """Keep the loss network where the model is (the user may move the model after building us)."""
        first = next(self.loss.parameters(), None)
        if first is not None and first.device != device:
            self.to(device)

    @property
    def criterion(self) -> nn.Module:
        """The learned loss the base model is trained with."""
        return self.loss

    @property
    def meta_due(self) -> bool:
        """Whether the next :meth:`step` updates φ (and so needs a meta batch): online, on every
        ``meta_every``-th step counting from the first."""
        return self.online and self.steps % self.meta_every == 0

    def lr_scale(self, optimizer: Optimizer | None = None) -> list[float] | None:
        """The learned factor ``exp(ρ)`` on each param group's LR (``None`` when ``learn_lr="off"``)."""
        if self.learn_lr == "off":
            return None
        groups = len((optimizer or self.optimizer).param_groups)
        scale = torch.exp(self.log_lr.detach()).tolist()
        return scale * groups if self.learn_lr == "global" else scale

    # ------------------------------------------------------------------ the one-step meta-gradient
    def _base_gradient(
        self, model: nn.Module, names: list[str], batches: list[Any], *, ratio: bool, keep: bool
    ) -> _BaseGradient:
        """The base forwards on ``batches`` (micro-batches of one step; usually one) and the mean of
        ``g = ∇_θ (M_φ + extra)`` over them for the trainable ``names``.

        ``M_φ`` and ``s = ∂M_φ/∂z`` come in closed form from the loss network; ``g = J_θᵀ s`` is one
        backward through the model (plus the extra loss's own gradient). With ``n`` micro-batches
        each contributes ``∇_θ (M_φ + extra) / n``, as ``(loss / n).backward()`` in an accumulation
        loop does. ``keep``: also keep what the meta-gradient needs (the loss network's cache, the
        RNG state before the forward, the recorded primal outputs of a single batch and, for
        ``double_backward``, ``J_θᵀ s`` as a differentiable function of ``s``).
        """
        forward, n = self.forward, len(batches)
        params = dict(model.named_parameters())
        param_list = [params[name] for name in names]
        if self.ddp is not None and self.ddp.broadcast_buffers and model is self.model:
            # what DDP's forward does before each forward pass: every rank takes rank 0's buffers
            self.collective.broadcast_([b for b in model.buffers() if b.is_floating_point()])
        reverse = keep and self.meta_gradient == "double_backward"
        g_list: list[Tensor] = []
        ce_list: list[Tensor] = []
        sums: dict[str, Tensor] = {}
        micro: list[_Micro] = []
        for batch in batches:
            inputs, y = split_batch(model, batch, forward, self.target)
            rng = capture_rng(y.device) if keep else None
            # the record holds a batch's activations until the meta pass: not for micro-batches
            record = LinearRecord() if keep and n == 1 and self.meta_gradient == "exact" else None
            with record if record is not None else contextlib.nullcontext():
                z = apply_model(model, inputs, forward)  # the one forward that updates BatchNorm statistics
            m, s, cache = self.loss.value_and_grad(z, y, mixed=keep)
            self._check_finite(m)
            values = {"loss": m}
            direct: list[Tensor | None] = [None] * len(names)
            if self.extra_loss is not None:  # autograd for the user's term: its z-part joins s, the rest is direct
                zb = z.detach().requires_grad_(True)
                extra = self.extra_loss(zb, batch)
                values["extra_loss"] = extra.detach()
                s_extra, *rest = torch.autograd.grad(extra, [zb, *param_list], allow_unused=True)
                direct = list(rest)
                if s_extra is not None:
                    s = s + s_extra
            s = s.to(z.dtype)
            if n > 1:
                s = s / n
                direct = [None if d is None else d / n for d in direct]
            s_leaf = s.requires_grad_(True) if reverse else s
            through = torch.autograd.grad(z, param_list, grad_outputs=s_leaf, create_graph=reverse,
                                          retain_graph=reverse or ratio)
            g = [t.detach() if d is None else t.detach() + d for t, d in zip(through, direct)]
            g_list = g if not g_list else [a.add_(b) for a, b in zip(g_list, g)]
            if ratio:  # logged from this rank's shard
                ce = torch.autograd.grad(self.task_loss(z, y) / n, param_list, retain_graph=reverse)
                ce_list = list(ce) if not ce_list else [a.add_(b) for a, b in zip(ce_list, ce)]
            for key, value in values.items():
                sums[key] = sums[key] + value if key in sums else value
            if keep:
                micro.append(_Micro(inputs, y, z.detach(), cache, rng, s_leaf if reverse else None,
                                    list(through) if reverse else None, record))
        scalars = {key: value / n for key, value in sums.items()} if n > 1 else sums
        if ratio:
            scalars["grad_norm_ratio"] = (global_norm(g_list, dtype=torch.float64)
                                          / global_norm(ce_list, dtype=torch.float64).clamp_min(1e-30))
        return _BaseGradient(g_list, scalars, micro)

    def _meta_step(
        self, model: nn.Module, diffopt: DifferentiableOptimizer, batches: list[Any], meta_batch: Any, *, ratio: bool
    ) -> tuple[Params, dict[str, dict[str, Tensor]], dict[str, Tensor], tuple[Tensor, ...]]:
        """One base step θ → θ' with the learned loss on ``batches`` (micro-batches; usually one), and
        the exact ∇_φ L_T(f_θ'(x_meta)) (with ``learn_lr``, also ∇_ρ, appended as the last meta-gradient)."""
        forward, sync = self.forward, self.collective
        lr_scale = self.lr_scale(diffopt.optimizer)
        names = diffopt.names
        base = self._base_gradient(model, names, batches, ratio=ratio, keep=True)
        scalars = base.scalars
        trainable = set(names)
        params = {n: p.detach() for n, p in model.named_parameters() if n in trainable}
        g_list = base.grads
        sync.mean_(g_list)  # data parallel: every rank takes the global-batch base gradient
        raw = g_list
        if self.max_grad_norm is not None:
            g_list, norm = clip_by_global_norm(raw, self.max_grad_norm)
            scalars["grad_norm"] = norm.detach()
        grads = dict(zip(names, g_list))
        with torch.no_grad():
            new_params, new_state = diffopt.update(params, grads, lr_scale=lr_scale)

        meta_inputs, ym = split_batch(model, meta_batch, forward, self.target)
        theta1 = {n: t.detach().requires_grad_(True) for n, t in new_params.items()}
        buffers = {k: b.clone() for k, b in model.named_buffers()}
        # v = (∂θ'/∂g)ᵀ ∇θ'L; where that Jacobian is one scalar c for all parameters (SGD), J v = c·J ∇θ'L
        # is taken instead, so no parameter-sized v is formed (not for the forward difference: its one-sided
        # step would then go along ±∇θ'L by c's sign, not along the update's own direction)
        exact = self.max_grad_norm is None and self.meta_gradient != "forward_difference"
        factor = diffopt.vjp_factor(lr_scale=lr_scale) if exact else None
        # then wide linear layers keep ∇θ'L as factors δᵀa (FactoredLinear): one process, the JVP path
        factoring = (factor is not None and self.meta_gradient == "exact" and sync.world_size == 1
                     and lr_scale is None and all(mb.through is None for mb in base.micro))
        rows = sum(len(mb.y) for mb in base.micro) / max(len(ym), 1) if factoring else 1.0
        factored_calls = FactoredLinear(theta1, rows_ratio=rows) if factoring else None
        with factored_calls if factored_calls is not None else contextlib.nullcontext():
            meta_loss = self.task_loss(call_at(model, theta1, buffers, meta_inputs, forward), ym)
        kept = [out for _, _, out in factored_calls.calls] if factored_calls is not None else []
        out_grads = torch.autograd.grad(meta_loss, [*(theta1[n] for n in names), *kept], allow_unused=bool(kept))
        factors: dict[str, Any] = {}
        if factored_calls is not None:  # ∇θ'L: dense tensors, and δᵀa factors for the factored weights
            g_meta_named, factors = factored_calls.gradients(dict(zip(names, out_grads)), out_grads[len(names):])
            g_meta_named = {n: g_meta_named.get(n, torch.zeros_like(theta1[n])) for n in names if n not in factors}
        else:
            g_meta_named = dict(zip(names, out_grads))
        sync.mean_(list(g_meta_named.values()))  # ∇θ' of the global meta batch: the same v on every rank
        scalars["meta_loss"] = meta_loss.detach()
        if factor is not None:
            v = g_meta_named
        else:
            v = diffopt.vjp_grads(params, grads, g_meta_named, lr_scale=lr_scale)
            if self.max_grad_norm is not None:  # pull v back through the clipping as well
                v = dict(zip(names, clip_by_global_norm_vjp(raw, [v[n] for n in names], self.max_grad_norm)))
        meta_grads: tuple[Tensor, ...] = ()
        for mb in base.micro:  # ∂/∂φ of the mean over micro-batches: one Jacobian-vector product each
            if mb.through is not None:  # J v = ∂⟨J^T s, v⟩/∂s; frees the kept graphs
                assert mb.s_leaf is not None
                (u,) = torch.autograd.grad(mb.through, mb.s_leaf, grad_outputs=[v[n] for n in names])
            elif self.meta_gradient == "exact":
                u = model_jvp(model, params, v, mb.inputs, rng_state=mb.rng, forward=forward, device=mb.y.device,
                              record=mb.record, factored=factors)
            else:
                u = model_forward_difference(model, params, v, mb.inputs, mb.z, rng_state=mb.rng, forward=forward,
                                             device=mb.y.device)
            if factor is not None:
                u = u * factor
            part = self.loss.mixed_grad(mb.cache, u)
            meta_grads = part if not meta_grads else tuple(a.add_(b) for a, b in zip(meta_grads, part))
        if len(base.micro) > 1:
            meta_grads = tuple(g / len(base.micro) for g in meta_grads)
        # ∇φ is a sum over the training rows (through g): each rank holds its shard's share
        sync.mean_(meta_grads)
        if lr_scale is not None:  # θ' − θ = −lr·D(g, s) for every supported update, so ∂θ'/∂ρ = θ' − θ
            meta_grads = (*meta_grads, self._lr_meta_gradient(diffopt, params, new_params, g_meta_named))
        return new_params, new_state, scalars, meta_grads

    def _plain_step(self, batches: list[Any], *, ratio: bool) -> dict[str, Tensor]:
        """A base step with the current learned loss and no meta-update (``meta_every > 1``): the
        closed-form ``∇_z M_φ``, one backward, ``optimizer.step()`` (learned LR, clipping and the
        extra loss applied as in a meta step)."""
        names = self.diffopt.names
        base = self._base_gradient(self.model, names, batches, ratio=ratio, keep=False)
        g_list = base.grads
        self.collective.mean_(g_list)
        if self.max_grad_norm is not None:
            g_list, norm = clip_by_global_norm(g_list, self.max_grad_norm)
            base.scalars["grad_norm"] = norm.detach()
        params = dict(self.model.named_parameters())
        for n, g in zip(names, g_list):
            params[n].grad = g
        try:
            with self._learned_lr():
                self.optimizer.step()
        finally:
            self.optimizer.zero_grad(set_to_none=True)
        return base.scalars

    def _lr_meta_gradient(self, diffopt: DifferentiableOptimizer, params: Params, new_params: Params,
                          g_meta: Params) -> Tensor:
        """``∂L/∂ρ_k = Σ_{p in group k} ⟨∇_θ' L, θ'_p − θ_p⟩`` (float64; one entry per ρ)."""
        group_of = diffopt.group_index
        grad = torch.zeros_like(self.log_lr)
        for n, g in g_meta.items():
            dot = (g.double() * (new_params[n].double() - params[n].detach().double())).sum()
            k = 0 if self.learn_lr == "global" else group_of[n]
            grad[k] += dot.to(grad.device)
        return grad

    def _checked_loss(self, z: Tensor, y: Tensor) -> Tensor:
        m = self.loss(z, y)
        self._check_finite(m)
        return m

    def _check_finite(self, m: Tensor) -> None:
        if not torch.isfinite(m):
            raise TrainingDiverged(
                f"The learned loss became {m.item()} at step {self.steps} (non-finite loss-network output); "
                "the last checkpoint is kept."
            )

    def _apply_meta_gradient(self, meta_grads: tuple[Tensor, ...], scalars: dict[str, Tensor]) -> None:
        finite = bool(torch.stack([torch.isfinite(g).all() for g in meta_grads]).all())  # one sync, not one per tensor
        scalars["meta_skipped"] = torch.tensor(0.0 if finite else 1.0)
        if not finite:
            self.skipped_meta_steps += 1
            return
        phi = list(self.loss.parameters())
        for p, g in zip(phi, meta_grads):
            p.grad = g
        self.meta_optimizer.step()
        self.meta_optimizer.zero_grad(set_to_none=True)
        if self.learn_lr != "off":
            self.log_lr.grad = meta_grads[len(phi)].to(self.log_lr)
            self.lr_meta_optimizer.step()
            self.lr_meta_optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ public
    def step(self, batch: Any, meta_batch: Any = None, *, accumulate: int = 1) -> dict[str, Tensor]:
        """One base step on ``batch`` with the learned loss and, online, one update of φ on ``meta_batch``.

        Replaces ``loss.backward(); optimizer.step()`` (and ``zero_grad``): gradients are not
        left in ``.grad``. Step an LR scheduler after it as usual. Batches are moved to the
        model's device.

        Args:
            batch: a training batch, ``(inputs, targets)`` unless ``forward``/``target`` say otherwise.
            meta_batch: a batch the meta-objective is measured on — the paper draws it from a
                validation split; the training batch itself also works. Required on the steps
                that update φ (:attr:`meta_due`: every step with ``meta_every=1``); ignored on the
                others and with ``online=False``.
            accumulate: gradient accumulation: ``batch`` is then a sequence of this many micro-batches,
                and the base gradient is the mean of their gradients, as ``(loss / n).backward()`` per
                micro-batch would give it (with equal sizes: the gradient on their concatenation); the
                meta-gradient is exact through it, one micro-batch's activations alive at a time
                (one extra forward each for the Jacobian-vector products). Not with
                ``meta_gradient="double_backward"`` (it keeps every micro-batch's graph) or ``online=False``.

        Returns:
            Detached scalar tensors (no device synchronisation): ``loss`` (the learned loss),
            ``meta_loss`` (L_T at θ') and ``meta_skipped`` (1 when a non-finite meta-gradient was
            skipped) on meta steps, and ``extra_loss``, ``grad_norm`` (before clipping),
            ``grad_norm_ratio`` when on.
        """
        if not self.initialized and not self._warned:
            self._warned = True
            warnings.warn(
                "AdaLFL.step: the loss network was never initialised (Algorithm 1), so training starts from a "
                "random loss. Call adalfl.initialize(model_factory, train_batches, valid_batches) first, load a "
                "fitted loss (load_state_dict), or pass initialized=True to start from this loss on purpose.",
                UserWarning, stacklevel=2,
            )
        device = self._device()
        if torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.float16:
            raise ValueError(
                "AdaLFL.step under float16 autocast is not supported: its functional update has no GradScaler "
                "path, so an fp16 gradient can underflow or overflow unscaled. Use dtype=torch.bfloat16 (the loss "
                "network and the meta-gradient stay float32) or float32."
            )
        accumulate = check_int("accumulate", accumulate, minimum=1)
        if accumulate > 1:
            if not self.online or self.meta_gradient == "double_backward":
                raise ValueError("`accumulate` > 1 needs online AdaLFL and meta_gradient 'exact' or "
                                 f"'forward_difference', but got online={self.online}, "
                                 f"meta_gradient={self.meta_gradient!r}.")
            if isinstance(batch, (str, bytes, dict)) or not hasattr(batch, "__len__") or len(batch) != accumulate:
                got = len(batch) if hasattr(batch, "__len__") else type(batch).__name__
                raise ValueError(f"Expected `batch` to be a sequence of accumulate={accumulate} micro-batches, "
                                 f"but got {got}.")
        self._follow(device)
        batches = [move_to(b, device) for b in batch] if accumulate > 1 else [move_to(batch, device)]
        batch = batches[0]
        ratio = self.grad_ratio_every > 0 and self.steps % self.grad_ratio_every == 0
        if not self.online:
            scalars = self._frozen_step(batch, ratio=ratio)
        elif not self.meta_due:
            scalars = self._plain_step(batches, ratio=ratio)
        else:
            if meta_batch is None:
                raise ValueError("Expected `meta_batch` (a batch to measure the meta-objective on, e.g. from a "
                                 "validation split, or the training batch itself) for online AdaLFL, but got None "
                                 f"at step {self.steps} (a meta step: `adalfl.meta_due` is True).")
            new_params, new_state, scalars, meta_grads = self._meta_step(
                self.model, self.diffopt, batches, move_to(meta_batch, device), ratio=ratio
            )
            self._apply_meta_gradient(meta_grads, scalars)
            self.diffopt.commit(new_params, new_state)  # θ' is the base update kept
        if self.learn_lr != "off":
            scalars["lr_scale"] = torch.exp(self.log_lr.detach()).mean()
        if torch.is_autocast_enabled(device.type):
            # autocast caches its low-precision copies of the parameters until its context exits, and θ was
            # just written in place: with a context around several steps, the next forward would use stale copies
            torch.clear_autocast_cache()
        self.steps += 1
        return scalars

    def _frozen_step(self, batch: Any, *, ratio: bool) -> dict[str, Tensor]:
        """An ordinary step with the (now fixed) learned loss: backward and ``optimizer.step()``."""
        if self.max_grad_norm is not None or self.extra_loss is not None:
            raise ValueError("`max_grad_norm` and `extra_loss` apply to online AdaLFL; with online=False clip and "
                             "add terms in your own loop around adalfl.criterion.")
        checked = self._checked_loss
        with self._learned_lr():
            return loss_step(self.model, self.optimizer, lambda z, y: checked(z, y), batch, forward=self.forward,
                             target=self.target, collective=self.collective,
                             reference=self.task_loss if ratio else None)

    @contextlib.contextmanager
    def _learned_lr(self) -> Iterator[None]:
        """``optimizer.step()`` inside takes the learned LR factor; the user's schedule keeps its own value."""
        scale = self.lr_scale()
        saved = [group["lr"] for group in self.optimizer.param_groups]
        if scale is not None:
            for group, factor in zip(self.optimizer.param_groups, scale):
                group["lr"] = group["lr"] * factor
        try:
            yield
        finally:
            for group, lr in zip(self.optimizer.param_groups, saved):
                group["lr"] = lr

    def initialize(
        self,
        model_factory: Callable[[], nn.Module],
        batches: Iterable[Any],
        meta_batches: Iterable[Any] | None = None,
        *,
        steps: int = INIT_STEPS,
        optimizer_factory: Callable[[nn.Module], Optimizer] | None = None,
        progress: bool = False,
        on_unroll: Callable[[int], None] | None = None,
    ) -> dict[str, float]:
        """Algorithm 1: ``steps`` one-step unrolls of φ, each from a freshly initialised base model.

        Resumable: :meth:`state_dict` records the unrolls done, so after ``load_state_dict`` of a
        state taken part-way (e.g. from ``on_unroll``) the same call runs only the remaining ones.

        Args:
            model_factory: builds a freshly initialised base model (e.g. the model's class).
            batches: training batches, any iterable; a re-iterable (DataLoader) is cycled epoch
                after epoch, a one-shot iterator must last ``steps`` batches.
            meta_batches: batches for the meta-objective (e.g. a validation DataLoader), cycled
                alike; ``None``: the training batch of the same unroll.
            steps: number of unrolls S_init.
            optimizer_factory: the optimiser of each fresh model (default: ``optimizer``'s type and
                param groups with their current hyper-parameters, the fresh model's parameters
                matched to the groups by name, and those frozen in ``model`` frozen too).
            progress: show a progress bar with the running meta-loss.
            on_unroll: called with the number of unrolls done after each one (e.g. to checkpoint
                ``state_dict()`` every so many).

        Returns:
            ``meta_loss`` (mean over all unrolls) and ``skipped_meta_steps`` (non-finite ones skipped).
        """
        steps = check_int("steps", steps, minimum=0)
        if self.init_done >= steps:
            self.initialized = True
            return {} if steps == 0 else {"meta_loss": self.init_loss_sum / max(self.init_done, 1),
                                          "skipped_meta_steps": float(self.init_skipped)}
        train_iter = cycle(batches, name="batches")
        meta_iter = cycle(meta_batches, name="meta_batches") if meta_batches is not None else None
        device = self._device()
        self._follow(device)
        if optimizer_factory is None:
            optimizer_factory = self._mirrored_optimizer
        start = self.init_done
        bar = tqdm(range(start, steps), desc="AdaLFL init", disable=not progress, leave=False, dynamic_ncols=True,
                   initial=start, total=steps)
        for i in bar:
            fresh = model_factory().to(device)
            fresh.train(self.model.training)
            diffopt = DifferentiableOptimizer(optimizer_factory(fresh), fresh)
            batch = move_to(next(train_iter), device)
            meta = move_to(next(meta_iter), device) if meta_iter is not None else batch
            _, _, scalars, meta_grads = self._meta_step(fresh, diffopt, [batch], meta, ratio=False)
            self._apply_meta_gradient(meta_grads, scalars)
            self.init_skipped += int(scalars["meta_skipped"])
            self.init_loss_sum += float(scalars["meta_loss"])
            self.init_done = i + 1
            if progress and (i % 10 == 0 or i == steps - 1):
                bar.set_postfix(meta_loss=f"{self.init_loss_sum / self.init_done:.4g}", refresh=False)
            if on_unroll is not None:
                on_unroll(self.init_done)
        bar.close()
        self.skipped_meta_steps = 0
        self.initialized = True
        return {"meta_loss": self.init_loss_sum / steps, "skipped_meta_steps": float(self.init_skipped)}

    def _mirrored_optimizer(self, fresh: nn.Module) -> Optimizer:
        """``optimizer``'s type, param groups and current hyper-parameters over ``fresh``'s parameters,
        matched by name (per-group weight decay or LR carry over; group indices stay, for
        ``learn_lr="per_group"``); a parameter not trained in ``model`` is frozen in ``fresh``."""
        opt = self.optimizer
        known = {name for name, _ in self.model.named_parameters()}
        named = list(fresh.named_parameters())
        stray = [name for name, _ in named if name not in known]
        if stray:
            raise ValueError(
                f"`model_factory` built a model with parameters {stray[:5]} that `model` does not have, so "
                "`optimizer`'s param groups cannot be mirrored onto it; build the same architecture or pass "
                "`optimizer_factory=`."
            )
        hyper = [group_hyperparameters(opt, i) for i in range(len(opt.param_groups))]
        groups: list[dict[str, Any]] = [{**h, "params": []} for h in hyper]
        index = self.diffopt.group_index
        for name, p in named:
            if name in index:
                groups[index[name]]["params"].append(p)
            else:
                p.requires_grad_(False)
        return type(opt)(groups, **hyper[0])

    def state_dict(self) -> StateDict:
        """φ, its optimiser and the counters (the model and base optimiser are the user's to save)."""
        return {
            "loss": self.loss.state_dict(),
            "loss_config": self.loss.config(),
            "meta_optimizer": self.meta_optimizer.state_dict(),
            "steps": self.steps,
            "skipped_meta_steps": self.skipped_meta_steps,
            "initialized": self.initialized,
            "init_done": self.init_done,
            "init_skipped": self.init_skipped,
            "init_loss_sum": self.init_loss_sum,
            **({"log_lr": self.log_lr.detach().clone(), "lr_meta_optimizer": self.lr_meta_optimizer.state_dict()}
               if self.learn_lr != "off" else {}),
        }

    def load_state_dict(self, state: StateDict) -> None:
        """Restore :meth:`state_dict` (also a checkpoint's ``learner`` entry of an AdaLFL run)."""
        self.loss.load_state_dict(state["loss"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        self.steps = int(state["steps"])
        self.skipped_meta_steps = int(state["skipped_meta_steps"])
        self.initialized = bool(state.get("initialized", True))
        self.init_done = int(state.get("init_done", 0))
        self.init_skipped = int(state.get("init_skipped", 0))
        self.init_loss_sum = float(state.get("init_loss_sum", 0.0))
        if self.learn_lr != "off":
            if "log_lr" not in state:
                raise ValueError("Expected the state to hold the learned LR (`log_lr`), since learn_lr="
                                 f"{self.learn_lr!r}, but it has none (saved with learn_lr='off').")
            with torch.no_grad():
                self.log_lr.copy_(state["log_lr"])
            self.lr_meta_optimizer.load_state_dict(state["lr_meta_optimizer"])
        self.to(self._device())
        self._broadcast_state(model=False)

    def _broadcast_state(self, *, model: bool) -> None:
        """Data parallel: rank 0's φ, ρ and meta-optimiser state on every rank (and, with ``model``,
        its parameters and buffers: nothing else synchronised a model that is not DDP-wrapped), so
        ranks seeded differently, or restored from different files, still take one trajectory."""
        if self.collective.world_size == 1:
            return
        tensors: list[Tensor] = [*self.loss.parameters(), self.log_lr]
        for opt in (self.meta_optimizer, self.lr_meta_optimizer):
            for entry in opt.state.values():
                tensors += [v for k, v in entry.items() if isinstance(v, Tensor) and k != "step"]
        if model:
            tensors += [*self.model.parameters(), *self.model.buffers()]
        with torch.no_grad():
            self.collective.broadcast_([t.data for t in tensors if t.is_floating_point()])


def _default_collective(ddp: DistributedDataParallel | None) -> Collective:
    """The wrapper's process group, else the default group when it has several ranks, else one process."""
    import torch.distributed as dist

    if ddp is not None:
        return ProcessGroupCollective(ddp.process_group)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return ProcessGroupCollective()
    return LocalCollective()


def _adam(lr: float) -> MetaOptimizerFactory:
    return lambda params: torch.optim.Adam(params, lr=lr)


def _meta_optimizer(given: Optimizer | MetaOptimizerFactory | None, loss: LossNetwork, lr: float) -> Optimizer:
    if given is None:
        return torch.optim.Adam(loss.parameters(), lr=lr)
    if isinstance(given, Optimizer):
        held = {id(p) for group in given.param_groups for p in group["params"]}
        if held != {id(p) for p in loss.parameters()}:
            raise ValueError("Expected `meta_optimizer` to hold exactly the parameters of `loss` (pass `loss=` "
                             "with the network it optimises, or a factory `params -> Optimizer`).")
        return given
    if callable(given):
        return given(loss.parameters())
    raise TypeError(f"Expected `meta_optimizer` to be a torch.optim.Optimizer or a factory params -> Optimizer, "
                    f"but got {type(given).__name__}.")
