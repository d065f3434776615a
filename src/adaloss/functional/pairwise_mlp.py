"""Closed-form first and mixed second derivatives of the learned loss network of ML3 / AdaLFL.

The network ``ℓ_φ`` is a small MLP applied row-wise to ``R`` pairs ``h₀ = (y_r, p_r)``
(Bechtle et al., ICPR 2021; Raymond et al., "Meta-Learning Adaptive Loss Functions", 2023):
``A_l = H_{l-1} W_lᵀ + b_l``, ``H_l = σ(A_l)`` with the smooth leaky ReLU ``σ`` in the hidden
layers, and the output ``τ(A_L)``; the loss is ``M = (1/R) Σ_r τ(A_L)_r``.

AdaLFL's online step needs two derivatives of ``M``:

* ``q = ∂M/∂p`` (the base step's gradient, before the softmax), and
* the meta-gradient ``∂/∂φ ⟨w, q⟩`` for a fixed direction ``w`` over the pairs (Alg. 2's
  second-order term, ``w`` being the model's Jacobian-vector product pulled through the softmax).

Autograd gets the second one by a double backward through the network, a few hundred small
dispatches for a network of a few thousand weights. Here both are a handful of matrix products:
``⟨w, q⟩`` is the forward-mode derivative of ``M`` along the input tangent ``(0, w)``
(``dA_1 = w W_1[:, 1]ᵀ``, ``dA_l = (σ'(A_{l-1}) ⊙ dA_{l-1}) W_lᵀ``, ``⟨w, q⟩ = (1/R) Σ τ'(A_L) dA_L``),
and its gradient w.r.t. ``W_l, b_l`` is one reverse pass over that forward-mode computation, whose
adjoint of ``dA_l`` is exactly the ``δ_l = ∂M/∂A_l`` of the first-order backward (reused).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PairwiseMLPCache", "pairwise_mlp_mixed_grad", "pairwise_mlp_value_and_grad"]

#: the output activation ``τ`` of the loss network
Output = Literal["smooth_leaky_relu", "softplus", "identity"]


@dataclass
class PairwiseMLPCache:
    """What :func:`pairwise_mlp_mixed_grad` reuses from :func:`pairwise_mlp_value_and_grad`."""

    weights: list[Tensor]
    biases: list[Tensor | None]
    #: ``H_0, …, H_{L-1}``: the pairs and the hidden activations
    post: list[Tensor]
    #: ``σ'(A_l)`` for the hidden layers and ``τ'(A_L)`` last
    slope: list[Tensor]
    #: ``σ''(A_l)`` for the hidden layers and ``τ''(A_L)`` last (``None`` where it is 0)
    curvature: list[Tensor | None]
    #: ``δ_l = ∂M/∂A_l`` for every layer
    delta: list[Tensor]
    #: ``δ_l W_l = ∂M/∂H_{l-1}`` for the layers after the first (``None`` first)
    upstream: list[Tensor | None]
    beta: float
    gamma: float
    output: str
    #: whether ``curvature`` was kept (only then can the cache serve :func:`pairwise_mlp_mixed_grad`)
    has_curvature: bool = True


def _derivatives(a: Tensor, kind: str, beta: float, gamma: float,
                 curvature: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(f(a), f'(a), f''(a))`` of one activation (``f''`` only with ``curvature``), in few ops."""
    if kind == "smooth_leaky_relu":
        # f = γa + (1−γ)·softplus_β(a) = lerp(softplus_β(a), a, γ); f' = γ + (1−γ)·s; f'' = (1−γ)β·s(1−s)
        sig = torch.sigmoid(a * beta if beta != 1.0 else a)
        second = torch.addcmul(sig, sig, sig, value=-1.0).mul_((1.0 - gamma) * beta) if curvature else None
        value = torch.lerp(F.softplus(a, beta=beta), a, gamma)
        return value, sig.mul(1.0 - gamma).add_(gamma), second
    if kind == "softplus":
        sig = torch.sigmoid(a)
        return F.softplus(a), sig, torch.addcmul(sig, sig, sig, value=-1.0) if curvature else None
    return a, torch.ones_like(a), None


