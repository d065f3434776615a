"""``adaloss.AdaLFL``, the drop-in object: against the trainer, torch.optim and float64 references."""

from __future__ import annotations

import copy
import functools
import io
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

import adaloss
from adaloss.data import BatchLoader, load_dataset
from adaloss.models import create_model
from adaloss.training import TrainConfig, build_trainer, seed_everything


def _data(n: int = 64, d: int = 6, c: int = 4, seed: int = 1, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randint(0, c, (n,), generator=g)


def _mlp(d: int = 6, c: int = 4, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, c)).to(dtype)


# ---------------------------------------------------------------------------- the trainer, one user of it


def test_plain_loop_over_adalfl_matches_adaloss_train_after_100_steps(tmp_path: Path) -> None:
    cfg = TrainConfig(dataset="digits", model="mlp", model_args={"hidden": [32]}, method="adalfl",
                      method_args={"init_steps": 20, "grad_ratio_every": 0}, steps=100, batch_size=32, lr=0.05,
                      momentum=0.9, seed=3, log_every=0, eval_every=0, progress="off", run_dir=str(tmp_path))
    trainer = build_trainer(cfg)
    trainer.fit()

    # the same run written as a user's loop: same seed, model, data order; no trainer, no context
    data = load_dataset("digits", valid_fraction=cfg.valid_fraction, seed=cfg.seed)
    seed_everything(cfg.seed)
    model = create_model("mlp", data.input_shape, data.num_outputs, hidden=[32])
    loss = adaloss.LossNetwork(task="classification")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    adalfl = adaloss.AdaLFL(model, optimizer, loss=loss)
    train = BatchLoader(data.train, batch_size=32, seed=cfg.seed)
    valid = BatchLoader(data.valid, batch_size=32, seed=cfg.seed + 1)
    adalfl.initialize(functools.partial(create_model, "mlp", data.input_shape, data.num_outputs, hidden=[32]),
                      train, valid, steps=20)
    for _ in range(100):
        adalfl.step(next(train), next(valid))

    for (name, p), q in zip(trainer.model.named_parameters(), model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=0, msg=name)
    for p, q in zip(trainer.learner.criterion.parameters(), loss.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=0)
    assert adalfl.steps == trainer.learner.steps == 100


# ---------------------------------------------------------------------------- hooks real loops need


def _naive_phi_grad(model, loss_net, lr, batch, meta_batch, *, max_norm=None, extra=None):  # type: ignore[no-untyped-def]
    """Plain SGD step, written out with a create_graph backward through everything (float64)."""
    params = dict(model.named_parameters())
    names = list(params)
    x, y = batch
    z = model(x)
    m = loss_net(z, y) + (extra(z, batch) if extra is not None else 0)
    g = torch.autograd.grad(m, [params[n] for n in names], create_graph=True)
    if max_norm is not None:
        norm = torch.sqrt(sum((t**2).sum() for t in g))
        coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        g = [t * coef for t in g]
    theta1 = {n: params[n] - lr * t for n, t in zip(names, g)}
    xm, ym = meta_batch
    meta = F.cross_entropy(functional_call(model, theta1, (xm,)), ym)
    return torch.autograd.grad(meta, list(loss_net.parameters())), theta1


@pytest.mark.parametrize("max_norm", [None, 1e-3, 1e6])
@pytest.mark.parametrize("with_extra", [False, True])
def test_clipping_and_extra_loss_keep_the_meta_gradient_exact_float64(max_norm: float | None, with_extra: bool) -> None:
    x, y = _data()
    model = _mlp()
    loss_net = adaloss.LossNetwork(task="classification").double()
    extra = (lambda z, batch: 1e-2 * (z**2).mean()) if with_extra else None
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    adalfl = adaloss.AdaLFL(model, opt, loss=loss_net, meta_optimizer=lambda p: torch.optim.SGD(p, lr=1.0),
                            max_grad_norm=max_norm, extra_loss=extra, initialized=True)
    batch, meta_batch = (x[:32], y[:32]), (x[32:], y[32:])
    expected, theta1 = _naive_phi_grad(copy.deepcopy(model), copy.deepcopy(loss_net), 0.5, batch, meta_batch,
                                       max_norm=max_norm, extra=extra)
    before = [p.detach().clone() for p in loss_net.parameters()]
    stats = adalfl.step(batch, meta_batch)
    got = [b - a.detach() for b, a in zip(before, loss_net.parameters())]
    num = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(got, expected)))
    den = torch.sqrt(sum((b**2).sum() for b in expected))
    assert den > 0 and float(num / den) <= 1e-8
    for n, p in model.named_parameters():
        torch.testing.assert_close(p, theta1[n].detach(), rtol=1e-12, atol=1e-14)
    assert ("extra_loss" in stats) == with_extra
    if max_norm == 1e-3:
        assert float(stats["grad_norm"]) > 1e-3  # the clipping was active


