from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from adaloss.methods import DifferentiableOptimizer

OptimFactory = Callable[[list[dict[str, Any]]], torch.optim.Optimizer]

CASES: dict[str, OptimFactory] = {
    "sgd": lambda groups: torch.optim.SGD(groups, lr=0.1),
    "sgd_momentum": lambda groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9),
    "sgd_dampening": lambda groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9, dampening=0.3),
    "sgd_nesterov": lambda groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True),
    "sgd_weight_decay": lambda groups: torch.optim.SGD(groups, lr=0.1, momentum=0.5, weight_decay=1e-2),
    "sgd_maximize": lambda groups: torch.optim.SGD(groups, lr=0.01, momentum=0.9, maximize=True),
    "adam": lambda groups: torch.optim.Adam(groups, lr=0.01),
    "adam_weight_decay": lambda groups: torch.optim.Adam(groups, lr=0.01, weight_decay=1e-2),
    "adam_amsgrad": lambda groups: torch.optim.Adam(groups, lr=0.01, amsgrad=True, weight_decay=1e-3),
    "adamw": lambda groups: torch.optim.AdamW(groups, lr=0.01, weight_decay=1e-2),
    "adamw_amsgrad": lambda groups: torch.optim.AdamW(groups, lr=0.01, amsgrad=True, maximize=True),
}


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _groups(model: nn.Sequential) -> list[dict[str, Any]]:
    # two groups, the second with its own LR, to check per-group hyper-parameters
    return [{"params": list(model[0].parameters())}, {"params": list(model[2].parameters()), "lr": 0.02}]


def _batch(step: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return torch.randn(16, 5, generator=gen, dtype=torch.float64), torch.randint(0, 3, (16,), generator=gen)


def _grads(model: nn.Module, step: int, names: list[str]) -> dict[str, Tensor]:
    x, y = _batch(step)
    loss = nn.functional.cross_entropy(model(x), y)
    params = dict(model.named_parameters())
    return dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names])))


def _torch_step(model: nn.Module, opt: torch.optim.Optimizer, step: int) -> None:
    x, y = _batch(step)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def _functional_step(model: nn.Module, dopt: DifferentiableOptimizer, step: int) -> None:
    grads = _grads(model, step, dopt.names)
    dopt.commit(*dopt.update(dopt.params(), grads))


def _assert_same(
    a: nn.Module, opt_a: torch.optim.Optimizer, b: nn.Module, opt_b: torch.optim.Optimizer
) -> None:
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-15, msg=name)
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for index, entry in sb["state"].items():
        assert sa["state"][index].keys() == entry.keys()
        for key, value in entry.items():
            got = sa["state"][index][key]
            assert got.dtype == value.dtype and not got.requires_grad
            torch.testing.assert_close(got, value, rtol=1e-12, atol=1e-15)


def _pair(case: str) -> tuple[nn.Sequential, torch.optim.Optimizer, nn.Sequential, torch.optim.Optimizer]:
    a = _mlp()
    b = copy.deepcopy(a)
    return a, CASES[case](_groups(a)), b, CASES[case](_groups(b))


@pytest.mark.parametrize("case", list(CASES))
def test_trajectory_matches_torch_optim_with_a_schedule(case: str) -> None:
    a, opt_a, b, opt_b = _pair(case)
    sched_a = torch.optim.lr_scheduler.MultiStepLR(opt_a, milestones=[7, 14], gamma=0.3)
    sched_b = torch.optim.lr_scheduler.MultiStepLR(opt_b, milestones=[7, 14], gamma=0.3)
    dopt = DifferentiableOptimizer(opt_a, a)
    for step in range(20):
        _functional_step(a, dopt, step)
        _torch_step(b, opt_b, step)
        sched_a.step()
        sched_b.step()
        _assert_same(a, opt_a, b, opt_b)
    assert opt_a.param_groups[1]["lr"] == pytest.approx(0.02 * 0.09)


@pytest.mark.parametrize("case", ["sgd_momentum", "adamw_amsgrad"])
def test_ordinary_steps_and_a_reload_continue_seamlessly(case: str) -> None:
    a, opt_a, b, opt_b = _pair(case)
    dopt = DifferentiableOptimizer(opt_a, a)
    for step in range(4):
        _functional_step(a, dopt, step)
        _torch_step(b, opt_b, step)
    for step in range(4, 7):
        _torch_step(a, opt_a, step)
        _torch_step(b, opt_b, step)
    _assert_same(a, opt_a, b, opt_b)
    # load_state_dict replaces the param-group dicts; the bridge must follow the new ones
    opt_a.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    opt_a.param_groups[0]["lr"] = opt_b.param_groups[0]["lr"] = 0.005
    for step in range(7, 10):
        _functional_step(a, dopt, step)
        _torch_step(b, opt_b, step)
    _assert_same(a, opt_a, b, opt_b)


def _advance(case: str, steps: int) -> tuple[nn.Sequential, DifferentiableOptimizer]:
    a, opt_a, _, _ = _pair(case)
    dopt = DifferentiableOptimizer(opt_a, a)
    for step in range(steps):
        _functional_step(a, dopt, step)
    return a, dopt