def pairwise_mlp_value_and_grad(
    weights: Sequence[Tensor],
    biases: Sequence[Tensor | None],
    pairs: Tensor,
    *,
    beta: float,
    gamma: float,
    output: Output,
    curvature: bool = True,
) -> tuple[Tensor, Tensor, PairwiseMLPCache]:
    """``M = mean_r ℓ_φ(pairs_r)`` and ``∂M/∂p`` (the pairs' second column), without autograd.

    Args:
        weights: ``W_1 … W_L`` (``W_1`` of shape ``(H_1, 2)``, ``W_L`` of shape ``(1, H_{L-1})``).
        biases: ``b_1 … b_L`` (``None`` for a layer without bias).
        pairs: ``(R, 2)`` rows ``(target, prediction)``.
        beta, gamma: the smooth leaky ReLU's parameters.
        output: the output activation ``τ``.
        curvature: also keep the activations' second derivatives, which
            :func:`pairwise_mlp_mixed_grad` needs (``False``: the cache cannot serve it).

    Returns:
        ``M`` (a scalar), ``∂M/∂p`` of shape ``(R,)``, and the cache for :func:`pairwise_mlp_mixed_grad`.
    """
    weights, biases = list(weights), list(biases)
    n_layers = len(weights)
    post: list[Tensor] = [pairs]
    slope: list[Tensor] = []
    second: list[Tensor | None] = []
    h = pairs
    for i, (w, b) in enumerate(zip(weights, biases)):
        if i == 0:  # two input columns: a matrix product with an inner size of 2 is slow on CPU (≈ 0.5 ms)
            a = torch.addcmul(pairs[:, :1] * w[:, 0], pairs[:, 1:], w[:, 1])
            a = a if b is None else a + b
        else:
            a = F.linear(h, w, b)
        kind = output if i == n_layers - 1 else "smooth_leaky_relu"
        h, d1, d2 = _derivatives(a, kind, beta, gamma, curvature)
        slope.append(d1)
        second.append(d2)
        if i < n_layers - 1:
            post.append(h)
    rows = pairs.shape[0]
    value = h.mean()
    delta = [slope[-1] / rows]  # ∂M/∂A_L, shape (R, 1)
    upstream: list[Tensor] = []  # ∂M/∂H_{l-1} = δ_l W_l, for l = L … 2
    for i in range(n_layers - 1, 0, -1):
        upstream.append(delta[-1] @ weights[i])
        delta.append(upstream[-1] * slope[i - 1])
    delta.reverse()
    upstream.reverse()
    grad_p = delta[0] @ weights[0][:, 1]
    cache = PairwiseMLPCache(weights, biases, post, slope, second, delta, [None, *upstream], beta, gamma, output,
                             curvature)
    return value, grad_p, cache


def pairwise_mlp_mixed_grad(cache: PairwiseMLPCache, direction: Tensor) -> tuple[Tensor, ...]:
    """``∂/∂φ ⟨direction, ∂M/∂p⟩`` at the pairs of ``cache``: the gradients of ``W_1, b_1, …, W_L, b_L``
    in that order (biases left out where the layer has none), as ``torch.autograd.grad`` of the
    double backward would give them.

    Args:
        cache: from :func:`pairwise_mlp_value_and_grad` (the weights as they were then).
        direction: ``(R,)`` tangent of the predictions ``p``.
    """
    if not cache.has_curvature:
        raise ValueError("Expected a cache with the second derivatives (pairwise_mlp_value_and_grad(..., "
                         "curvature=True)), but got one made with curvature=False.")
    weights, slope, curvature, delta, post = cache.weights, cache.slope, cache.curvature, cache.delta, cache.post
    n_layers = len(weights)
    # forward-mode tangents dA_l of the pre-activations along the input tangent (0, w)
    tangent = [direction[:, None] * weights[0][:, 1]]
    dpost: list[Tensor | None] = [None]  # dH_0 = (0, w) is handled in closed form below
    for i in range(1, n_layers):
        dh = slope[i - 1] * tangent[-1]
        dpost.append(dh)
        tangent.append(dh @ weights[i].T)
    # reverse pass over the forward-mode computation; the adjoint of dA_l is δ_l
    abar = curvature[-1] * tangent[-1] / post[0].shape[0] if curvature[-1] is not None else None
    grads: list[Tensor] = []
    for i in range(n_layers - 1, -1, -1):
        d = delta[i]
        if i > 0:
            dp = dpost[i]
            assert dp is not None
            g_w = d.T @ dp if abar is None else torch.addmm(d.T @ dp, abar.T, post[i])
        else:  # dH_0 = (0, w): only the prediction column gets the tangent term
            g_w = torch.zeros_like(weights[0]) if abar is None else abar.T @ post[0]
            g_w[:, 1] += d.T @ direction
        if cache.biases[i] is not None:
            grads.append(abar.sum(0) if abar is not None else torch.zeros_like(cache.biases[i]))  # type: ignore[arg-type]
        grads.append(g_w)
        if i > 0:
            # the adjoint of dH_{i} is ∂M/∂H_{i} (cached), reaching A_{i} through σ'' along dA_{i}
            back = curvature[i - 1] * tangent[i - 1] * cache.upstream[i]  # type: ignore[operator]
            abar = back if abar is None else torch.addcmul(back, abar @ weights[i], slope[i - 1])
    grads.reverse()
    return tuple(grads)