def test_clipped_base_update_is_the_one_clip_grad_norm_gives() -> None:
    """The kept θ' equals backward + clip_grad_norm_ + optimizer.step() on a copy (float32, Adam)."""
    x, y = _data(dtype=torch.float32)
    model = _mlp(dtype=torch.float32)
    ref_model = copy.deepcopy(model)
    loss_net = adaloss.LossNetwork(task="classification")
    ref_loss = copy.deepcopy(loss_net)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ref_opt = torch.optim.Adam(ref_model.parameters(), lr=1e-2)
    adalfl = adaloss.AdaLFL(model, opt, loss=loss_net, max_grad_norm=0.01, initialized=True,
                            meta_optimizer=lambda p: torch.optim.SGD(p, lr=0.0))  # φ fixed: same loss both sides
    for i in range(3):
        batch = (x[16 * i : 16 * i + 16], y[16 * i : 16 * i + 16])
        adalfl.step(batch, batch)
        ref_opt.zero_grad()
        ref_loss(ref_model(batch[0]), batch[1]).backward()
        torch.nn.utils.clip_grad_norm_(ref_model.parameters(), 0.01)
        ref_opt.step()
    for p, q in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_forward_and_target_hooks_take_dict_batches() -> None:
    x, y = _data()
    runs = []
    for dict_batches in (False, True):
        model = _mlp()
        loss_net = adaloss.LossNetwork(task="classification").double()
        torch.manual_seed(5)
        hooks = {"forward": lambda m, b: m(b["pixels"]), "target": lambda b: b["label"]} if dict_batches else {}
        adalfl = adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), loss=loss_net,
                                initialized=True, **hooks)
        for i in range(3):
            xb, yb, xm, ym = x[:32], y[:32], x[32:], y[32:]
            if dict_batches:
                adalfl.step({"pixels": xb, "label": yb}, {"pixels": xm, "label": ym})
            else:
                adalfl.step((xb, yb), (xm, ym))
        runs.append(([p.detach() for p in model.parameters()], [p.detach() for p in loss_net.parameters()]))
    for a, b in zip(runs[0][0] + runs[0][1], runs[1][0] + runs[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_grad_ratio_and_frozen_mode() -> None:
    x, y = _data()
    model = _mlp()
    adalfl = adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1), online=False, grad_ratio_every=1,
                            loss=adaloss.LossNetwork(task="classification").double(), initialized=True)
    phi = [p.detach().clone() for p in adalfl.loss.parameters()]
    stats = adalfl.step((x, y))  # ML3-style: no meta batch needed, φ stays
    assert set(stats) == {"loss", "grad_norm_ratio"} and float(stats["grad_norm_ratio"]) > 0
    assert all(torch.equal(a, b) for a, b in zip(phi, adalfl.loss.parameters()))


# ---------------------------------------------------------------------------- initialisation and warnings


def test_step_before_initialize_warns_once_naming_the_fix() -> None:
    x, y = _data()
    model = _mlp()
    adalfl = adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1),
                            loss=adaloss.LossNetwork(task="classification").double())
    with pytest.warns(UserWarning, match=r"initialize\(model_factory"):
        adalfl.step((x, y), (x, y))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adalfl.step((x, y), (x, y))  # once only


def test_initialize_cycles_a_dataloader_epoch_after_epoch_and_refuses_a_short_iterator() -> None:
    x, y = _data()
    seen: list[int] = []

    class Counting(TensorDataset):
        def __getitem__(self, i):  # type: ignore[no-untyped-def]
            seen.append(int(i))
            return super().__getitem__(i)

    loader = DataLoader(Counting(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    model = _mlp()
    adalfl = adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1),
                            loss=adaloss.LossNetwork(task="classification").double())
    out = adalfl.initialize(_mlp, loader, None, steps=10)  # 10 batches drawn from 4-batch epochs
    assert adalfl.initialized and out["meta_loss"] > 0
    assert len(seen) == 10 * 16
    epochs = [sorted(seen[k : k + 64]) for k in (0, 64)]
    assert epochs[0] == epochs[1] == list(range(64))  # whole epochs, each a fresh permutation
    assert seen[:64] != seen[64:128]
    fresh = adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1),
                           loss=adaloss.LossNetwork(task="classification").double())
    with pytest.raises(ValueError, match="`batches` is a one-shot iterator"):
        fresh.initialize(_mlp, iter([(x, y)]), None, steps=2)


