"""A bridge between a ``torch.optim`` optimiser and its functional, differentiable update."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from adaloss.functional.optim import OptimState, adam, sgd
from adaloss.typing import Params

__all__ = ["DifferentiableOptimizer"]

_SUPPORTED: tuple[type[torch.optim.Optimizer], ...] = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


def _scalar(value: Any) -> Any:
    # torch accepts 1-element tensors for lr, betas and SGD's weight_decay; the functions take numbers
    return value.item() if isinstance(value, Tensor) else value


class DifferentiableOptimizer:
    """Wraps a torch.optim SGD/Adam/AdamW bound to a model; computes its next update functionally.

    :meth:`update` computes ``θ', s' = U(θ, g, s)`` with the optimiser's own hyper-parameters
    (read from its param groups at call time, so an LR schedule applies) and its own state, as
    :func:`adaloss.functional.sgd` / :func:`adaloss.functional.adam`, differentiable w.r.t. ``g``.
    :meth:`commit` writes ``θ'`` and ``s'`` back, so the trajectory is the one ``optimizer.step()``
    would have produced and an ordinary step, ``state_dict()`` or checkpoint continues from it.

    Parameters with ``requires_grad=False`` are not managed: they are left out of :attr:`names`
    and :meth:`params`, and passed through or skipped wherever they appear in a dict given here.

    Args:
        optimizer: a ``torch.optim.SGD``, ``Adam`` or ``AdamW`` (neither ``fused`` nor ``capturable``).
        model: the module whose trainable parameters ``optimizer`` holds; names are those of
            ``model.named_parameters()``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
        if type(optimizer) not in _SUPPORTED:
            names = [f"torch.optim.{cls.__name__}" for cls in _SUPPORTED]
            raise TypeError(
                f"Expected `optimizer` to be one of {names}, but got {type(optimizer).__module__}."
                f"{type(optimizer).__qualname__}."
            )
        group_of = {id(p): i for i, group in enumerate(optimizer.param_groups) for p in group["params"]}
        named = list(model.named_parameters())
        missing = [name for name, p in named if p.requires_grad and id(p) not in group_of]
        if missing:
            raise ValueError(
                "Expected every trainable parameter of `model` to be in `optimizer`, but got "
                f"{missing!r} missing from its param groups."
            )
        in_model = {id(p) for _, p in named}
        held = [p for group in optimizer.param_groups for p in group["params"]]
        foreign = [tuple(p.shape) for p in held if id(p) not in in_model]
        if foreign:
            raise ValueError(
                f"Expected `optimizer` to hold only parameters of `model`, but got {len(foreign)} other "
                f"parameter(s) of shape(s) {foreign}."
            )
        for i, group in enumerate(optimizer.param_groups):
            for flag in ("fused", "capturable"):
                if group.get(flag):
                    raise ValueError(
                        f"Expected `optimizer` param group {i} to have `{flag}` False or None (the functional "
                        f"update follows the for-loop path), but got {flag}={group[flag]!r}."
                    )
        self.optimizer = optimizer
        self.model = model
        self._params: dict[str, nn.Parameter] = {name: p for name, p in named if p.requires_grad}
        self._frozen = {name for name, p in named if not p.requires_grad}
        # group indices rather than the group dicts: optimizer.load_state_dict replaces the dicts
        self._group_index = {name: group_of[id(p)] for name, p in self._params.items()}

    @property
    def group_index(self) -> dict[str, int]:
        """Trainable parameter name → the index of its param group."""
        return dict(self._group_index)

    @property
    def names(self) -> list[str]:
        """Names of the trainable parameters, in model order."""
        return list(self._params)

    def params(self) -> Params:
        """The current trainable parameters by name (detached; they share memory with the model)."""
        return {name: p.detach() for name, p in self._params.items()}

    def _trainable(self, argument: str, names: Mapping[str, object]) -> list[str]:
        """The names of ``names`` that are trainable; frozen ones are dropped, unknown ones raise."""
        unknown = [n for n in names if n not in self._params and n not in self._frozen]
        if unknown:
            raise ValueError(
                f"Expected the names in `{argument}` to be parameters of the model ({self.names}), but got "
                f"{unknown!r}."
            )
        return [n for n in names if n in self._params]

    def _state(self, name: str) -> dict[str, Tensor]:
        # .get: indexing optimizer.state (a defaultdict) would insert an empty entry
        return dict(self.optimizer.state.get(self._params[name], {}))

    def _lr(self, group_index: int, lr_scale: Sequence[float] | None) -> float:
        lr = float(_scalar(self.optimizer.param_groups[group_index]["lr"]))
        return lr if lr_scale is None else lr * float(lr_scale[group_index])

    def update(
        self, params: Params, grads: Params, *, lr_scale: Sequence[float] | None = None
    ) -> tuple[Params, OptimState]:
        """The optimiser's next parameters and state, computed out of place and differentiably.

        Each parameter uses the hyper-parameters of its param group as they are now (the current
        LR of a schedule included) and its state in ``optimizer.state``; nothing is written.

        Args:
            params: the parameters ``θ`` by name; must hold every name in ``grads``.
            grads: the gradients ``g`` by name. As in ``torch.optim``, a trainable parameter without a
                gradient is not updated and its state does not advance.
            lr_scale: a factor per param group on its current LR (a learned LR; ``None``: 1).

        Returns:
            ``θ'`` (every name of ``params``; those without a gradient passed through) and ``s'`` (the
            names in ``grads``), both differentiable w.r.t. ``params`` and ``grads``.
        """
        self._trainable("params", params)
        names = self._trainable("grads", grads)
        absent = [n for n in names if n not in params]
        if absent:
            raise ValueError(f"Expected `params` to hold every name in `grads`, but got {absent!r} missing.")
        new_params = dict(params)
        new_state: OptimState = {}
        for i, group in enumerate(self.optimizer.param_groups):
            in_group = [n for n in names if self._group_index[n] == i]
            if not in_group:
                continue
            sub_params = {n: params[n] for n in in_group}
            sub_grads = {n: grads[n] for n in in_group}
            sub_state = {n: self._state(n) for n in in_group}
            if isinstance(self.optimizer, torch.optim.SGD):
                stepped, state = sgd(
                    sub_params,
                    sub_grads,
                    sub_state,
                    lr=self._lr(i, lr_scale),
                    momentum=group["momentum"],
                    dampening=group["dampening"],
                    nesterov=group["nesterov"],
                    weight_decay=_scalar(group["weight_decay"]),
                    maximize=group["maximize"],
                )
            else:
                stepped, state = adam(
                    sub_params,
                    sub_grads,
                    sub_state,
                    lr=self._lr(i, lr_scale),
                    betas=tuple(_scalar(b) for b in group["betas"]),
                    eps=group["eps"],
                    weight_decay=group["weight_decay"],
                    amsgrad=group["amsgrad"],
                    decoupled_weight_decay=group.get(
                        "decoupled_weight_decay", isinstance(self.optimizer, torch.optim.AdamW)
                    ),
                    maximize=group["maximize"],
                )
            new_params.update(stepped)
            new_state.update(state)
        return new_params, new_state

    def commit(self, new_params: Params, new_state: OptimState) -> None:
        """Write ``θ'`` into the model's parameters in place and ``s'`` into ``optimizer.state``.

        Both are detached (the state is also cloned, as a later ``optimizer.step()`` mutates it in
        place). The parameters keep their identity, so the optimiser, hooks and checkpoints still
        refer to them. The in-place write bumps their version: backpropagate through any graph that
        saved the old parameters (e.g. a ``create_graph=True`` gradient) before committing.

        A commit counts as an optimiser step for an LR scheduler (it does not run the optimiser's
        step hooks).
        """
        param_names = self._trainable("new_params", new_params)
        state_names = self._trainable("new_state", new_state)
        for name in param_names:
            expected, got = self._params[name].shape, new_params[name].shape
            if got != expected:
                raise ValueError(
                    f"Expected `new_params[{name!r}]` to have shape {tuple(expected)}, but got {tuple(got)}."
                )
        with torch.no_grad():
            for name in param_names:
                self._params[name].copy_(new_params[name])
        for name in state_names:
            entry = new_state[name]
            if not entry:
                continue  # torch keeps no state for plain SGD; do not create empty entries either
            target = self.optimizer.state[self._params[name]]
            for key, value in entry.items():
                target[key] = value.detach().clone() if isinstance(value, Tensor) else value
        # what LRScheduler's wrapper of optimizer.step() records; without it, scheduler.step() after
        # a commit warns that the optimiser was never stepped (an error under -W error)
        self.optimizer._opt_called = True  # type: ignore[attr-defined]

    def _sgd_factor(self, name: str, lr_scale: Sequence[float] | None) -> float:
        """The scalar ``∂θ'/∂g`` of SGD for parameter ``name`` (see :meth:`vjp_grads`)."""
        group = self.optimizer.param_groups[self._group_index[name]]
        momentum, dampening = group["momentum"], group["dampening"]
        if momentum == 0:
            factor = 1.0
        elif group["nesterov"]:
            factor = 1.0 + momentum * (1.0 - dampening)
        elif self._state(name).get("momentum_buffer") is None:
            factor = 1.0
        else:
            factor = 1.0 - dampening
        lr = self._lr(self._group_index[name], lr_scale)
        return lr * factor if group["maximize"] else -lr * factor

    def vjp_factor(self, *, lr_scale: Sequence[float] | None = None) -> float | None:
        """``c`` when ``∂θ'/∂g = c·I`` for every trainable parameter at this step (SGD whose param
        groups agree on the factor: then ``(∂θ'/∂g)ᵀ u = c·u`` for any cotangent ``u``); else ``None``."""
        if not isinstance(self.optimizer, torch.optim.SGD) or not self._params:
            return None
        factors = {self._sgd_factor(name, lr_scale) for name in self._params}
        return factors.pop() if len(factors) == 1 else None

    def vjp_grads(
        self, params: Params, grads: Params, cotangent: Params, *, lr_scale: Sequence[float] | None = None
    ) -> Params:
        """``(∂θ'/∂g)ᵀ · cotangent``: a cotangent of the update pulled back to the gradients.

        For SGD the update is linear in ``g`` with a scalar Jacobian per parameter, so this is a
        closed form. With ``ĝ = ±g + λθ`` (minus under ``maximize``), torch computes
        ``b' = ĝ`` on the first step (no momentum buffer yet), else ``b' = μ·b + (1-τ)·ĝ``, and
        ``θ' = θ - η·d`` with ``d = ĝ + μ·b'`` (Nesterov), ``d = b'`` (momentum) or ``d = ĝ``. Hence
        ``∂θ'/∂g = -η·s·c·I`` with ``s = -1`` under ``maximize`` (else 1) and ``c = 1`` without
        momentum, ``c = 1 + μ`` with Nesterov (which forces ``τ = 0``, on every step), ``c = 1`` on
        the first momentum step and ``c = 1 - τ`` after; weight decay does not enter. ``η``, ``μ``,
        ``τ``, ``λ`` are the group's lr, momentum, dampening and weight decay, read now.

        For Adam/AdamW the Jacobian is diagonal but depends on ``g``; it is applied with
        ``torch.autograd.grad`` through :meth:`update` on detached copies of ``params`` and ``grads``.

        Args:
            params: ``θ`` as given to :meth:`update` (only Adam/AdamW use it).
            grads: ``g`` as given to :meth:`update`.
            cotangent: a cotangent of ``θ'``, holding every name of ``grads`` (others are ignored).

        Returns:
            The cotangent of ``g``, by the names in ``grads``.
        """
        names = self._trainable("grads", grads)
        for argument, given in (("params", params), ("cotangent", cotangent)):
            absent = [n for n in names if n not in given]
            if absent:
                raise ValueError(
                    f"Expected `{argument}` to hold every name in `grads`, but got {absent!r} missing."
                )
        if isinstance(self.optimizer, torch.optim.SGD):
            return {name: cotangent[name] * self._sgd_factor(name, lr_scale) for name in names}
        leaves = {n: grads[n].detach().requires_grad_() for n in names}
        with torch.enable_grad():
            stepped, _ = self.update({n: params[n].detach() for n in names}, leaves, lr_scale=lr_scale)
            pulled = torch.autograd.grad(
                [stepped[n] for n in names],
                list(leaves.values()),
                [cotangent[n] for n in names],
                create_graph=any(cotangent[n].requires_grad for n in names),
                materialize_grads=True,
            )
        return dict(zip(names, pulled))
