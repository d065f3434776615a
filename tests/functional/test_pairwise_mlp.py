"""The loss network's closed-form derivatives against autograd's double backward (float64)."""

from __future__ import annotations

import pytest
import torch

from adaloss.functional import loss_meta_gradient
from adaloss.losses import LossNetwork


def _net(task: str, output: str | None, bias: bool, hidden: tuple[int, ...]) -> LossNetwork:
    torch.manual_seed(0)
    net = LossNetwork(task=task, output_activation=output, bias=bias, hidden=hidden).double()  # type: ignore[arg-type]
    if bias:
        for layer in net.layers:
            torch.nn.init.normal_(layer.bias, std=0.5)
    return net


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("output", [None, "softplus", "identity", "smooth_leaky_relu"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("hidden", [(40, 40), (7,), (6, 5, 3)])
def test_value_gradient_and_mixed_gradient_equal_autograds(task: str, output: str | None, bias: bool,
                                                          hidden: tuple[int, ...]) -> None:
    net = _net(task, output, bias, hidden)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(9, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (9,), generator=g) if task == "classification" else torch.randn(9, 5, generator=g,
                                                                                             dtype=torch.float64)
    leaf = z.clone().requires_grad_(True)
    value = net(leaf, y)
    (grad,) = torch.autograd.grad(value, leaf)
    u = torch.randn(9, 5, generator=g, dtype=torch.float64)
    reference = loss_meta_gradient(net, z, y, u, list(net.parameters()))
    reference = tuple(torch.zeros_like(p) if r is None else r for p, r in zip(net.parameters(), reference))

    got_value, got_grad, cache = net.value_and_grad(z, y)
    mixed = net.mixed_grad(cache, u)
    torch.testing.assert_close(got_value, value.detach(), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(got_grad, grad, rtol=1e-8, atol=1e-12)
    assert len(mixed) == len(reference) and all(m.shape == r.shape for m, r in zip(mixed, reference))
    for m, r in zip(mixed, reference):
        # 1e-8: beyond β·a > 20 torch's softplus takes its slope as exactly 1 and its curvature as 0,
        # where the closed form keeps sigmoid(β·a) = 1 − 2e-9 (raw regression values reach there)
        torch.testing.assert_close(m, r, rtol=1e-8, atol=1e-12)


def test_mixed_gradient_is_a_finite_difference_of_the_first_order_one() -> None:
    """Independent of autograd: ∂/∂φ ⟨u, ∇_z M⟩ along a random δφ equals the central difference of
    ⟨u, ∇_z M⟩ (the closed-form first-order gradient) at φ ± h δφ."""
    net = _net("classification", None, True, (6, 4))
    g = torch.Generator().manual_seed(2)
    z = torch.randn(7, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (7,), generator=g)
    u = torch.randn(7, 3, generator=g, dtype=torch.float64)
    _, _, cache = net.value_and_grad(z, y)
    mixed = net.mixed_grad(cache, u)
    direction = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in net.parameters()]
    h = 1e-6

    def inner(sign: float) -> float:
        with torch.no_grad():
            for p, d in zip(net.parameters(), direction):
                p.add_(sign * h * d)
            value = float((net.value_and_grad(z, y)[1] * u).sum())
            for p, d in zip(net.parameters(), direction):
                p.sub_(sign * h * d)
        return value

    numeric = (inner(1.0) - inner(-1.0)) / (2 * h)
    analytic = float(sum((m * d).sum() for m, d in zip(mixed, direction)))
    assert abs(numeric - analytic) <= 1e-7 * max(1.0, abs(analytic))


def test_a_cache_without_curvature_cannot_serve_the_mixed_gradient() -> None:
    net = _net("classification", None, False, (4,))
    z, y = torch.randn(3, 2, dtype=torch.float64), torch.tensor([0, 1, 1])
    value, grad, cache = net.value_and_grad(z, y, mixed=False)
    full = net.value_and_grad(z, y)
    assert torch.equal(value, full[0]) and torch.equal(grad, full[1])
    with pytest.raises(ValueError, match="curvature=True"):
        net.mixed_grad(cache, torch.ones(3, 2, dtype=torch.float64))