def _grouped(model: nn.Module, lr: float = 0.1) -> torch.optim.Optimizer:
    """Weights and biases in separate groups with their own LR and weight decay (a common setup)."""
    weights = [p for n, p in model.named_parameters() if n.endswith("weight") and p.requires_grad]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias") and p.requires_grad]
    return torch.optim.SGD([{"params": weights, "weight_decay": 0.05}, {"params": biases, "lr": 3 * lr}],
                           lr=lr, momentum=0.9)


def _init_phi(model: nn.Module, optimizer: torch.optim.Optimizer, factory=None, **kw) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    x, y = _data()
    loss = adaloss.LossNetwork(task="classification").double()
    adalfl = adaloss.AdaLFL(model, optimizer, loss=loss, **kw)
    torch.manual_seed(3)
    adalfl.initialize(_mlp, [(x[:32], y[:32]), (x[32:], y[32:])], None, steps=4, optimizer_factory=factory)
    return [p.detach().clone() for p in [*loss.parameters(), adalfl.log_lr]]


@pytest.mark.parametrize("learn_lr", ["off", "per_group"])
def test_initialize_mirrors_the_users_param_groups_on_each_fresh_model(learn_lr: str) -> None:
    def run(factory=None, frozen: bool = False):  # type: ignore[no-untyped-def]
        model = _mlp()
        if frozen:
            model[0].bias.requires_grad_(False)
        torch.manual_seed(11)
        return _init_phi(model, _grouped(model), factory, learn_lr=learn_lr)

    def explicit(m: nn.Module, frozen: bool = False) -> torch.optim.Optimizer:  # the groups written by hand
        if frozen:
            m[0].bias.requires_grad_(False)
        return _grouped(m)

    default, by_hand = run(), run(explicit)
    assert all(torch.equal(a, b) for a, b in zip(default, by_hand))
    first_group_only = run(lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=0.05))
    assert not all(torch.equal(a, b) for a, b in zip(default, first_group_only))  # what the old default did
    frozen, frozen_by_hand = run(frozen=True), run(functools.partial(explicit, frozen=True))
    assert all(torch.equal(a, b) for a, b in zip(frozen, frozen_by_hand))
    assert not all(torch.equal(a, b) for a, b in zip(frozen, default))


def test_initialize_refuses_a_factory_whose_model_has_other_parameters() -> None:
    model = _mlp()
    adalfl = adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1),
                            loss=adaloss.LossNetwork(task="classification").double())
    x, y = _data()
    wider = lambda: nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4), nn.Linear(4, 4)).double()  # noqa: E731
    with pytest.raises(ValueError, match=r"`model_factory` built a model with parameters \['3.weight', '3.bias'\]"):
        adalfl.initialize(wider, [(x, y)], None, steps=1)


def test_bad_arguments_are_named() -> None:
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    with pytest.raises(ValueError, match="`meta_batch`"):
        adaloss.AdaLFL(model, opt, initialized=True).step((x.float(), y))
    with pytest.raises(ValueError, match="`task`"):
        adaloss.AdaLFL(model, opt, task="ranking")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`meta_optimizer`"):
        adaloss.AdaLFL(model, opt, meta_optimizer=torch.optim.SGD(model.parameters(), lr=1.0))
    with pytest.raises(ValueError, match="`max_grad_norm`"):
        adaloss.AdaLFL(model, opt, max_grad_norm=0)
    with pytest.raises(TypeError, match=r"\(inputs, targets\)"):
        adaloss.AdaLFL(model, opt, initialized=True).step({"x": x}, {"x": x})


# ---------------------------------------------------------------------------- the user's own checkpoints


