"""The pieces of the exact one-step meta-gradient of a learned loss (AdaLFL Alg. 2, ML3).

With θ' = U(θ, g, s), g = ∇_θ M_φ(f_θ(x), y) and task loss L(θ') on a meta batch, the
meta-gradient is

    dL/dφ = ∂/∂φ ⟨ J_θ v, ∇_z M_φ(z, y) ⟩,   v = (∂U/∂g)ᵀ ∇_θ' L,   z = f_θ(x),

because the learned loss sees θ only through the outputs z: g = J_θᵀ ∇_z M_φ(z). So the
second-order term needs one forward-mode Jacobian-vector product of the model (``u = J_θ v``)
and a double backward through the tiny loss network — never a create_graph backward through
the base model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from adaloss.typing import Params

__all__ = ["FactoredLinear", "LinearRecord", "call_at", "capture_rng", "loss_meta_gradient", "model_forward_difference",
           "model_jvp"]

#: a linear layer's weight gradient kept as factors: ``Σ_k δ_kᵀ a_k`` (rows of the layer's output
#: gradient and input), never formed; ``Ẇ x`` is then ``Σ_k (x a_kᵀ) δ_k``
Factors = list[tuple[Tensor, Tensor]]

#: ``forward(model, batch) -> outputs``: how a model is applied to one batch (``None``: ``model(batch)``)
Forward = Callable[[nn.Module, Any], Tensor]


class _Applied(nn.Module):
    """``forward(model, inputs)`` as a module, so ``functional_call`` can swap ``model``'s tensors."""

    def __init__(self, model: nn.Module, forward: Forward) -> None:
        super().__init__()
        self.model = model
        self.apply_fn = forward

    def forward(self, inputs: Any) -> Tensor:
        return self.apply_fn(self.model, inputs)


def call_at(model: nn.Module, params: Params, buffers: Params, inputs: Any, forward: Forward | None = None) -> Tensor:
    """``forward(model, inputs)`` (default ``model(inputs)``) with ``model``'s parameters and buffers
    replaced by ``params`` and ``buffers`` (by name; missing names keep the module's own)."""
    if forward is None:
        return functional_call(model, (params, buffers), (inputs,))
    wrapper = _Applied(model, forward)
    named = {f"model.{k}": v for k, v in params.items()}
    named_buffers = {f"model.{k}": v for k, v in buffers.items()}
    return functional_call(wrapper, (named, named_buffers), (inputs,))


#: ops linear in their input and in their weight: ``f(x, W, b)`` has the tangent ``f(ẋ, W) + f(x, Ẇ) + ḃ``
_BILINEAR = (F.linear, F.conv1d, F.conv2d, F.conv3d)
#: ops linear in their input alone: the tangent is the op applied to ``ẋ``
_LINEAR = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
           F.adaptive_avg_pool3d)
_aten = torch.ops.aten
#: elementwise activations whose tangent is a function of ``ẋ`` and the output ``y`` (one fused op)
_ELEMENTWISE: dict[Any, Callable[[Tensor, Tensor], Tensor]] = {
    torch.tanh: _aten.tanh_backward.default, Tensor.tanh: _aten.tanh_backward.default,
    torch.sigmoid: _aten.sigmoid_backward.default, Tensor.sigmoid: _aten.sigmoid_backward.default,
    torch.relu: lambda t, y: _aten.threshold_backward.default(t, y, 0),
    Tensor.relu: lambda t, y: _aten.threshold_backward.default(t, y, 0),
    F.relu: lambda t, y: _aten.threshold_backward.default(t, y, 0),
}


