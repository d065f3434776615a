"""AdaLFL's learned base learning rate (``learn_lr``): its meta-gradient against float64 finite
differences and a hand-written create_graph unroll, for SGD with momentum, Nesterov and Adam."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import adaloss
from adaloss.training import TrainConfig, read_jsonl

OPTIMIZERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.3, momentum=0.9, weight_decay=1e-2),
    "nesterov": lambda p: torch.optim.SGD(p, lr=0.3, momentum=0.9, nesterov=True),
    "adam": lambda p: torch.optim.Adam(p, lr=0.02, weight_decay=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.02, weight_decay=0.1),
}


def _setup(kind: str, learn_lr: str = "global"):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    opt = OPTIMIZERS[kind](model.parameters())
    loss = adaloss.LossNetwork(task="classification").double()
    adalfl = adaloss.AdaLFL(model, opt, loss=loss, meta_optimizer=lambda p: torch.optim.SGD(p, lr=0.0),
                            learn_lr=learn_lr, lr_meta_optimizer=lambda p: torch.optim.SGD(p, lr=1.0),
                            initialized=True)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (96,), generator=g)
    return model, opt, loss, adalfl, x, y


def _meta_loss_after_torch_step(model, opt, loss, batch, meta_batch, log_lr: float, kind: str) -> float:  # type: ignore[no-untyped-def]
    """L_T(θ') with θ' from torch.optim itself at LR · exp(ρ): the finite-difference reference."""
    m = copy.deepcopy(model)
    o = OPTIMIZERS[kind](m.parameters())
    o.load_state_dict(copy.deepcopy(opt.state_dict()))
    for group in o.param_groups:
        group["lr"] = group["lr"] * float(torch.exp(torch.tensor(log_lr, dtype=torch.float64)))
    o.zero_grad()
    loss(m(batch[0]), batch[1]).backward()
    o.step()
    with torch.no_grad():
        return float(F.cross_entropy(m(meta_batch[0]), meta_batch[1]))


def _naive_lr_grad(model, opt, loss, batch, meta_batch, log_lr: float, kind: str) -> float:  # type: ignore[no-untyped-def]
    """∂L_T/∂ρ by a create_graph unroll of the update written out by hand (torch's documented rules)."""
    rho = torch.tensor(log_lr, dtype=torch.float64, requires_grad=True)
    group = opt.param_groups[0]
    params = dict(model.named_parameters())
    g = dict(zip(params, torch.autograd.grad(loss(model(batch[0]), batch[1]), list(params.values()))))
    lr = group["lr"] * torch.exp(rho)
    theta1 = {}
    for n, p in params.items():
        st = opt.state[p]
        if kind in ("sgd_momentum", "nesterov"):
            d = g[n] + group["weight_decay"] * p
            buf = group["momentum"] * st["momentum_buffer"] + d
            d = d + group["momentum"] * buf if group["nesterov"] else buf
            theta1[n] = p - lr * d
        else:
            b1, b2 = group["betas"]
            step = float(st["step"]) + 1
            grad = g[n] + group["weight_decay"] * p if kind == "adam" else g[n]
            base = p * (1 - lr * group["weight_decay"]) if kind == "adamw" else p
            m = b1 * st["exp_avg"] + (1 - b1) * grad
            v = b2 * st["exp_avg_sq"] + (1 - b2) * grad**2
            denom = (v / (1 - b2**step)).sqrt() + group["eps"]
            theta1[n] = base - lr * (m / (1 - b1**step)) / denom
    meta = F.cross_entropy(functional_call(model, theta1, (meta_batch[0],)), meta_batch[1])
    (grad_rho,) = torch.autograd.grad(meta, rho)
    return float(grad_rho)


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_lr_meta_gradient_matches_finite_differences_and_naive_unroll_float64(kind: str) -> None:
    model, opt, loss, adalfl, x, y = _setup(kind)
    for i in range(3):  # momentum / Adam moments built up, ρ moved away from 0
        adalfl.step((x[16 * i : 16 * i + 16], y[16 * i : 16 * i + 16]), (x[64:], y[64:]))
    batch, meta_batch = (x[48:64], y[48:64]), (x[64:], y[64:])
    rho = float(adalfl.log_lr.detach())
    assert rho != 0.0
    eps = 1e-5
    fd = (_meta_loss_after_torch_step(model, opt, loss, batch, meta_batch, rho + eps, kind)
          - _meta_loss_after_torch_step(model, opt, loss, batch, meta_batch, rho - eps, kind)) / (2 * eps)
    naive = _naive_lr_grad(model, opt, loss, batch, meta_batch, rho, kind)
    adalfl.step(batch, meta_batch)
    got = rho - float(adalfl.log_lr.detach())  # SGD lr 1 on ρ: the step is minus the gradient
    assert abs(got - naive) <= 1e-9 * max(abs(naive), 1e-12)
    assert abs(got - fd) <= 1e-5 * abs(fd)


def test_per_group_lr_has_one_entry_per_param_group_and_scales_only_its_group() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4)).double()
    opt = torch.optim.SGD([{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.01}], lr=0.1)
    adalfl = adaloss.AdaLFL(model, opt, learn_lr="per_group", initialized=True,
                            loss=adaloss.LossNetwork(task="classification").double())
    x, y = torch.randn(32, 6, dtype=torch.float64), torch.randint(0, 4, (32,))
    stats = adalfl.step((x, y), (x, y))
    assert adalfl.log_lr.shape == (2,) and not torch.equal(adalfl.log_lr.detach(), torch.zeros(2))
    assert "lr_scale" in stats
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]  # the user's LRs are untouched


def test_state_dict_round_trip_with_learned_lr_and_named_error_without_it() -> None:
    model, opt, loss, adalfl, x, y = _setup("adam")
    batches = [((x[i : i + 16], y[i : i + 16]), (x[64:], y[64:])) for i in (0, 16, 32, 48)]
    for b, m in batches[:2]:
        adalfl.step(b, m)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "adalfl": adalfl.state_dict()}, buf)
    for b, m in batches[2:]:
        adalfl.step(b, m)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    model2, opt2, _, adalfl2, _, _ = _setup("adam")
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    adalfl2.load_state_dict(saved["adalfl"])
    for b, m in batches[2:]:
        adalfl2.step(b, m)
    assert torch.equal(adalfl.log_lr, adalfl2.log_lr)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    _, _, _, plain, _, _ = _setup("adam", learn_lr="off")
    with pytest.raises(ValueError, match="learned LR"):
        adalfl2.load_state_dict(plain.state_dict())


def test_learned_lr_from_the_cli_logs_lr_scale_and_resumes_exactly(kill_and_resume) -> None:  # type: ignore[no-untyped-def]
    base = TrainConfig(method="adalfl", steps=20, batch_size=32, log_every=5, checkpoint_every=10,
                       model_args={"hidden": [16]}, progress="off", momentum=0.9,
                       method_args={"init_steps": 3, "learn_lr": "global", "lr_meta_lr": 0.05})
    run = kill_and_resume(base)
    records = read_jsonl(run.full / "metrics.jsonl")
    scales = [r["train_lr_scale"] for r in records if "train_lr_scale" in r]
    assert len(scales) == 4 and len(set(scales)) > 1
