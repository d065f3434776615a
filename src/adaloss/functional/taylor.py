"""TaylorGLO's loss: a third-order bivariate Taylor polynomial (Gonzalez & Miikkulainen, GECCO 2021).

"Optimizing Loss Functions Through Multivariate Taylor Polynomial Parameterization"
(arXiv:2002.00059), section 3: the loss is parameterised by the centre of a third-order Taylor
expansion in (target, prediction) and its coefficients, keeping only the terms that depend on the
prediction (the others do not change the gradients): 8 parameters θ.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["TAYLOR_PARAMETERS", "taylor_loss", "taylor_polynomial"]

#: Length of θ: two expansion centres and six coefficients.
TAYLOR_PARAMETERS = 8


def _check_theta(theta: Tensor) -> None:
    if theta.shape != (TAYLOR_PARAMETERS,):
        raise ValueError(
            f"Expected `theta` of shape ({TAYLOR_PARAMETERS},), but got {tuple(theta.shape)}."
        )


def taylor_polynomial(target: Tensor, prediction: Tensor, theta: Tensor) -> Tensor:
    """Elementwise ``f(x, y)`` with ``x = target``, ``y = prediction``, ``a = x − θ0``, ``b = y − θ1``::

        f = θ2·b + ½θ3·b² + ⅙θ4·b³ + θ5·a·b + ½θ6·a·b² + ½θ7·a²·b

    The reference implementation in EvoMAL (``source/representation/tp.py``), used as the AdaLFL
    paper's TaylorGLO baseline, differs from this expansion twice: it swaps the roles of target and
    prediction (``a = prediction − θ0``, ``b = target − θ1``), so its three single-variable terms
    carry no gradient; and its last term is ``½θ7·a²·(target − θ0)`` instead of ``½θ7·a²·b``.
    We follow the paper.
    """
    _check_theta(theta)
    t = theta.to(dtype=prediction.dtype, device=prediction.device)
    a = target.to(prediction.dtype) - t[0]
    b = prediction - t[1]
    return b * (t[2] + b * (t[3] / 2 + b * (t[4] / 6)) + a * (t[5] + b * (t[6] / 2) + a * (t[7] / 2)))


def taylor_loss(prediction: Tensor, target: Tensor, theta: Tensor) -> Tensor:
    """``L = −(1/N) Σ_n (1/C) Σ_i f(x_ni, y_ni)`` for same-shaped ``prediction`` and ``target``.

    ``prediction`` holds softmax probabilities (classification) or raw outputs (regression), and
    ``target`` one-hot vectors or raw targets; ``f`` is :func:`taylor_polynomial`. Like adaloss's
    :class:`~adaloss.losses.LossNetwork`, the loss is the mean over outputs and batch; TaylorGLO
    and EvoMAL sum over the C outputs instead, which differs by the constant factor C that the
    search absorbs into θ2..θ7.

    Args:
        prediction: ``(N, C)`` (or any shape) predictions.
        target: targets of the same shape.
        theta: ``(8,)`` parameters (centres θ0, θ1 and coefficients θ2..θ7); differentiable.

    Returns:
        The scalar loss.
    """
    if target.shape != prediction.shape:
        raise ValueError(
            f"Expected `prediction` and `target` of the same shape, but got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}."
        )
    return -taylor_polynomial(target, prediction, theta).mean()