def test_state_dict_round_trip_continues_exactly() -> None:
    x, y = _data()
    batches = [((x[i : i + 16], y[i : i + 16]), (x[48:], y[48:])) for i in (0, 16, 32)] * 2

    def build():  # type: ignore[no-untyped-def]
        model = _mlp()
        torch.manual_seed(9)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        return model, opt, adaloss.AdaLFL(model, opt, loss=adaloss.LossNetwork(task="classification").double(),
                                          initialized=True)

    model, opt, adalfl = build()
    for b, m in batches:
        adalfl.step(b, m)
    model2, opt2, adalfl2 = build()
    for b, m in batches[:3]:
        adalfl2.step(b, m)
    buf = io.BytesIO()
    torch.save({"model": model2.state_dict(), "opt": opt2.state_dict(), "adalfl": adalfl2.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    model3, opt3, adalfl3 = build()
    model3.load_state_dict(saved["model"])
    opt3.load_state_dict(saved["opt"])
    adalfl3.load_state_dict(saved["adalfl"])
    for b, m in batches[3:]:
        adalfl3.step(b, m)
    for p, q in zip([*model.parameters(), *adalfl.loss.parameters()], [*model3.parameters(), *adalfl3.loss.parameters()]):
        assert torch.equal(p, q)
    assert adalfl3.steps == 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_path_follows_the_model() -> None:  # pragma: no cover - run where a GPU is lent
    x, y = _data(dtype=torch.float32)
    model = _mlp(dtype=torch.float32).cuda()
    adalfl = adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1), initialized=True)
    stats = adalfl.step((x, y), (x, y))  # CPU batches are moved to the model's device
    assert stats["loss"].device.type == "cuda" and next(adalfl.loss.parameters()).is_cuda


@pytest.mark.parametrize("model_kw", [{"hidden": [16, 16], "dropout": 0.3}, {"hidden": [16], "batch_norm": True}])
def test_forward_difference_meta_gradient_approximates_the_exact_one_float64(model_kw: dict) -> None:
    """meta_gradient='forward_difference' replaces J_θ v by one extra forward; in float64 its
    truncation error is ~sqrt(eps), so the two φ-gradients agree to ~1e-6 (dropout masks and
    BatchNorm batch statistics handled as in the exact path)."""
    deltas = []
    for mode in ("exact", "forward_difference"):
        torch.manual_seed(0)
        model = create_model("mlp", (1, 8, 8), 5, **model_kw).double()
        loss_net = adaloss.LossNetwork(task="classification").double()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        adalfl = adaloss.AdaLFL(model, opt, loss=loss_net, meta_optimizer=lambda p: torch.optim.SGD(p, lr=1.0),
                                meta_gradient=mode, initialized=True)  # type: ignore[arg-type]
        g = torch.Generator().manual_seed(1)
        x = torch.randn(48, 1, 8, 8, generator=g, dtype=torch.float64)
        y = torch.randint(0, 5, (48,), generator=g)
        torch.manual_seed(5)
        adalfl.step((x[:16], y[:16]), (x[32:], y[32:]))  # momentum buffers first
        before = [p.detach().clone() for p in loss_net.parameters()]
        adalfl.step((x[16:32], y[16:32]), (x[32:], y[32:]))
        deltas.append(torch.cat([(b - a.detach()).flatten() for b, a in zip(before, loss_net.parameters())]))
    exact, approx = deltas
    assert exact.norm() > 0
    assert float((approx - exact).norm() / exact.norm()) < 1e-5


@pytest.mark.parametrize("model_kw", [{"hidden": [16, 16], "dropout": 0.3}, {"hidden": [16], "batch_norm": True}])
@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
def test_double_backward_meta_gradient_is_the_exact_one_float64(model_kw: dict, optimizer: str) -> None:
    """meta_gradient='double_backward' computes J_θ v as the derivative of the base backward: the
    same θ, φ and optimiser state as the forward-mode JVP after three steps (float64, to
    rounding), with dropout, BatchNorm, clipping and an extra loss that reads the parameters."""
    finals = {}
    for mode in ("exact", "double_backward"):
        torch.manual_seed(0)
        model = create_model("mlp", (1, 8, 8), 5, **model_kw).double()
        loss_net = adaloss.LossNetwork(task="classification").double()
        opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True) if optimizer == "sgd_momentum"
               else torch.optim.Adam(model.parameters(), lr=0.01))
        weights = [p for n, p in model.named_parameters() if n.endswith("weight")]

        def extra(outputs: torch.Tensor, batch: object) -> torch.Tensor:  # an L2 term on θ, not through z
            return 1e-2 * sum((w**2).sum() for w in weights) + 1e-3 * (outputs**2).mean()

        adalfl = adaloss.AdaLFL(model, opt, loss=loss_net, meta_optimizer=lambda p: torch.optim.SGD(p, lr=1.0),
                                meta_gradient=mode, initialized=True, max_grad_norm=0.5, extra_loss=extra,
                                grad_ratio_every=2, learn_lr="global")  # type: ignore[arg-type]
        g = torch.Generator().manual_seed(1)
        x = torch.randn(48, 1, 8, 8, generator=g, dtype=torch.float64)
        y = torch.randint(0, 5, (48,), generator=g)
        torch.manual_seed(5)
        for i in range(3):
            stats = adalfl.step((x[16 * (i % 2):16 * (i % 2) + 16], y[16 * (i % 2):16 * (i % 2) + 16]),
                                (x[32:], y[32:]))
        finals[mode] = ([p.detach().clone() for p in [*model.parameters(), *loss_net.parameters(), adalfl.log_lr]],
                        float(stats["grad_norm_ratio"]))
    (exact, ratio_a), (reverse, ratio_b) = finals["exact"], finals["double_backward"]
    moved = torch.cat([(a - b).flatten() for a, b in zip(exact, reverse)])
    assert float(moved.abs().max()) < 1e-10 * max(1.0, float(torch.cat([a.flatten() for a in exact]).abs().max()))
    assert ratio_a == pytest.approx(ratio_b, rel=1e-12)


