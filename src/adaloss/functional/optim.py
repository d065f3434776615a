"""Functional, differentiable forms of the ``torch.optim`` updates SGD, Adam and AdamW.

Each function takes parameters, gradients and the per-parameter optimiser state as
``torch.optim`` stores it, and returns the new parameters and the new state without touching its
inputs. The arithmetic follows the single-tensor (for-loop) path of ``torch.optim`` in the same
order, so that one step agrees with ``optimizer.step()`` to the last bit on CPU and the result is
differentiable with ordinary autograd w.r.t. ``params`` and ``grads``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from adaloss._validation import check_fraction, check_positive
from adaloss.typing import Params

__all__ = ["OptimState", "adam", "sgd"]

#: Per-parameter optimiser state, keyed by parameter name, as ``optimizer.state[p]`` holds it.
OptimState = dict[str, dict[str, Tensor]]


def _check_names(params: Params, grads: Params) -> None:
    missing = [name for name in grads if name not in params]
    if missing:
        raise ValueError(
            f"Expected every name in `grads` to be in `params` ({sorted(params)}), but got {missing!r} "
            "without a parameter."
        )


def _sqrt(x: Tensor) -> Tensor:
    """``x.sqrt()`` with the same forward values, but a zero gradient (not NaN) where ``x == 0``.

    ``sqrt`` has an infinite slope at 0, and ``exp_avg_sq`` is exactly 0 where every gradient so far
    was 0 (dead units, unused biases); the chain rule then gives ``inf * 0 = NaN`` w.r.t. the
    gradient, whose true derivative there is bounded. A subgradient of 0 is used instead.
    """
    # `!= 0` rather than `> 0`: a NaN must stay NaN in the forward pass
    nonzero = x != 0
    return torch.where(nonzero, torch.where(nonzero, x, 1.0).sqrt(), 0.0)


def sgd(
    params: Params,
    grads: Params,
    state: OptimState,
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> tuple[Params, OptimState]:
    """One step of ``torch.optim.SGD`` (its documented algorithm, single-tensor path), out of place.

    Every parameter named in ``grads`` is updated; parameters without a gradient are passed through
    unchanged and keep their state, as ``torch.optim`` skips parameters whose ``.grad`` is ``None``.

    Args:
        params: parameters by name.
        grads: gradients by name (a subset of ``params``).
        state: ``{name: {"momentum_buffer": Tensor}}``; a missing entry or buffer means the first
            step, on which the buffer becomes the gradient itself (no dampening), as in torch.
        lr: learning rate.
        momentum: momentum factor; 0 keeps no state.
        dampening: dampening of the momentum.
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
        weight_decay: L2 penalty added to the gradient.
        maximize: ascend instead of descend.

    Returns:
        The new parameters and the new state, in new dicts (every name of ``params`` and ``state``).
    """
    check_positive("lr", lr, allow_zero=True)
    check_positive("momentum", momentum, allow_zero=True)
    check_positive("weight_decay", weight_decay, allow_zero=True)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(
            "`nesterov=True` needs `momentum` > 0 and `dampening` == 0, but got "
            f"momentum={momentum!r}, dampening={dampening!r}."
        )
    _check_names(params, grads)
    new_params = dict(params)
    new_state = {name: dict(entry) for name, entry in state.items()}
    for name, g in grads.items():
        param = params[name]
        grad = -g if maximize else g
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        if momentum != 0:
            buf = state.get(name, {}).get("momentum_buffer")
            # torch stores a detached clone on the first step; keeping the graph here is what makes
            # later steps differentiable w.r.t. this gradient, and the values are the same
            buf = grad if buf is None else buf.mul(momentum).add(grad, alpha=1 - dampening)
            new_state.setdefault(name, {})["momentum_buffer"] = buf
            grad = grad.add(buf, alpha=momentum) if nesterov else buf
        new_params[name] = param.add(grad, alpha=-lr)
    return new_params, new_state


def _initial_step() -> Tensor:
    # where and how torch.optim.Adam creates `step` without `capturable`/`fused`: a CPU scalar of
    # the default float dtype (float64 under torch.set_default_dtype(torch.float64))
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return torch.tensor(0.0, dtype=dtype, device="cpu")


def adam(
    params: Params,
    grads: Params,
    state: OptimState,
    *,
    lr: float,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> tuple[Params, OptimState]:
    """One step of ``torch.optim.Adam`` / ``AdamW`` (documented algorithm, single-tensor path), out of place.

    ``decoupled_weight_decay=True`` is AdamW: the parameter shrinks by ``lr * weight_decay``
    instead of the penalty entering the gradient. Parameters without a gradient are passed through
    unchanged and keep their state.

    Args:
        params: parameters by name.
        grads: gradients by name (a subset of ``params``).
        state: ``{name: {"step", "exp_avg", "exp_avg_sq"(, "max_exp_avg_sq")}}``; an empty or missing
            entry means the first step (zeros, as torch initialises them).
        lr: learning rate.
        betas: decay rates of the first and second moment averages, each in [0, 1).
        eps: added to the denominator.
        weight_decay: L2 penalty (Adam) or decoupled decay (AdamW).
        amsgrad: normalise by the running maximum of the second moment.
        decoupled_weight_decay: AdamW's decay instead of Adam's.
        maximize: ascend instead of descend.

    Returns:
        The new parameters and the new state, in new dicts (every name of ``params`` and ``state``).
    """
    check_positive("lr", lr, allow_zero=True)
    check_positive("eps", eps, allow_zero=True)
    check_positive("weight_decay", weight_decay, allow_zero=True)
    if len(betas) != 2:
        raise ValueError(f"Expected `betas` to be two numbers in [0, 1), but got {betas!r}.")
    beta1 = check_fraction("betas[0]", betas[0], low_open=False)
    beta2 = check_fraction("betas[1]", betas[1], low_open=False)
    _check_names(params, grads)
    new_params = dict(params)
    new_state = {name: dict(entry) for name, entry in state.items()}
    for name, g in grads.items():
        param = params[name]
        if torch.is_complex(param):
            raise ValueError(f"Expected real parameters, but `params[{name!r}]` is {param.dtype}.")
        entry = state.get(name) or {}
        if entry:
            step_t, exp_avg, exp_avg_sq = entry["step"], entry["exp_avg"], entry["exp_avg_sq"]
            if amsgrad and "max_exp_avg_sq" not in entry:
                raise ValueError(
                    f"Expected `state[{name!r}]` to hold 'max_exp_avg_sq' with amsgrad=True, but got "
                    f"keys {sorted(entry)}."
                )
        else:
            step_t, exp_avg, exp_avg_sq = _initial_step(), torch.zeros_like(param), torch.zeros_like(param)
        grad = -g if maximize else g
        step_t = step_t + 1
        if weight_decay != 0:
            if decoupled_weight_decay:
                param = param.mul(1 - lr * weight_decay)
            else:
                grad = grad.add(param, alpha=weight_decay)
        exp_avg = torch.lerp(exp_avg, grad, 1 - beta1)
        exp_avg_sq = exp_avg_sq.mul(beta2).addcmul(grad, grad, value=1 - beta2)
        # a Python float, as torch.optim reads it with .item() outside capturable mode
        step = step_t.item()
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        updated = {"step": step_t, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
        if amsgrad:
            previous_max = entry["max_exp_avg_sq"] if entry else torch.zeros_like(param)
            max_exp_avg_sq = torch.maximum(previous_max, exp_avg_sq)
            updated["max_exp_avg_sq"] = max_exp_avg_sq
            denom = (_sqrt(max_exp_avg_sq) / bias_correction2_sqrt).add(eps)
        else:
            denom = (_sqrt(exp_avg_sq) / bias_correction2_sqrt).add(eps)
        new_params[name] = param.addcdiv(exp_avg, denom, value=-step_size)
        new_state[name] = {**entry, **updated}
    return new_params, new_state
