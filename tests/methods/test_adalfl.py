"""AdaLFL's fast meta-gradient against a naive create_graph implementation, in float64."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import adaloss
from adaloss.losses import LossNetwork
from adaloss.models import create_model
from adaloss.training import TrainConfig, read_jsonl, train


def _stream(x: torch.Tensor, y: torch.Tensor, batch: int):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    while True:
        idx = torch.randperm(len(x), generator=g)[:batch]
        yield x[idx], y[idx]


def _naive_update(params, grads, state, *, lr, momentum, nesterov, weight_decay):  # type: ignore[no-untyped-def]
    """torch.optim.SGD's documented update, written out by hand, differentiable in grads."""
    out = {}
    for n, p in params.items():
        d = grads[n] + weight_decay * p
        if momentum:
            buf = d if state.get(n) is None else momentum * state[n] + d
            d = d + momentum * buf if nesterov else buf
        out[n] = p - lr * d
    return out


def _naive_meta_grad(model, loss_net, opt, batch, meta_batch, *, nesterov):  # type: ignore[no-untyped-def]
    group = opt.param_groups[0]
    names = [n for n, p in model.named_parameters()]
    params = dict(model.named_parameters())
    state = {n: opt.state[p].get("momentum_buffer") for n, p in params.items()}
    x, y = batch
    m = loss_net(model(x), y)
    g = torch.autograd.grad(m, [params[n] for n in names], create_graph=True)
    theta1 = _naive_update(params, dict(zip(names, g)), state, lr=group["lr"], momentum=group["momentum"],
                           nesterov=nesterov, weight_decay=group["weight_decay"])
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    xm, ym = meta_batch
    loss = F.cross_entropy(functional_call(model, (theta1, buffers), (xm,)), ym)
    return torch.autograd.grad(loss, list(loss_net.parameters())), theta1


MODELS = {
    "mlp_dropout": ("mlp", (1, 8, 8), {"hidden": [16, 16], "dropout": 0.3}),
    "lenet5": ("lenet5", (1, 12, 12), {}),
    "mlp_batchnorm": ("mlp", (1, 8, 8), {"hidden": [16], "batch_norm": True}),
}


@pytest.mark.parametrize("model_key", list(MODELS))
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("meta_gradient", ["exact", "double_backward"])
def test_meta_gradient_matches_naive_create_graph_float64(model_key: str, nesterov: bool, meta_gradient: str) -> None:
    name, shape, kw = MODELS[model_key]
    torch.manual_seed(0)
    model = create_model(name, shape, 5, **kw).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, *shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (64,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=1e-3)
    loss_net = LossNetwork(task="classification").double()
    adalfl = adaloss.AdaLFL(model, opt, loss=loss_net, meta_optimizer=lambda p: torch.optim.SGD(p, lr=1.0),
                            initialized=True, meta_gradient=meta_gradient)  # type: ignore[arg-type]
    meta_stream, train_stream = _stream(x.flip(0), y.flip(0), 16), _stream(x, y, 16)
    for _ in range(3):  # build up momentum buffers and move φ first
        adalfl.step(next(train_stream), next(meta_stream))
    batch, meta_batch = next(train_stream), next(meta_stream)

    ref_model = copy.deepcopy(model)
    ref_loss = copy.deepcopy(loss_net)
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=1e-3)
    ref_opt.load_state_dict(opt.state_dict())
    torch.manual_seed(123)
    expected, theta1 = _naive_meta_grad(ref_model, ref_loss, ref_opt, batch, meta_batch, nesterov=nesterov)

    phi_before = [p.detach().clone() for p in loss_net.parameters()]
    torch.manual_seed(123)
    adalfl.step(batch, meta_batch)
    got = [before - after.detach() for before, after in zip(phi_before, loss_net.parameters())]  # SGD lr 1
    num = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(got, expected)))
    den = torch.sqrt(sum((b**2).sum() for b in expected))
    assert den > 0
    assert float(num / den) <= 1e-8
    # the base update kept is θ' itself
    for n, p in model.named_parameters():
        torch.testing.assert_close(p, theta1[n].detach(), rtol=1e-12, atol=1e-14)