def test_double_backward_initialize_matches_the_exact_one() -> None:
    x, y = _data()
    phis = []
    for mode in ("exact", "double_backward"):
        model = _mlp()
        loss = adaloss.LossNetwork(task="classification").double()
        torch.manual_seed(2)
        adalfl = adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1), loss=loss,
                                meta_gradient=mode)  # type: ignore[arg-type]
        adalfl.initialize(_mlp, [(x[:32], y[:32]), (x[32:], y[32:])], None, steps=4)
        phis.append(torch.cat([p.detach().flatten() for p in loss.parameters()]))
    assert torch.allclose(phis[0], phis[1], rtol=1e-10, atol=1e-12) and not torch.equal(phis[0], torch.zeros_like(phis[0]))


def test_initialize_resumes_from_a_state_taken_part_way_to_the_same_phi() -> None:
    x, y = _data()
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]

    def build():  # type: ignore[no-untyped-def]
        model = _mlp()
        return adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1),
                              loss=adaloss.LossNetwork(task="classification").double())

    def factory() -> nn.Module:
        return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4)).double()

    full = build()
    torch.manual_seed(3)
    out_full = full.initialize(factory, batches, steps=6)
    states: dict[int, tuple] = {}
    part = build()
    torch.manual_seed(3)

    def keep(done: int) -> None:  # what a trainer checkpoints: the object's state and the RNG
        states[done] = (copy.deepcopy(part.state_dict()), torch.get_rng_state())

    part.initialize(factory, batches, steps=6, on_unroll=keep)
    resumed = build()
    state, rng = states[4]
    resumed.load_state_dict(state)
    torch.set_rng_state(rng)
    out = resumed.initialize(factory, batches[4 % 4 :], steps=6)  # unrolls 5 and 6 see batches 0 and 1 again
    assert resumed.init_done == 6 and resumed.initialized
    for p, q in zip(full.loss.parameters(), resumed.loss.parameters()):
        assert torch.equal(p, q)
    assert out == out_full


def test_loss_network_inside_the_model_is_refused() -> None:
    loss = adaloss.LossNetwork(task="classification")
    model = nn.Sequential(nn.Linear(6, 4))
    model.add_module("loss", loss)
    with pytest.raises(ValueError, match="kept out of `model`"):
        adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1), loss=loss)


# ---------------------------------------------------------------------------- amortised meta-updates


