"""``adaloss.ALA``, the loss scheduler: against the trainer, and as an object a user composes."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import adaloss
from adaloss.data import BatchLoader, load_dataset
from adaloss.methods.ala import ALAPolicy, MetricHistoryFeatures, Observation
from adaloss.metrics import ErrorRate
from adaloss.models import create_model
from adaloss.training import TrainConfig, build_trainer, seed_everything


def test_plain_loop_over_ala_matches_adaloss_train_after_100_steps(tmp_path: Path) -> None:
    cfg = TrainConfig(dataset="digits", model="mlp", model_args={"hidden": [32]}, method="ala",
                      method_args={"every": 10, "smoothing_window": 3, "val_batches": 2, "seed": 7, "beta": 0.1,
                                   "grad_ratio_every": 0, "family": "class_pair"},
                      steps=100, batch_size=32, lr=0.05, momentum=0.9, seed=3, log_every=0, eval_every=0,
                      progress="off", run_dir=str(tmp_path))
    trainer = build_trainer(cfg)
    trainer.fit()

    data = load_dataset("digits", valid_fraction=cfg.valid_fraction, seed=cfg.seed)
    seed_everything(cfg.seed)
    model = create_model("mlp", data.input_shape, data.num_outputs, hidden=[32])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ala = adaloss.ALA(functools.partial(adaloss.ClassPairLoss, form="log_prob"), metric="error", every=10,
                      smoothing_window=3, beta=0.1, seed=7, total_steps=100)
    train = BatchLoader(data.train, batch_size=32, seed=cfg.seed)
    valid = BatchLoader(data.valid, batch_size=32, seed=cfg.seed + 1)
    val = [next(valid) for _ in range(2)]  # the same validation examples at every evaluation
    ala.start(model, val)
    for _ in range(100):
        x, y = next(train)
        optimizer.zero_grad()
        ala.loss(model(x), y).backward()
        optimizer.step()
        ala.step(model, val)

    learner = trainer.learner
    torch.testing.assert_close(learner.criterion.parameter_vector(), ala.loss.parameter_vector(), rtol=1e-6, atol=0)
    for p, q in zip(learner.core.controller.policy.parameters(), ala.controller.policy.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=0)
    for p, q in zip(trainer.model.parameters(), model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=0)
    assert learner.core.controller.rewards == ala.controller.rewards and len(ala.controller.rewards) == 10
    assert not torch.equal(ala.loss.parameter_vector(), torch.zeros_like(ala.loss.parameter_vector()))


class _Shift(nn.Module):
    """A one-parameter ParametricLoss: MSE against ``y + s``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("s", torch.zeros(1))

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(prediction, target + self.s)

    def parameter_vector(self) -> Tensor:
        return self.s.clone()

    def set_parameter_vector(self, values: Tensor) -> None:
        self.s.copy_(values)

    @property
    def bounds(self) -> tuple[Tensor, Tensor]:
        return torch.full((1,), -2.0), torch.full((1,), 2.0)

    @property
    def parameter_names(self) -> list[str]:
        return ["shift"]


class _Countdown(MetricHistoryFeatures):
    """A user's own state builder: the generic features plus a call counter."""

    calls = 0

    def __call__(self, obs: Observation) -> Tensor:
        type(self).calls += 1
        return super().__call__(obs)


def test_user_parts_metric_object_feature_object_policy_object_and_lazy_validation_data() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    x = torch.randn(40, 3)
    y = x.sum(1, keepdim=True)
    features = _Countdown(history=4)
    policy = ALAPolicy(features.num_features, hidden=[8])
    metric = adaloss.create_metric("mse", task="regression")
    ala = adaloss.ALA(_Shift(), metric=metric, every=4, smoothing_window=2, features=features, policy=policy, seed=1)
    assert ala.metric is metric and ala.features is features and ala.policy is policy
    evaluations: list[int] = []

    def valid() -> list[tuple[Tensor, Tensor]]:  # called only when an evaluation is due
        evaluations.append(ala.steps)
        return [(x[:20], y[:20]), (x[20:], y[20:])]

    ala.start(model, valid)
    for _ in range(8):
        ala.step(model, valid)
    assert evaluations == [0, 3, 4, 7, 8]  # start, then the last 2 steps of each 4-step window
    assert _Countdown.calls == 3 and len(ala.controller.rewards) == 2
    assert ala(torch.zeros(2, 1), torch.zeros(2, 1)) == F.mse_loss(torch.zeros(2, 1), ala.loss.s.expand(2, 1))