def test_loss_network_is_vectorised_and_matches_per_class_loop() -> None:
    torch.manual_seed(0)
    net = LossNetwork(task="classification").double()
    logits = torch.randn(7, 4, dtype=torch.float64)
    target = torch.randint(0, 4, (7,))
    p = logits.softmax(-1)
    y = F.one_hot(target, 4).double()
    per_class = []
    for c in range(4):  # the reference implementation's per-class loop
        h = torch.stack([y[:, c], p[:, c]], dim=1)
        for layer in net.layers[:-1]:
            h = net.act(layer(h))
        per_class.append(net.act(net.layers[-1](h)).squeeze(1))
    expected = torch.stack(per_class, 1).mean(1).mean(0)  # 1/C over outputs, mean over the batch
    torch.testing.assert_close(net(logits, target), expected)


def test_output_activation_default_depends_on_task() -> None:
    assert LossNetwork(task="classification").output_activation == "smooth_leaky_relu"
    reg = LossNetwork(task="regression")
    assert reg.output_activation == "identity"
    # identity output: the pointwise loss is exactly the last linear layer's output
    y, p = torch.randn(5), torch.randn(5)
    h = torch.stack((y, p), -1)
    for layer in reg.layers[:-1]:
        h = reg.act(layer(h))
    torch.testing.assert_close(reg.pointwise(y, p), reg.layers[-1](h).squeeze(-1))
    with pytest.raises(ValueError, match="Expected `output_activation` to be one of"):
        LossNetwork(task="regression", output_activation="relu")  # type: ignore[arg-type]


def test_smooth_leaky_relu_hand_values() -> None:
    from adaloss.functional.activations import smooth_leaky_relu

    x = torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64)
    beta, gamma = 2.0, 0.25
    expected = gamma * x + (1 - gamma) * torch.log1p(torch.exp(beta * x)) / beta
    torch.testing.assert_close(smooth_leaky_relu(x, beta=beta, gamma=gamma), expected)


def test_adalfl_run_end_to_end_export_and_reuse(tmp_path: Path) -> None:
    cfg = TrainConfig(method="adalfl", steps=30, batch_size=32, eval_every=15, log_every=10, checkpoint_every=15,
                      keep_checkpoints=True, model_args={"hidden": [16]}, progress="off",
                      method_args={"init_steps": 5, "grad_ratio_every": 1}, run_dir=str(tmp_path / "a"))
    summary = train(cfg)
    assert set(summary["final"]) == {"valid_error", "test_error"}
    records = read_jsonl(tmp_path / "a" / "metrics.jsonl")
    assert records[0]["step"] == 0 and "prepare_meta_loss" in records[0]
    assert all(r["train_grad_norm_ratio"] > 0 for r in records if "train_grad_norm_ratio" in r)
    snaps = read_jsonl(tmp_path / "a" / "snapshots.jsonl")
    assert [s["step"] for s in snaps] == [0, 15, 30] and len(snaps[0]["p"]) == 101
    from adaloss.plotting import plot_run

    written = plot_run(tmp_path / "a")
    assert sorted(p.name for p in written) == ["implicit_lr.png", "learning_curves.png", "loss_evolution.png"]
    loss = adaloss.losses.load(tmp_path / "a" / "checkpoints" / "step00000015.pt")
    assert isinstance(loss, LossNetwork)
    out = adaloss.losses.save(loss, tmp_path / "loss.pt")
    again = adaloss.losses.load(out)
    z, t = torch.randn(4, 10), torch.randint(0, 10, (4,))
    assert torch.equal(loss(z, t), again(z, t))
    fixed = cfg.replace(method="learned_loss", method_args={"path": str(out)}, run_dir=str(tmp_path / "b"))
    assert set(train(fixed)["final"]) == {"valid_error", "test_error"}


@pytest.mark.parametrize("meta_gradient", ["exact", "double_backward"])
def test_adalfl_resume_is_exact(kill_and_resume, meta_gradient: str) -> None:  # type: ignore[no-untyped-def]
    base = TrainConfig(method="adalfl", steps=20, batch_size=32, log_every=5, checkpoint_every=10,
                       model_args={"hidden": [16]}, progress="off", momentum=0.9,
                       method_args={"init_steps": 3, "meta_gradient": meta_gradient})
    assert kill_and_resume(base).killed_at == 10  # killed right after the step-10 checkpoint