def _ruled(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether :class:`_RuledTangents` takes ``func``'s tangent itself (in-place forms keep torch's)."""
    if func in _BILINEAR or func in _LINEAR:
        return True
    if func in _ELEMENTWISE:
        return not (kwargs.get("inplace") or (func is F.relu and len(args) > 1 and args[1]))
    return False


def _shapes(args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> tuple[torch.Size, ...]:
    given = [*args, *(kwargs or {}).values()]
    return tuple(a.shape for a in given if isinstance(a, Tensor))


class LinearRecord(TorchFunctionMode):
    """Records the outputs of the linear layers, convolutions, average pools and elementwise
    activations (tanh, sigmoid, ReLU) of a forward pass run inside it (``with record: z = model(x)``),
    so that :func:`model_jvp` at the same parameters and inputs reuses them instead of recomputing
    them: its pass then computes tangents only.

    Each call is recorded with its op and argument shapes; the JVP's pass checks them call by
    call and computes the op itself from the first one that differs (a forward that does not
    replay the recorded one), so a record never changes a result, only its cost.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, tuple[torch.Size, ...], Tensor]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if _ruled(func, args, kwargs):
            self.calls.append((func, _shapes(args, kwargs), out.detach()))
        return out


class FactoredLinear(TorchFunctionMode):
    """Within a forward pass whose loss is then differentiated: the ``F.linear`` calls whose weight
    is one of ``weights`` (by identity) and for which the factored form is cheaper run with the
    weight detached, keeping their input rows ``a`` and their output; the gradient of the loss with
    respect to those outputs (``δ``) then gives the weight gradient as ``δᵀa`` without forming it
    (:func:`model_jvp`'s ``factored``).

    Cheaper: a layer ``in → out`` with ``m`` rows here and ``n`` rows in the JVP's pass (``n =
    rows_ratio · m``) costs ``m·in·out`` (``∂W``) plus ``n·in·out`` (``Ẇx``) as a matrix, and
    ``n·m·(in + out)`` factored — the factored form wins for wide layers and batches of a few
    hundred rows, not for a narrow output layer. A weight's first call decides for all its calls.
    """

    def __init__(self, weights: dict[str, Tensor], *, rows_ratio: float = 1.0) -> None:
        super().__init__()
        self.names = {id(t): n for n, t in weights.items()}
        self.rows_ratio = rows_ratio
        self.decided: dict[str, bool] = {}
        self.calls: list[tuple[str, Tensor, Tensor]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is F.linear and len(args) >= 2:
            x, w = args[0], args[1]
            name = self.names.get(id(w))
            if name is not None and self._factored(name, x, w):
                bias = args[2] if len(args) > 2 else kwargs.get("bias")
                out = F.linear(x, w.detach(), bias)
                self.calls.append((name, x.detach().reshape(-1, x.shape[-1]), out))
                return out
        return func(*args, **kwargs)

    def _factored(self, name: str, x: Tensor, w: Tensor) -> bool:
        if name not in self.decided:
            m = x.numel() // max(x.shape[-1], 1)
            n = self.rows_ratio * m
            d_out, d_in = w.shape
            self.decided[name] = n * m * (d_in + d_out) < d_in * d_out * (m + n)
        return self.decided[name]

    def gradients(self, param_grads: dict[str, Tensor | None],
                  output_grads: Sequence[Tensor]) -> tuple[dict[str, Tensor], dict[str, Factors]]:
        """The loss's gradient as dense tensors and factors, from its gradients w.r.t. the
        parameters (``None`` where unused outside the factored calls) and w.r.t. the kept outputs
        (in the order of :attr:`calls`). A factored weight that is also used elsewhere (a tied
        weight) gets its whole gradient dense: its tangent must reach those other uses too."""
        factors: dict[str, Factors] = {}
        for (name, a, _), d in zip(self.calls, output_grads):
            factors.setdefault(name, []).append((a, d.reshape(-1, d.shape[-1])))
        dense: dict[str, Tensor] = {}
        for name, g in param_grads.items():
            if g is not None and name in factors:
                dense[name] = g + sum(d.T @ a for a, d in factors.pop(name))  # type: ignore[operator]
            elif g is not None:
                dense[name] = g
        return dense, factors


class _RuledTangents(TorchFunctionMode):
    """Forward mode with the tangents of :data:`_BILINEAR`, :data:`_LINEAR` and :data:`_ELEMENTWISE` ops
    taken by plain calls, and their primal outputs taken from ``record`` where it holds the same call.

    Besides the record: torch's own forward-mode formula for convolutions runs the convolution
    through a slow path on CPU (≈ 11× two plain convolutions for LeNet-5's first layer, torch
    2.13), and its ``addmm`` formula multiplies a materialised all-zero input tangent in a model's
    first layer; here a term whose tangent is absent is skipped. Every other op keeps torch's
    forward mode.
    """

    def __init__(self, record: LinearRecord | None = None) -> None:
        super().__init__()
        self.recorded = list(record.calls) if record is not None else []
        self.index = 0
        #: id of a weight as the model receives it → its tangent as factors (:class:`FactoredLinear`)
        self.factored: dict[int, Factors] = {}

    def _primal(self, func: Any, shapes: tuple[torch.Size, ...]) -> Tensor | None:
        if self.index < len(self.recorded):
            recorded_func, recorded_shapes, recorded_out = self.recorded[self.index]
            if recorded_func is func and recorded_shapes == shapes:
                self.index += 1
                return recorded_out
            self.recorded = []  # the pass left the recorded one: compute everything from here on
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = dict(kwargs or {})
        if not _ruled(func, args, kwargs):
            return func(*args, **kwargs)
        out = self._primal(func, _shapes(args, kwargs))
        x, *rest = args
        x_p, x_t = fwAD.unpack_dual(x)
        if func in _BILINEAR:
            w, *rest = rest
            b = rest.pop(0) if rest else kwargs.pop("bias", None)
            w_p, w_t = fwAD.unpack_dual(w)
            b_p, b_t = fwAD.unpack_dual(b) if b is not None else (None, None)
            if out is None:
                out = func(x_p, w_p, b_p, *rest, **kwargs)
            terms = []
            if w_t is not None:  # ḃ rides along as this call's bias
                terms.append(func(x_p, w_t, b_t, *rest, **kwargs))
            elif b_t is not None:
                terms.append((b_t if func is F.linear else b_t.view(-1, *([1] * (out.dim() - 2)))).expand_as(out))
            if x_t is not None:
                terms.append(func(x_t, w_p, None, *rest, **kwargs))
            factors = self.factored.get(id(w)) if func is F.linear else None  # the argument itself, dual or not
            if factors:  # Ẇx with Ẇ = Σ δ_kᵀ a_k: (x a_kᵀ) δ_k, never forming Ẇ
                rows = x_p.reshape(-1, x_p.shape[-1])
                term = sum((rows @ a.T) @ d for a, d in factors)
                terms.append(term.reshape(out.shape))  # type: ignore[union-attr]
            if not terms:
                return out
            tangent = terms[0]
            for t in terms[1:]:
                tangent = tangent + t
            return fwAD.make_dual(out, tangent)
        if out is None:
            out = func(x_p, *rest, **kwargs)
        if x_t is None:
            return out
        tangent = func(x_t, *rest, **kwargs) if func in _LINEAR else _ELEMENTWISE[func](x_t, out)
        return fwAD.make_dual(out, tangent)


def model_jvp(
    model: nn.Module,
    params: Params,
    tangents: Params,
    x: Any,
    *,
    rng_state: tuple[Tensor, Tensor | None] | None = None,
    forward: Forward | None = None,
    device: torch.device | None = None,
    record: LinearRecord | None = None,
    factored: dict[str, Factors] | None = None,
) -> Tensor:
    """``J_θ v``: the directional derivative of ``model(x)`` (``forward(model, x)``) at ``params``
    along ``tangents``, by forward-mode autodiff (one forward pass carrying primal and tangent).

    The model runs in its current mode. Buffers are cloned for the call, so BatchNorm in train
    mode uses (and differentiates through) the batch statistics without touching the module's
    running statistics. With ``rng_state`` (from :func:`capture_rng`) the generators are set to it
    for the call and restored afterwards, so dropout replays the masks of the forward pass that
    ``rng_state`` preceded. Linear layers and convolutions take their tangents by plain calls of
    the op (:class:`_RuledTangents`); the result equals ``torch.func.jvp``'s to rounding. With
    ``record`` (a :class:`LinearRecord` of the forward pass at the same ``params`` and ``x``, with
    the same RNG state) their primal outputs are reused rather than recomputed. ``factored``: linear
    weights whose tangent is given as factors (:class:`FactoredLinear`), in addition to any in
    ``tangents`` (names in neither have a zero tangent).
    """
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    primals = {k: v.detach() for k, v in params.items()}
    first = next(iter(primals.values()))
    tangent_mode = _RuledTangents(record)
    with _replaying(rng_state, device or first.device), torch.no_grad(), fwAD.dual_level(), tangent_mode:
        duals = {k: fwAD.make_dual(p, tangents[k].detach()) if k in tangents else p for k, p in primals.items()}
        tangent_mode.factored = {id(duals[k]): f for k, f in (factored or {}).items()}
        primal, tangent = fwAD.unpack_dual(call_at(model, duals, buffers, x, forward))
        return torch.zeros_like(primal) if tangent is None else tangent


def model_forward_difference(
    model: nn.Module,
    params: Params,
    tangents: Params,
    x: Any,
    outputs: Tensor,
    *,
    rng_state: tuple[Tensor, Tensor | None] | None = None,
    forward: Forward | None = None,
    device: torch.device | None = None,
    eps: float | None = None,
) -> Tensor:
    """``(f(θ + h·v) − f(θ)) / h ≈ J_θ v``: the Jacobian-vector product of :func:`model_jvp` by one
    extra forward pass, reusing the outputs ``f(θ)`` of the base forward (``outputs``).

    Same model state as :func:`model_jvp`: current mode, cloned buffers (BatchNorm uses the batch
    statistics, as the base forward did), dropout masks replayed from ``rng_state``. The step is
    ``h = eps · (1 + ‖θ‖) / ‖v‖`` with ``eps`` the square root of the dtype's machine epsilon by
    default (the usual choice balancing truncation against rounding error).
    """
    primals = {k: v.detach() for k, v in params.items()}
    tans = {k: tangents[k].detach() for k in primals}
    first = next(iter(primals.values()))
    if eps is None:
        eps = float(torch.finfo(first.dtype).eps) ** 0.5
    with torch.no_grad():
        v_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tans.values()]))
        p_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in primals.values()]))
        h = eps * (1 + p_norm) / v_norm.clamp_min(torch.finfo(first.dtype).tiny)  # v = 0 gives a zero difference
        shifted = {k: p + h * tans[k] for k, p in primals.items()}
        buffers = {k: b.clone() for k, b in model.named_buffers()}
        with _replaying(rng_state, device or first.device):
            moved = call_at(model, shifted, buffers, x, forward)
        return (moved - outputs.detach()) / h


@contextlib.contextmanager
def _replaying(rng_state: tuple[Tensor, Tensor | None] | None, device: torch.device) -> Iterator[None]:
    """Run the block with the generators set to ``rng_state`` (restored afterwards), so dropout
    replays the masks of the forward pass that ``rng_state`` preceded; ``None``: as they are."""
    if rng_state is None:
        yield
        return
    cpu_state, cuda_state = rng_state
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, device=device)
        yield


def capture_rng(device: torch.device) -> tuple[Tensor, Tensor | None]:
    """The generator states that a forward pass on ``device`` will draw dropout masks from."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def loss_meta_gradient(
    loss: nn.Module, outputs: Tensor, target: Tensor, direction: Tensor, phi: Sequence[Tensor]
) -> tuple[Tensor, ...]:
    """``∂/∂φ ⟨direction, ∇_z M_φ(z, y)⟩`` at ``z = outputs``: a double backward through ``loss`` only."""
    z = outputs.detach().requires_grad_(True)
    (gz,) = torch.autograd.grad(loss(z, target), z, create_graph=True)
    return torch.autograd.grad((gz * direction.detach()).sum(), list(phi), allow_unused=True)