@pytest.mark.parametrize("steps", [0, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_vjp_grads_matches_autograd_through_update(case: str, steps: int) -> None:
    a, dopt = _advance(case, steps)
    grads = _grads(a, 50, dopt.names)
    gen = torch.Generator().manual_seed(7)
    cotangent = {n: torch.randn(g.shape, generator=gen, dtype=g.dtype) for n, g in grads.items()}
    leaves = {n: g.detach().clone().requires_grad_() for n, g in grads.items()}
    new, _ = dopt.update(dopt.params(), leaves)
    expected = torch.autograd.grad([new[n] for n in leaves], list(leaves.values()), list(cotangent.values()))
    got = dopt.vjp_grads(dopt.params(), grads, cotangent)
    assert list(got) == dopt.names
    for name, value in zip(leaves, expected):
        torch.testing.assert_close(got[name], value, rtol=1e-12, atol=1e-15, msg=name)


@pytest.mark.parametrize("case", ["sgd_nesterov", "adam_amsgrad"])
def test_update_is_differentiable_wrt_grads(case: str) -> None:
    a, dopt = _advance(case, 2)
    names = dopt.names
    grads = _grads(a, 50, names)
    params = dopt.params()

    def step(*gs: Tensor) -> tuple[Tensor, ...]:
        new, _ = dopt.update(params, dict(zip(names, gs)))
        return tuple(new[n] for n in names)

    assert torch.autograd.gradcheck(step, tuple(g.detach().clone().requires_grad_() for g in grads.values()))


def test_unsupported_optimizer_raises() -> None:
    model = _mlp()
    expected = r"one of \['torch.optim.SGD', 'torch.optim.Adam', 'torch.optim.AdamW'\], but got .*\.RMSprop"
    with pytest.raises(TypeError, match=expected):
        DifferentiableOptimizer(torch.optim.RMSprop(model.parameters()), model)


def test_parameter_sets_must_match() -> None:
    model = _mlp()
    with pytest.raises(ValueError, match=r"trainable parameter of `model`.*\['2.weight', '2.bias'\] missing"):
        DifferentiableOptimizer(torch.optim.SGD(model[0].parameters(), lr=0.1), model)
    stray = nn.Parameter(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"only parameters of `model`, but got 1 other .* \[\(4, 2\)\]"):
        DifferentiableOptimizer(torch.optim.SGD([*model.parameters(), stray], lr=0.1), model)
    with pytest.raises(ValueError, match="`fused` False or None"):
        DifferentiableOptimizer(torch.optim.Adam(model.parameters(), fused=True), model)


def test_unknown_names_raise() -> None:
    model = _mlp()
    dopt = DifferentiableOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model)
    grads = {"9.weight": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"names in `grads` to be parameters of the model .*\['9.weight'\]"):
        dopt.update(dopt.params(), grads)
    with pytest.raises(ValueError, match=r"`new_params\['0.bias'\]` to have shape \(8,\), but got \(3,\)"):
        dopt.commit({"0.bias": torch.zeros(3)}, {})


@pytest.mark.parametrize("include_frozen", [False, True])
def test_frozen_parameters_are_ignored(include_frozen: bool) -> None:
    a = _mlp()
    a[0].weight.requires_grad_(False)
    b = copy.deepcopy(a)
    frozen = a[0].weight.detach().clone()
    opt_a, opt_b = (
        torch.optim.Adam([p for p in m.parameters() if include_frozen or p.requires_grad], lr=0.01)
        for m in (a, b)
    )
    dopt = DifferentiableOptimizer(opt_a, a)
    assert dopt.names == ["0.bias", "2.weight", "2.bias"] and list(dopt.params()) == dopt.names
    for step in range(3):
        grads = _grads(a, step, dopt.names)
        grads["0.weight"] = torch.ones_like(frozen)  # given anyway: ignored, as torch ignores it
        params = {**dopt.params(), "0.weight": a[0].weight.detach()}
        new, state = dopt.update(params, grads)
        assert "0.weight" not in state
        dopt.commit(new, state)
        _torch_step(b, opt_b, step)
    assert torch.equal(a[0].weight, frozen)
    _assert_same(a, opt_a, b, opt_b)


def test_parameters_without_gradient_are_not_stepped() -> None:
    a, opt_a, b, opt_b = _pair("adam")
    dopt = DifferentiableOptimizer(opt_a, a)
    for step in range(3):
        grads = _grads(a, step, dopt.names)
        if step == 1:
            del grads["2.bias"]
        dopt.commit(*dopt.update(dopt.params(), grads))
        _torch_step(b, opt_b, step)
        if step == 0:
            b[2].bias.requires_grad_(False)  # its .grad is then None on the next step
        elif step == 1:
            b[2].bias.requires_grad_(True)
    assert opt_a.state[a[2].bias]["step"].item() == 2.0
    _assert_same(a, opt_a, b, opt_b)
