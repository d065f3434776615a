"""``model_jvp`` (forward mode with plain-op tangents for linear layers and convolutions) against
``torch.func.jvp`` and against a central finite difference, in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, jvp

from adaloss.functional import capture_rng, model_jvp
from adaloss.functional.meta import LinearRecord
from adaloss.models import create_model


class _Mixed(nn.Module):
    """Conv with and without bias, a 1-d conv, BatchNorm, dropout, pooling and a functional linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.conv_nb = nn.Conv2d(4, 3, 3, bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.conv1d = nn.Conv1d(3, 2, 2)
        self.drop = nn.Dropout(0.3)
        self.w = nn.Parameter(torch.randn(5, 2 * 15))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(x))
        h = torch.nn.functional.avg_pool2d(self.bn(self.conv_nb(h)), 1).sigmoid()
        h = torch.nn.functional.adaptive_avg_pool2d(torch.relu(h), (4, 4))
        h = self.conv1d(h.flatten(2)).tanh()
        return torch.nn.functional.linear(self.drop(h).flatten(1), self.w)


@pytest.mark.parametrize("name", ["logistic", "mlp", "lenet5", "mixed"])
def test_jvp_equals_torch_func_jvp_and_a_finite_difference(name: str) -> None:
    torch.manual_seed(0)
    if name == "mixed":
        model, x = _Mixed().double(), torch.randn(6, 2, 6, 6, dtype=torch.float64)
    else:
        model = create_model(name, (1, 28, 28), 10).double()
        x = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    model.train()
    params = {k: p.detach() for k, p in model.named_parameters()}
    tangents = {k: torch.randn_like(p) for k, p in params.items()}
    rng = capture_rng(x.device)
    running = {k: b.clone() for k, b in model.named_buffers()}
    got = model_jvp(model, params, tangents, x, rng_state=rng)
    for k, b in model.named_buffers():
        assert torch.equal(b, running[k]), "the JVP must not move BatchNorm's running statistics"

    def f(p: dict[str, torch.Tensor]) -> torch.Tensor:
        torch.set_rng_state(rng[0])
        return functional_call(model, (p, {k: b.clone() for k, b in model.named_buffers()}), (x,))

    reference = jvp(f, (params,), (tangents,))[1]
    torch.testing.assert_close(got, reference, rtol=1e-10, atol=1e-12)
    # with the primal outputs recorded from the forward at the same point: the same tangent
    record = LinearRecord()
    torch.set_rng_state(rng[0])
    with record:
        functional_call(model, (params, {k: b.clone() for k, b in model.named_buffers()}), (x,))
    assert len(record.calls) >= 1
    torch.testing.assert_close(model_jvp(model, params, tangents, x, rng_state=rng, record=record), reference,
                               rtol=1e-10, atol=1e-12)
    # a record of another forward (other inputs: the ops match by shape, not by value) is caught only
    # through its shapes; one of another batch size is left at its first call
    other = LinearRecord()
    with other:
        model(torch.cat([x, x]))
    torch.testing.assert_close(model_jvp(model, params, tangents, x, rng_state=rng, record=other), reference,
                               rtol=1e-10, atol=1e-12)
    h = 1e-6
    plus = f({k: p + h * tangents[k] for k, p in params.items()})
    minus = f({k: p - h * tangents[k] for k, p in params.items()})
    torch.testing.assert_close(got, (plus - minus) / (2 * h), rtol=1e-5, atol=1e-6)


def test_jvp_without_tangents_on_some_parameters_is_zero_there() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    params = {k: p.detach() for k, p in model.named_parameters()}
    zero = {k: torch.zeros_like(p) for k, p in params.items()}
    assert torch.equal(model_jvp(model, params, zero, x), torch.zeros(5, 2, dtype=torch.float64))


class _Tied(nn.Module):
    """A wide first layer, a sequence axis, and an output layer tied to the input embedding (its
    weight is used by ``F.linear`` and by a matmul)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(64, 256)
        self.out = nn.Linear(256, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))  # x: (batch, 3, 64)
        return self.out(h).sum(1) + (h @ self.inp.weight).mean(1)


@pytest.mark.parametrize("name", ["mlp", "lenet5", "tied"])
def test_factored_weight_gradients_give_the_dense_gradient_and_jvp(name: str) -> None:
    """FactoredLinear's δᵀa equals autograd's weight gradient, and model_jvp with those factors
    (plus any dense part, for a weight also used outside F.linear) equals the dense JVP."""
    from adaloss.functional.meta import FactoredLinear, call_at

    torch.manual_seed(0)
    if name == "tied":
        model, shape = _Tied().double(), (3, 64)
    else:
        model, shape = create_model(name, (1, 28, 28), 10).double(), (1, 28, 28)
    xm, x = torch.randn(40, *shape, dtype=torch.float64), torch.randn(24, *shape, dtype=torch.float64)
    theta = {k: p.detach().clone().requires_grad_(True) for k, p in model.named_parameters()}

    def loss() -> torch.Tensor:
        return call_at(model, theta, {}, xm).pow(2).mean()

    dense = dict(zip(theta, torch.autograd.grad(loss(), list(theta.values()))))
    with FactoredLinear(theta, rows_ratio=24 / 40) as record:
        value = loss()
    assert record.calls, "a wide layer is factored"
    names = list(theta)
    grads = torch.autograd.grad(value, [*theta.values(), *(out for _, _, out in record.calls)], allow_unused=True)
    partial, factors = record.gradients(dict(zip(names, grads)), grads[len(names):])
    for n in names:
        whole = sum(d.T @ a for a, d in factors[n]) if n in factors else partial[n]
        torch.testing.assert_close(whole, dense[n], rtol=1e-10, atol=1e-12)
    assert ("inp.weight" in partial) == (name == "tied")  # used by a matmul too: its whole gradient is dense
    assert set(factors) | set(partial) == set(names) and not set(factors) & set(partial)
    params = {k: p.detach() for k, p in model.named_parameters()}
    torch.testing.assert_close(model_jvp(model, params, partial, x, factored=factors),
                               model_jvp(model, params, dense, x), rtol=1e-10, atol=1e-12)


def test_a_narrow_output_layer_is_not_factored() -> None:
    from adaloss.functional.meta import FactoredLinear, call_at

    model = create_model("mlp", (1, 28, 28), 10, hidden=[1000])
    theta = {k: p.detach().requires_grad_(True) for k, p in model.named_parameters()}
    with FactoredLinear(theta) as record:
        call_at(model, theta, {}, torch.randn(128, 1, 28, 28))
    # 784 -> 1000 at 128 rows: 128·128·1784 < 784·1000·256; 1000 -> 10: 128·128·1010 > 1000·10·256
    assert record.decided == {"layers.0.weight": True, "layers.2.weight": False}
