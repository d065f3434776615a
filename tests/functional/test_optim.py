from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from adaloss.functional import adam, sgd

SGD_CASES: dict[str, dict[str, Any]] = {
    "plain": {},
    "momentum": {"momentum": 0.9},
    "dampening": {"momentum": 0.9, "dampening": 0.3},
    "nesterov": {"momentum": 0.9, "nesterov": True},
    "weight_decay": {"momentum": 0.5, "weight_decay": 1e-2},
    "maximize": {"momentum": 0.9, "maximize": True, "weight_decay": 1e-3},
}
ADAM_CASES: dict[str, dict[str, Any]] = {
    "adam": {},
    "adam_wd": {"weight_decay": 1e-2},
    "adam_amsgrad": {"amsgrad": True, "weight_decay": 1e-3},
    "adam_maximize": {"maximize": True},
    "adamw": {"weight_decay": 1e-2, "decoupled_weight_decay": True},
    "adamw_amsgrad": {"weight_decay": 1e-2, "decoupled_weight_decay": True, "amsgrad": True},
}


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _batch(step: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return torch.randn(16, 5, generator=gen, dtype=torch.float64), torch.randint(0, 3, (16,), generator=gen)


def _torch_state(opt: torch.optim.Optimizer, model: nn.Module) -> dict[str, dict[str, Tensor]]:
    return {name: dict(opt.state[p]) for name, p in model.named_parameters() if p in opt.state}


def _run(kind: str, options: dict[str, Any], steps: int = 20) -> None:
    model = _mlp()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    reference = copy.deepcopy(model)
    lr = 0.05 if kind == "sgd" else 0.01
    if kind == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(reference.parameters(), lr=lr, **options)
    else:
        opt = torch.optim.Adam(reference.parameters(), lr=lr, **options)
    state: dict[str, dict[str, Tensor]] = {}
    for step in range(steps):
        x, y = _batch(step)
        leaves = {n: p.requires_grad_() for n, p in params.items()}
        loss = nn.functional.cross_entropy(functional_call(model, leaves, (x,)), y)
        grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
        current_lr = lr * (0.3 if step >= 10 else 1.0)
        fn = sgd if kind == "sgd" else adam
        params, state = fn({n: p.detach() for n, p in params.items()}, grads, state, lr=current_lr, **options)

        opt.param_groups[0]["lr"] = current_lr
        opt.zero_grad()
        nn.functional.cross_entropy(reference(x), y).backward()
        opt.step()
        for name, p in reference.named_parameters():
            torch.testing.assert_close(params[name], p.detach(), rtol=1e-12, atol=1e-15)
        expected = _torch_state(opt, reference)
        assert {n: e for n, e in state.items() if e}.keys() == expected.keys()
        for name, entry in expected.items():
            assert state[name].keys() == entry.keys()
            for key, value in entry.items():
                assert state[name][key].dtype == value.dtype and state[name][key].device == value.device
                torch.testing.assert_close(state[name][key].detach(), value, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("case", list(SGD_CASES))
def test_sgd_follows_torch_sgd(case: str) -> None:
    _run("sgd", SGD_CASES[case])


@pytest.mark.parametrize("case", list(ADAM_CASES))
def test_adam_follows_torch_adam(case: str) -> None:
    _run("adam", ADAM_CASES[case])


def test_adam_step_dtype_follows_default_dtype() -> None:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        _run("adam", {"amsgrad": True}, steps=2)
    finally:
        torch.set_default_dtype(previous)


def _small() -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    gen = torch.Generator().manual_seed(1)
    params = {
        "w": torch.randn(3, 2, generator=gen, dtype=torch.float64),
        "b": torch.randn(2, generator=gen, dtype=torch.float64),
    }
    grads = {n: torch.randn(p.shape, generator=gen, dtype=torch.float64) for n, p in params.items()}
    return params, grads


def test_sgd_is_differentiable_at_a_later_step() -> None:
    params, grads = _small()
    options: dict[str, Any] = {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}
    _, state = sgd(params, grads, {}, **options)

    def step(w: Tensor, b: Tensor, gw: Tensor, gb: Tensor) -> tuple[Tensor, ...]:
        new, new_state = sgd({"w": w, "b": b}, {"w": gw, "b": gb}, state, **options)
        return new["w"], new["b"], new_state["w"]["momentum_buffer"]

    inputs = tuple(t.clone().requires_grad_() for t in (*params.values(), *grads.values()))
    assert torch.autograd.gradcheck(step, inputs)


def test_adam_is_differentiable_at_a_later_step() -> None:
    params, grads = _small()
    grads["b"][0] = 0.0  # a zero gradient on the first step keeps exp_avg_sq at 0 there
    options: dict[str, Any] = {"lr": 0.1, "weight_decay": 0.01, "amsgrad": True}
    _, state = adam(params, grads, {}, **options)
    _, state = adam(params, {n: g * 0.5 for n, g in grads.items()}, state, **options)

    def step(w: Tensor, b: Tensor, gw: Tensor, gb: Tensor) -> tuple[Tensor, ...]:
        new, new_state = adam({"w": w, "b": b}, {"w": gw, "b": gb}, state, **options)
        return new["w"], new["b"], new_state["w"]["exp_avg"], new_state["w"]["exp_avg_sq"]

    inputs = tuple(t.clone().requires_grad_() for t in (*params.values(), *grads.values()))
    assert torch.autograd.gradcheck(step, inputs)


def test_zero_gradient_gives_finite_derivatives() -> None:
    params, grads = _small()
    grads["b"] = torch.zeros_like(grads["b"]).requires_grad_()
    new, _ = adam(params, grads, {}, lr=0.1)
    (g,) = torch.autograd.grad(new["b"].sum(), grads["b"])
    assert torch.isfinite(g).all()


def test_inputs_are_not_mutated_and_missing_grads_pass_through() -> None:
    params, grads = _small()
    _, state = adam(params, grads, {}, lr=0.1)
    snapshot = copy.deepcopy((params, grads, state))
    new, new_state = adam(params, {"w": grads["w"]}, state, lr=0.1)
    assert new is not params and new_state is not state and new_state["b"] is not state["b"]
    assert new["b"] is params["b"] and new_state["b"]["step"] is state["b"]["step"]
    assert new_state["w"]["step"].item() == 2.0 and state["w"]["step"].item() == 1.0
    for before, after in zip(snapshot, (params, grads, state)):
        for name in before:
            values = before[name].values() if isinstance(before[name], dict) else [before[name]]
            now = after[name].values() if isinstance(after[name], dict) else [after[name]]
            assert all(torch.equal(a, b) for a, b in zip(values, now))


def test_invalid_settings_raise_with_names() -> None:
    params, grads = _small()
    with pytest.raises(ValueError, match="`lr` to be >= 0, but got -1"):
        sgd(params, grads, {}, lr=-1)
    with pytest.raises(ValueError, match="`nesterov=True` needs `momentum` > 0"):
        sgd(params, grads, {}, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"`betas\[1\]` to be in \[0, 1\), but got 1.0"):
        adam(params, grads, {}, lr=0.1, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match=r"every name in `grads`.*\['c'\]"):
        adam(params, {"c": grads["w"]}, {}, lr=0.1)
