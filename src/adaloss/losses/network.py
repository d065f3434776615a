"""The learned loss network of ML3 / AdaLFL, applied output-wise."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaloss._validation import check_choice, check_int_list, check_positive
from adaloss.functional.activations import smooth_leaky_relu
from adaloss.functional.losses import target_prediction_pairs
from adaloss.functional.pairwise_mlp import PairwiseMLPCache, pairwise_mlp_mixed_grad, pairwise_mlp_value_and_grad
from adaloss.typing import Task

__all__ = ["LossGradCache", "LossNetwork", "SmoothLeakyReLU"]

OutputActivation = Literal["smooth_leaky_relu", "softplus", "identity"]
Init = Literal["kaiming_normal", "xavier_uniform"]


class SmoothLeakyReLU(nn.Module):
    """Module form of :func:`adaloss.functional.smooth_leaky_relu`."""

    def __init__(self, beta: float = 2.0, gamma: float = 0.25) -> None:
        super().__init__()
        self.beta = float(check_positive("beta", beta))
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"Expected `gamma` to be in [0, 1], but got {gamma!r}.")
        self.gamma = float(gamma)

    def forward(self, x: Tensor) -> Tensor:
        return smooth_leaky_relu(x, beta=self.beta, gamma=self.gamma)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, gamma={self.gamma}"


#: below this many elements per hidden activation (pairs × width) the closed forms run on one CPU thread:
#: their few dozen ops on tensors of this size cost more in OpenMP fork/join than they gain from threads
#: (MNIST, batch 128: 1280 pairs × 40; measured several-fold faster on one thread, more so when cores are shared)
ONE_THREAD_BELOW = 2**18


@contextlib.contextmanager
def _one_thread_if_small(elements: int, device: torch.device) -> Iterator[None]:
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1 or elements >= ONE_THREAD_BELOW:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass
class LossGradCache:
    """What :meth:`LossNetwork.mixed_grad` reuses from :meth:`LossNetwork.value_and_grad`."""

    network: PairwiseMLPCache
    #: the predictions the network saw (softmax probabilities for classification)
    p: Tensor


class LossNetwork(nn.Module):
    """Learned loss ``M_φ(y, f(x)) = (1/C) Σ_i ℓ_φ(y_i, f(x)_i)``, meaned over the batch (AdaLFL eq. 1).

    ``ℓ_φ`` is an MLP on the pair (target_i, prediction_i), evaluated for all outputs of all
    examples at once (the pairs are stacked into an ``(N·C, 2)`` matrix: no loop over classes).
    Classification feeds softmax probabilities and one-hot targets; regression the raw values.

    Defaults, where the AdaLFL paper is silent (each a constructor option):

    * ``hidden=(40, 40)``: stated by the paper.
    * smooth leaky ReLU hidden activation with ``beta=2.0, gamma=0.25``: the values in the same
      author's later loss network (NPBML), the closest published evidence.
    * ``output_activation``: ``"smooth_leaky_relu"`` for classification, ``"identity"`` for
      regression (``None`` picks by task). Regression with the smooth leaky ReLU output diverged
      on Diabetes in every run we tried (NaN within 25–100 online steps after 50–2500 offline
      steps); with the identity output no run diverged (see docs/decisions.md, "Regression output of the loss network").
      For classification: the paper drops ML3's Softplus output for being
      overly flat but keeps the loss C¹; the smooth leaky ReLU satisfies both.
    * ``bias=False`` and ``init="kaiming_normal"``: as in the authors' ML3/EvoMAL loss networks.

    Args:
        task: ``"classification"`` (``prediction`` are logits ``(N, C)``, ``target`` class
            indices ``(N,)``) or ``"regression"`` (``prediction`` and ``target`` of equal shape).
        hidden: widths of the hidden layers, a list of positive ints (a float such as ``0.5``
            or ``2.0`` raises ``TypeError``).
        beta: smoothness of the smooth leaky ReLU.
        gamma: leak of the smooth leaky ReLU.
        output_activation: activation after the last layer (``None``: by task, see above).
        bias: whether the linear layers have biases.
        init: weight initialisation.
    """

    def __init__(
        self,
        *,
        task: Task = "classification",
        hidden: Sequence[int] = (40, 40),
        beta: float = 2.0,
        gamma: float = 0.25,
        output_activation: OutputActivation | None = None,
        bias: bool = False,
        init: Init = "kaiming_normal",
    ) -> None:
        super().__init__()
        self.task: Task = check_choice("task", task, ("classification", "regression"))
        self.hidden = check_int_list("hidden", hidden, minimum=1)
        if output_activation is None:
            output_activation = "smooth_leaky_relu" if task == "classification" else "identity"
        self.output_activation = check_choice(
            "output_activation", output_activation, ("smooth_leaky_relu", "softplus", "identity")
        )
        self.init = check_choice("init", init, ("kaiming_normal", "xavier_uniform"))
        self.bias = bool(bias)
        self.act = SmoothLeakyReLU(beta, gamma)
        sizes = [2, *self.hidden, 1]
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=self.bias) for a, b in zip(sizes[:-1], sizes[1:]))
        for layer in self.linears:
            if self.init == "kaiming_normal":
                nn.init.kaiming_normal_(layer.weight)
            else:
                nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    @property
    def linears(self) -> list[nn.Linear]:
        """The network's linear layers, in order."""
        return [layer for layer in self.layers if isinstance(layer, nn.Linear)]

    def config(self) -> dict[str, Any]:
        """Constructor arguments, to rebuild this network (see :func:`adaloss.losses.save`)."""
        return {
            "task": self.task, "hidden": list(self.hidden), "beta": self.act.beta, "gamma": self.act.gamma,
            "output_activation": self.output_activation, "bias": self.bias, "init": self.init,
        }

    def pointwise(self, target: Tensor, prediction: Tensor) -> Tensor:
        """``ℓ_φ(y_i, p_i)`` elementwise for same-shaped ``target`` and ``prediction``."""
        h = torch.stack((target, prediction), dim=-1)
        for layer in self.layers[:-1]:
            h = self.act(layer(h))
        h = self.layers[-1](h).squeeze(-1)
        if self.output_activation == "smooth_leaky_relu":
            return self.act(h)
        if self.output_activation == "softplus":
            return F.softplus(h)
        return h

    def inputs(self, prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """The (target, prediction) pairs the network sees: one-hot/softmax or raw values."""
        return target_prediction_pairs(prediction, target, task=self.task)

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        y, p = self.inputs(prediction, target)
        return self.pointwise(y, p).mean()

    @torch.no_grad()
    def value_and_grad(
        self, prediction: Tensor, target: Tensor, *, mixed: bool = True
    ) -> tuple[Tensor, Tensor, LossGradCache]:
        """The loss and its gradient w.r.t. ``prediction`` in closed form (no autograd graph), and a
        cache for :meth:`mixed_grad` (``mixed=False``: a cache that cannot serve it, for a step that
        only needs the gradient); the values of ``self(prediction, target)`` and of its autograd
        gradient, to rounding (see :mod:`adaloss.functional.pairwise_mlp`)."""
        # in the network's own dtype, autocast off: under a bf16 autocast the loss and its derivatives stay fp32
        linears = self.linears
        weight = linears[0].weight
        width = max(self.hidden, default=1)
        with torch.autocast(weight.device.type, enabled=False), \
                _one_thread_if_small(prediction.numel() * width, weight.device):
            y, p = self.inputs(prediction.detach().to(weight.dtype), target)
            pairs = torch.stack((y, p), dim=-1).reshape(-1, 2)
            value, grad_p, cache = pairwise_mlp_value_and_grad(
                [layer.weight.detach() for layer in linears],
                [None if layer.bias is None else layer.bias.detach() for layer in linears],
                pairs, beta=self.act.beta, gamma=self.act.gamma, output=self.output_activation,  # type: ignore[arg-type]
                curvature=mixed,
            )
        grad_p = grad_p.view_as(p)
        if self.task == "classification":  # back through the softmax: Jᵀq = p ⊙ (q − ⟨q, p⟩)
            grad_p = p * (grad_p - (grad_p * p).sum(-1, keepdim=True))
        return value, grad_p.view_as(prediction), LossGradCache(cache, p)

    @torch.no_grad()
    def mixed_grad(self, cache: LossGradCache, direction: Tensor) -> tuple[Tensor, ...]:
        """``∂/∂φ ⟨direction, ∇_prediction M_φ⟩`` at the batch of ``cache``, one tensor per entry of
        ``self.parameters()``: the second-order term of the exact one-step meta-gradient (AdaLFL,
        Raymond et al. 2023, Alg. 2), in closed form. ``cache`` must come from :meth:`value_and_grad`
        with the current φ."""
        p = cache.p
        width = max(self.hidden, default=1)
        with torch.autocast(p.device.type, enabled=False), _one_thread_if_small(p.numel() * width, p.device):
            direction = direction.detach().to(p.dtype).reshape(p.shape)
            if self.task == "classification":  # the softmax Jacobian is symmetric: ⟨u, Jᵀq⟩ = ⟨J u, q⟩
                direction = p * (direction - (direction * p).sum(-1, keepdim=True))
            return pairwise_mlp_mixed_grad(cache.network, direction.reshape(-1))

    @torch.no_grad()
    def curves(self, num: int = 101) -> dict[str, Any]:
        """The loss shape, for snapshots: ℓ against p for targets 1 and 0, or against the residual.

        Regression curves fix the target at 0 and vary the prediction over [−3, 3] (targets are
        standardised, so this spans three standard deviations).
        """
        w = self.linears[0].weight
        if self.task == "classification":
            p = torch.linspace(0.0, 1.0, num, dtype=w.dtype, device=w.device)
            return {
                "kind": "classification",
                "p": p.tolist(),
                "loss_target1": self.pointwise(torch.ones_like(p), p).tolist(),
                "loss_target0": self.pointwise(torch.zeros_like(p), p).tolist(),
            }
        r = torch.linspace(-3.0, 3.0, num, dtype=w.dtype, device=w.device)
        return {"kind": "regression", "residual": r.tolist(), "loss": self.pointwise(torch.zeros_like(r), r).tolist()}