def test_meta_every_takes_plain_steps_with_the_learned_loss_between_exact_meta_steps_float64() -> None:
    """meta_every=3: steps 0 and 3 are the exact one-step meta-update (a create_graph reference),
    steps 1, 2 and 4 ordinary SGD steps on the current learned loss (autograd + torch.optim), φ fixed."""
    x, y = _data()
    model, ref_model = _mlp(), _mlp()
    torch.manual_seed(1)
    loss_net = adaloss.LossNetwork(task="classification").double()
    ref_loss = copy.deepcopy(loss_net)
    adalfl = adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1), loss=loss_net, meta_every=3,
                            meta_optimizer=lambda p: torch.optim.SGD(p, lr=1.0), initialized=True)
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.1)
    due = []
    for step in range(5):
        batch, meta = (x[16 * (step % 3):16 * (step % 3 + 1)], y[16 * (step % 3):16 * (step % 3 + 1)]), (x[48:], y[48:])
        due.append(adalfl.meta_due)
        if step % 3 == 0:
            phi_grad, theta1 = _naive_phi_grad(ref_model, ref_loss, 0.1, batch, meta)
            with torch.no_grad():
                for p, g in zip(ref_loss.parameters(), phi_grad):
                    p.sub_(g)
                for n, p in ref_model.named_parameters():
                    p.copy_(theta1[n])
            out = adalfl.step(batch, meta)
            assert "meta_loss" in out
        else:
            ref_opt.zero_grad()
            ref_loss(ref_model(batch[0]), batch[1]).backward()
            ref_opt.step()
            phi = [p.detach().clone() for p in loss_net.parameters()]
            out = adalfl.step(batch)  # no meta batch needed between meta steps
            assert "meta_loss" not in out
            assert all(torch.equal(a, b) for a, b in zip(phi, loss_net.parameters()))
            assert all(p.grad is None for p in model.parameters())
        for p, q in zip(model.parameters(), ref_model.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
        for p, q in zip(loss_net.parameters(), ref_loss.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
    assert due == [True, False, False, True, False] and adalfl.steps == 5


def test_meta_every_one_is_every_step_and_bad_values_are_named() -> None:
    model = _mlp()
    adalfl = adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1), initialized=True)
    assert adalfl.meta_every == 1 and adalfl.meta_due
    with pytest.raises(ValueError, match="`meta_batch`.*meta step"):
        adalfl.step(_data(8)[0:2])
    for bad in (0, -2):
        with pytest.raises(ValueError, match="meta_every"):
            adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1), meta_every=bad)
    with pytest.raises(TypeError, match="meta_every"):
        adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1), meta_every=2.0)  # type: ignore[arg-type]


def test_the_trainer_draws_a_meta_batch_on_meta_steps_only(tmp_path: Path) -> None:
    cfg = TrainConfig(dataset="digits", model="mlp", model_args={"hidden": [16]}, method="adalfl",
                      method_args={"init_steps": 0, "meta_every": 4, "grad_ratio_every": 0}, steps=10, batch_size=32,
                      log_every=0, eval_every=0, progress="off", run_dir=str(tmp_path))
    trainer = build_trainer(cfg)
    trainer.fit()
    assert trainer.learner.core.meta_every == 4  # type: ignore[attr-defined]
    assert trainer.meta_loader.state_dict()["position"] == 3  # steps 0, 4 and 8


@pytest.mark.parametrize("options", [{"max_grad_norm": 1e-3}, {"learn_lr": "global"},
                                     {"extra_loss": lambda z, batch: 0.1 * (z**2).mean()}])
def test_plain_steps_clip_scale_and_add_terms_like_the_meta_steps_base_update(options: dict) -> None:
    """A plain step (meta_every > 1) takes the same base update as a meta step's θ' from the same state:
    clipping, the learned LR and the extra loss included."""
    x, y = _data()
    batch, meta = (x[:16], y[:16]), (x[48:], y[48:])
    results = []
    for meta_every in (1, 2):
        model = _mlp()
        torch.manual_seed(1)
        adalfl = adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                                loss=adaloss.LossNetwork(task="classification").double(), meta_every=meta_every,
                                initialized=True, **options)
        adalfl.step(batch, meta)  # a meta step for both: φ, ρ and the momentum buffers move alike
        phi = [p.detach().clone() for p in adalfl.loss.parameters()]
        if meta_every == 1:  # the base update of a meta step, without its φ update: θ' from _meta_step
            new, _, _, _ = adalfl._meta_step(model, adalfl.diffopt, [batch], meta, ratio=False)
            results.append([new[n] for n, _ in model.named_parameters()])
        else:
            adalfl.step(batch)
            results.append([p.detach() for p in model.parameters()])
            assert all(torch.equal(a, b) for a, b in zip(phi, adalfl.loss.parameters()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------- gradient accumulation


@pytest.mark.parametrize("meta_every", [1, 2])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_accumulated_micro_batches_step_like_their_concatenation_float64(meta_every: int, momentum: float) -> None:
    """accumulate=4 over four equal micro-batches: θ, φ and the optimiser state after three steps equal
    those of single steps on the concatenated batches (the meta-gradient exact through the mean)."""
    x, y = _data(n=96)
    results = []
    for accumulate in (1, 4):
        model = _mlp()
        torch.manual_seed(1)
        loss = adaloss.LossNetwork(task="classification").double()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
        adalfl = adaloss.AdaLFL(model, optimizer, loss=loss, meta_every=meta_every, initialized=True,
                                meta_optimizer=lambda p: torch.optim.SGD(p, lr=1.0), grad_ratio_every=1)
        for step in range(3):
            rows = slice(16 * step, 16 * step + 32)
            batch = (x[rows], y[rows])
            if accumulate > 1:
                batch = [(x[rows][i::4], y[rows][i::4]) for i in range(4)]  # 8 rows each, in another order
            stats = adalfl.step(batch, (x[64:], y[64:]) if adalfl.meta_due else None, accumulate=accumulate)
        results.append(([p.detach().clone() for p in model.parameters()], [p.detach().clone() for p in loss.parameters()],
                        stats))
    (theta_a, phi_a, stats_a), (theta_b, phi_b, stats_b) = results
    for a, b in zip([*theta_a, *phi_a], [*theta_b, *phi_b]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(stats_a["loss"], stats_b["loss"], rtol=1e-12, atol=0)
    torch.testing.assert_close(stats_a["grad_norm_ratio"], stats_b["grad_norm_ratio"], rtol=1e-10, atol=0)


def test_accumulate_names_what_it_needs() -> None:
    x, y = _data()
    model = _mlp()
    adalfl = adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1), initialized=True,
                            loss=adaloss.LossNetwork().double())
    with pytest.raises(ValueError, match="sequence of accumulate=2 micro-batches, but got 3"):
        adalfl.step([(x, y)] * 3, (x, y), accumulate=2)
    with pytest.raises(ValueError, match="accumulate"):
        adalfl.step((x, y), (x, y), accumulate=0)
    reverse = adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1), initialized=True,
                             meta_gradient="double_backward", loss=adaloss.LossNetwork().double())
    with pytest.raises(ValueError, match="meta_gradient 'exact' or 'forward_difference'.*double_backward"):
        reverse.step([(x, y)] * 2, (x, y), accumulate=2)