def test_errors_name_the_argument() -> None:
    with pytest.raises(TypeError, match="ParametricLoss"):
        adaloss.ALA(nn.MSELoss())
    with pytest.raises(ValueError, match="`metric`"):
        adaloss.ALA(_Shift())
    with pytest.raises(ValueError, match="`policy` to take 12 features.*takes 5"):
        adaloss.ALA(_Shift(), metric="mse", features="metric", policy=ALAPolicy(5))
    with pytest.raises(ValueError, match="`every`"):
        adaloss.ALA(adaloss.ClassPairLoss(3), every=0)
    with pytest.raises(TypeError, match="`features`"):
        adaloss.ALA(adaloss.ClassPairLoss(3), features=3.5)  # type: ignore[arg-type]
    lazy = adaloss.ALA(functools.partial(adaloss.ClassPairLoss, form="log_prob"))
    with pytest.raises(RuntimeError, match=r"ala.start\(model"):
        lazy.criterion
    assert isinstance(adaloss.ALA(adaloss.ClassPairLoss(3)).metric, ErrorRate)


def test_state_dict_round_trip_continues_exactly() -> None:
    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    val = [(x[:32], y[:32])]

    def run(steps: int, state: dict | None = None):  # type: ignore[no-untyped-def]
        torch.manual_seed(0)
        model = nn.Linear(5, 3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        ala = adaloss.ALA(adaloss.ClassPairLoss(3, form="log_prob"), every=3, smoothing_window=1, seed=2, beta=0.2)
        done = 0
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            ala.load_state_dict(state["ala"])
            done = ala.steps
        else:
            ala.start(model, val)
        for i in range(done, steps):
            xb, yb = x[(8 * i) % 64 : (8 * i) % 64 + 8], y[(8 * i) % 64 : (8 * i) % 64 + 8]
            opt.zero_grad()
            ala(model(xb), yb).backward()
            opt.step()
            ala.step(model, val)
        return model, opt, ala

    full_model, _, full = run(12)
    model, opt, half = run(7)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "ala": half.state_dict()}, buf)
    buf.seek(0)
    resumed_model, _, resumed = run(12, torch.load(buf, weights_only=True))
    assert torch.equal(full.loss.parameter_vector(), resumed.loss.parameter_vector())
    assert full.controller.rewards == resumed.controller.rewards
    for p, q in zip([*full_model.parameters(), *full.policy.parameters()],
                    [*resumed_model.parameters(), *resumed.policy.parameters()]):
        assert torch.equal(p, q)


@pytest.mark.parametrize("option", [{"hidden": [0.5]}, {"history": 2.0}, {"replay_batch": 1.5}, {"seed": 1.0}])
def test_integer_options_refuse_floats(option: dict) -> None:
    with pytest.raises(TypeError, match=f"`{next(iter(option))}`"):
        adaloss.ALA(adaloss.ClassPairLoss(3), **option)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_path_follows_the_model() -> None:  # pragma: no cover - run where a GPU is lent
    model = nn.Linear(5, 3).cuda()
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    ala = adaloss.ALA(adaloss.ClassPairLoss(3), every=2, smoothing_window=1, seed=0).to("cuda")
    ala.start(model, (x, y))  # CPU batches are moved to the model's device
    ala.loss(model(x.cuda()), y.cuda()).backward()
    assert ala.loss.phi.is_cuda and ala.step(model, (x, y)) == {}