_META_EVERY_RUN = TrainConfig(method="adalfl", steps=20, batch_size=32, log_every=5, checkpoint_every=10,
                             model_args={"hidden": [16]}, progress="off", momentum=0.9,
                             method_args={"init_steps": 3, "meta_every": 4})


def test_meta_every_resume_mid_window_is_exact(kill_and_resume) -> None:  # type: ignore[no-untyped-def]
    """meta_every=4, killed after the step-10 checkpoint: steps 8–11 are one window (a meta step at 8,
    plain steps after it), so the run resumes between two meta steps, and ends on the same bits."""
    run = kill_and_resume(_META_EVERY_RUN)
    assert run.killed_at == 10 and 10 % 4 != 0


@pytest.mark.slow
def test_meta_every_resume_after_a_real_kill_mid_window_is_exact(kill_and_resume) -> None:  # type: ignore[no-untyped-def]
    """The same with ``adaloss train`` in a child process SIGKILLed as soon as a checkpoint exists."""
    run = kill_and_resume(_META_EVERY_RUN, kill="subprocess")
    assert run.killed_at % 4 != 0


def test_frozen_loss_after_offline_init_is_ml3(tmp_path: Path) -> None:
    """ml3 = online=False: φ changes only in prepare(); each step is an ordinary step on the frozen loss."""
    from adaloss.training import build_trainer

    cfg = TrainConfig(method="ml3", steps=6, batch_size=32, model_args={"hidden": [16]}, progress="off",
                      method_args={"init_steps": 4, "grad_ratio_every": 1}, run_dir=str(tmp_path))
    trainer = build_trainer(cfg)
    phi0 = [p.detach().clone() for p in trainer.learner.criterion.parameters()]
    trainer.learner.prepare()
    phi = [p.detach().clone() for p in trainer.learner.criterion.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(phi0, phi))
    for _ in range(3):
        model = copy.deepcopy(trainer.model)
        ref_opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
        x, y = next(copy.deepcopy(trainer.train_loader))
        ref_opt.zero_grad()
        trainer.learner.criterion(model(x), y).backward()
        ref_opt.step()
        out = trainer.learner.step(next(trainer.train_loader))
        assert "meta_loss" not in out and float(out["grad_norm_ratio"]) > 0
        for p, q in zip(trainer.model.parameters(), model.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=0)
    for a, b in zip(phi, trainer.learner.criterion.parameters()):
        assert torch.equal(a, b)


def test_unknown_adalfl_option_names_it_and_the_accepted_ones() -> None:
    from adaloss.learners import create_learner

    with pytest.raises(TypeError, match=r"Unknown option\(s\) \['hiden'\].*'hidden'.*Learner options: .*'init_steps'"):
        create_learner("adalfl", task="classification", hiden=[8])
    with pytest.raises(ValueError, match=r"`meta_batch` to be one of \['train', 'valid'\], but got 'test'"):
        create_learner("adalfl", task="classification", meta_batch="test", init_steps=0)


def test_a_kill_during_the_offline_initialisation_resumes_inside_it_exactly(kill_and_resume) -> None:  # type: ignore[no-untyped-def]
    from adaloss.checkpoint import load_checkpoint

    base = TrainConfig(method="adalfl", steps=6, batch_size=32, log_every=2, checkpoint_every=2,
                       model_args={"hidden": [16], "dropout": 0.2}, progress="off", momentum=0.9,
                       method_args={"init_steps": 7})
    run = kill_and_resume(base)  # killed right after the first checkpoint: 2 of the 7 unrolls done
    assert run.killed_at == 0
    records = read_jsonl(run.part / "metrics.jsonl")
    assert [r["step"] for r in records if "prepare_meta_loss" in r] == [0]
    state = load_checkpoint(run.full / "checkpoints" / "last.pt")
    assert state["learner"]["init_done"] == 7 and state["learner"]["initialized"]