# ---------------------------------------------------------------------------- mixed precision


def test_bf16_autocast_keeps_the_meta_gradient_close_to_fp32_and_fp16_is_refused() -> None:
    """Under torch.autocast("cpu", bfloat16) the model runs in bf16, the loss network and φ's gradient
    in fp32: the meta-gradient's cosine to the fp32 one is ≥ 0.99, and φ stays fp32."""
    x, y = _data(dtype=torch.float32)
    grads = {}
    for mode in ("fp32", "bf16"):
        model = _mlp(dtype=torch.float32)
        torch.manual_seed(1)
        adalfl = adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1), initialized=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            _, _, _, g = adalfl._meta_step(model, adalfl.diffopt, [(x[:32], y[:32])], (x[32:], y[32:]), ratio=False)
        assert all(t.dtype == torch.float32 for t in g)
        grads[mode] = torch.cat([t.flatten().double() for t in g])
    cosine = torch.dot(grads["fp32"], grads["bf16"]) / (grads["fp32"].norm() * grads["bf16"].norm())
    assert cosine >= 0.99
    with torch.autocast("cpu", dtype=torch.float16), pytest.raises(ValueError, match="float16 autocast.*bfloat16"):
        adalfl.step((x[:32], y[:32]), (x[32:], y[32:]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_autocast_bf16_meta_gradient_and_fp16_refusal(dtype: torch.dtype) -> None:  # pragma: no cover - GPU
    x, y = _data(dtype=torch.float32)
    model = _mlp(dtype=torch.float32).cuda()
    adalfl = adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1), initialized=True)
    batch, meta = (x[:32].cuda(), y[:32].cuda()), (x[32:].cuda(), y[32:].cuda())
    if dtype == torch.float16:
        with torch.autocast("cuda", dtype=dtype), pytest.raises(ValueError, match="float16 autocast"):
            adalfl.step(batch, meta)
        return
    _, _, _, exact = adalfl._meta_step(model, adalfl.diffopt, [batch], meta, ratio=False)
    with torch.autocast("cuda", dtype=dtype):
        _, _, _, mixed = adalfl._meta_step(model, adalfl.diffopt, [batch], meta, ratio=False)
    a, b = (torch.cat([t.flatten().double() for t in g]) for g in (exact, mixed))
    assert all(t.dtype == torch.float32 for t in mixed) and float(a @ b / (a.norm() * b.norm())) >= 0.99


