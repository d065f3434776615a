"""SGD with hypergradient descent on its learning rate (Baydin et al., "Online Learning Rate
Adaptation with Hypergradient Descent", ICLR 2018, Algorithms 4 and 5)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from adaloss._validation import check_positive

__all__ = ["HypergradientSGD"]


class HypergradientSGD(Optimizer):
    """SGD (momentum, Nesterov, weight decay as in :class:`torch.optim.SGD`) whose learning rate
    follows its one-step hypergradient.

    With the update ``θ_t = θ_{t−1} + α_{t−1} u_{t−1}`` (``u = −g`` for plain SGD, ``−v`` with
    momentum, ``−(g + μ v)`` with Nesterov), the derivative of the loss at ``θ_t`` with respect to
    ``α_{t−1}`` is ``g_t · u_{t−1}`` (Baydin et al. 2018, Sec. 2), so each step first moves the
    learning rate ``α_t = α_{t−1} − β g_t · u_{t−1}`` (``β`` = ``hypergrad_lr``, the dot product
    over every parameter of the group, the gradient including weight decay), then takes the SGD step
    with ``α_t``. The first step has no previous update and keeps ``lr``. The current learning rate
    is ``param_groups[i]["lr"]``, so schedulers and logs read it as usual.

    Args:
        params: parameters or parameter groups.
        lr: the initial learning rate ``α_0``.
        hypergrad_lr: ``β``; ``0`` gives :class:`torch.optim.SGD` exactly. Default ``1e-3``, the
            value of the paper's SGD-HD and SGDN-HD experiments.
        momentum: momentum factor ``μ`` (PyTorch's convention, no dampening).
        nesterov: Nesterov momentum (SGDN-HD).
        weight_decay: L2 penalty added to the gradient.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.01,
        *,
        hypergrad_lr: float = 1e-3,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        check_positive("lr", lr)
        check_positive("hypergrad_lr", hypergrad_lr, allow_zero=True)
        check_positive("momentum", momentum, allow_zero=True)
        check_positive("weight_decay", weight_decay, allow_zero=True)
        if nesterov and momentum <= 0:
            raise ValueError(f"`nesterov=True` needs `momentum` > 0, but got momentum={momentum!r}.")
        defaults = {"lr": float(lr), "hypergrad_lr": float(hypergrad_lr), "momentum": float(momentum),
                    "nesterov": bool(nesterov), "weight_decay": float(weight_decay)}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
                     for p in params]
            previous = [self.state[p].get("direction") for p in params]
            if params and all(d is not None for d in previous):
                h = sum((g * d).sum() for g, d in zip(grads, previous))  # ∂L(θ_t)/∂α_{t−1}
                group["lr"] = group["lr"] - group["hypergrad_lr"] * float(h)
            lr, mu = group["lr"], group["momentum"]
            for p, g in zip(params, grads):
                state = self.state[p]
                if mu:
                    buf = state.get("momentum_buffer")
                    buf = g.clone() if buf is None else buf.mul_(mu).add_(g)
                    state["momentum_buffer"] = buf
                    direction = -(g + mu * buf) if group["nesterov"] else -buf.clone()
                else:
                    direction = -g.clone()
                state["direction"] = direction
                p.add_(direction, alpha=lr)
        return loss