def test_a_bf16_autocast_digits_run_ends_within_noise_of_fp32() -> None:
    """400 steps on digits (an MLP, AdaLFL with 20 offline unrolls), the same seed in fp32 and under
    torch.autocast("cpu", bfloat16) around the whole loop: test errors within 3 points (seed-to-seed
    spread at this budget ≈ 1–2). Around the loop, autocast's cache of low-precision parameter copies
    would go stale after the first in-place update (chance-level error) unless each step clears it."""
    data = load_dataset("digits", valid_fraction=0.2, seed=0)
    errors = {}
    for mode in ("fp32", "bf16"):
        seed_everything(0)
        model = create_model("mlp", data.input_shape, data.num_outputs, hidden=[64])
        adalfl = adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
        train = BatchLoader(data.train, batch_size=64, seed=0)
        valid = BatchLoader(data.valid, batch_size=64, seed=1)
        adalfl.initialize(functools.partial(create_model, "mlp", data.input_shape, data.num_outputs, hidden=[64]),
                          train, valid, steps=20)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            for _ in range(400):
                adalfl.step(next(train), next(valid))
        with torch.no_grad():
            x, y = data.test.x, data.test.y
            errors[mode] = float((model(x).argmax(1) != y).float().mean())
    assert errors["fp32"] < 0.2 and abs(errors["bf16"] - errors["fp32"]) <= 0.03, errors


@pytest.mark.parametrize("meta_gradient", ["exact", "double_backward", "forward_difference"])
@pytest.mark.parametrize("meta_every", [1, 2])
def test_only_the_base_forward_moves_batchnorm_running_statistics(meta_gradient: str, meta_every: int) -> None:
    """After a step (meta or plain), BatchNorm's running statistics are those of one plain forward on the
    training batch: the meta forward at θ', the Jacobian-vector product and the forward difference use
    cloned buffers (a meta batch that moved them would leak the validation split into the model)."""
    x, y = _data(dtype=torch.float32)
    torch.manual_seed(0)
    model = create_model("mlp", (6,), 4, hidden=[16], batch_norm=True)
    reference = copy.deepcopy(model)
    adalfl = adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1), initialized=True,
                            meta_gradient=meta_gradient, meta_every=meta_every)  # type: ignore[arg-type]
    for step in range(2):
        batch, meta = (x[16 * step:16 * step + 16], y[16 * step:16 * step + 16]), (x[40:] * 3 + 1, y[40:])
        with torch.no_grad():  # the reference: one plain forward on the batch, with the model's current θ
            reference.load_state_dict(model.state_dict())
            reference(batch[0])
        adalfl.step(batch, meta if adalfl.meta_due else None)
        for (name, a), b in zip(model.named_buffers(), reference.buffers()):
            assert torch.equal(a, b), f"step {step}: {name} moved beyond the base forward"


class _TiedMLP(nn.Module):
    """Wide linear layers and an output tied to the first layer's weight (a matmul besides F.linear)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(64, 256)
        self.out = nn.Linear(256, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x.flatten(1)))
        return self.out(h) + (h @ self.inp.weight)[:, :5]


@pytest.mark.parametrize("model_name", ["mlp", "tied"])
def test_factored_linear_meta_gradient_equals_the_dense_one_float64(model_name: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Wide linear layers keep ∇θ'L as factors δᵀa in the exact step (plain SGD, one process): the
    same θ, φ after three steps as with every weight gradient formed (float64, to rounding)."""
    from adaloss.functional.meta import FactoredLinear

    finals, factored_calls = {}, []
    real = FactoredLinear.gradients
    monkeypatch.setattr(FactoredLinear, "gradients",
                        lambda self, *a: (factored_calls.append(len(self.calls)), real(self, *a))[1])
    for factored in (True, False):
        if not factored:
            monkeypatch.setattr(FactoredLinear, "_factored", lambda self, name, x, w: False)
        factored_calls.clear()
        torch.manual_seed(0)
        model = (create_model("mlp", (1, 8, 8), 5, hidden=[256, 256]) if model_name == "mlp" else _TiedMLP()).double()
        loss_net = adaloss.LossNetwork(task="classification").double()
        adalfl = adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), loss=loss_net,
                                meta_optimizer=lambda p: torch.optim.SGD(p, lr=1.0), initialized=True)
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(96, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 5, (96,), generator=g)
        for i in range(3):
            adalfl.step((x[32 * i:32 * i + 32], y[32 * i:32 * i + 32]), (x[64 - 32 * i:96 - 32 * i], y[:32]))
        assert (sum(factored_calls) > 0) == factored, factored_calls  # the path under test was taken
        finals[factored] = torch.cat([p.detach().flatten() for p in [*model.parameters(), *loss_net.parameters()]])
    torch.testing.assert_close(finals[True], finals[False], rtol=1e-10, atol=1e-12)
