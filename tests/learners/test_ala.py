"""ALA: state features, the REINFORCE controller on a bandit with a known optimum, and the learner
in the trainer (end to end, exact resume, policy transfer into a frozen-policy run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from adaloss.checkpoint import load_checkpoint
from adaloss.cli import main
from adaloss.learners import TrainContext, create_learner
from adaloss.learners.ala import ALALearner
from adaloss.losses.ala import ClassPairLoss, PairDistanceLoss
from adaloss.methods.ala import (
    ALAController,
    ALAPolicy,
    MetricHistoryFeatures,
    Observation,
    PairConfusionFeatures,
    PairDistanceFeatures,
    load_policy,
    save_policy,
    smoothed_metric,
    soft_confusion,
)
from adaloss.metrics import ErrorRate
from adaloss.training import TrainConfig, build_trainer, read_jsonl, train

TINY = {"ala_args": {"every": 10, "val_batches": 2, "smoothing_window": 3, "grad_ratio_every": 5}}
#: the paper's class-pair family, which most classification tests below inspect (the default
#: preset's family is class_frequency: ``test_default_ala_*``)
PAIR = {"family": "class_pair"}


def _cfg(tmp: Path, **changes: object) -> TrainConfig:
    base = TrainConfig(method="ala", steps=40, batch_size=32, log_every=5, model_args={"hidden": [16]},
                       progress="off", method_args=dict(TINY["ala_args"]), run_dir=str(tmp))
    cfg = base.replace(**changes)
    if cfg.task != "embedding" and cfg.method == "ala" and "family" not in cfg.method_args:
        cfg = cfg.replace(method_args={**PAIR, **cfg.method_args})
    return cfg


# ---------------------------------------------------------------------------- pieces


def test_smoothed_metric_is_normalised_eq4() -> None:
    g = 0.9
    vals = [0.5, 0.4, 0.3]
    expected = (g**2 * 0.5 + g * 0.4 + 0.3) / (g**2 + g + 1)
    assert smoothed_metric(vals, g) == pytest.approx(expected)
    assert smoothed_metric(vals, 1.0) == pytest.approx(0.4)
    assert smoothed_metric([0.7], g) == 0.7


def test_soft_confusion_hand_values() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    targets = torch.tensor([0, 0, 1])
    c = soft_confusion(logits, targets, 3)
    nll = -logits.log_softmax(-1)
    torch.testing.assert_close(c[0], (nll[0] + nll[1]) / 2)
    torch.testing.assert_close(c[1], nll[2])
    assert c[2].eq(0).all()  # class 2 absent from the validation subset


def _obs(loss: ClassPairLoss, metrics: list[float], logits: torch.Tensor, targets: torch.Tensor) -> Observation:
    lo, hi = loss.bounds
    return Observation(progress=0.25, metrics=metrics, phi=loss.parameter_vector(), lower=lo, upper=hi,
                       logits=logits, targets=targets, loss=loss)


def test_pair_confusion_features_layout() -> None:
    torch.manual_seed(0)
    loss = ClassPairLoss(3)
    loss.set_parameter_vector(torch.tensor([0.1, -0.2, 0.3]))
    feats = PairConfusionFeatures(history=10)
    assert feats.num_features == 24
    z1, y = torch.randn(12, 3), torch.arange(12) % 3
    f1 = feats(_obs(loss, [0.5], z1, y))
    assert f1.shape == (3, 24)
    conf = torch.log1p(soft_confusion(z1, y, 3))
    torch.testing.assert_close(f1[:, 0], torch.stack([conf[0, 1], conf[0, 2], conf[1, 2]]))  # C_ij, newest
    torch.testing.assert_close(f1[:, 1], torch.stack([conf[1, 0], conf[2, 0], conf[2, 1]]))  # C_ji
    assert f1[:, 2:20].eq(0).all()  # zero-padded history
    assert f1[:, 20:22].eq(0).all()  # relative change vs a one-entry history
    torch.testing.assert_close(f1[:, 22], torch.tensor([0.1, -0.2, 0.3]))
    assert f1[:, 23].eq(0.25).all()
    z2 = z1 * 2
    f2 = feats(_obs(loss, [0.5, 0.4], z2, y))
    torch.testing.assert_close(f2[:, 2:4], f1[:, 0:2])  # the previous values shift back
    conf2 = torch.log1p(soft_confusion(z2, y, 3))
    mean01 = (conf[0, 1] + conf2[0, 1]) / 2
    torch.testing.assert_close(f2[0, 20], (conf2[0, 1] - mean01) / (mean01.abs() + 1e-8))
    with pytest.raises(ValueError, match="symmetric=True"):
        feats(_obs(ClassPairLoss(3, symmetric=False), [0.5], z1, y))  # type: ignore[arg-type]


def test_metric_history_features_generic() -> None:
    loss = PairDistanceLoss(bins=2, bounds=(0.0, 2.0))
    loss.set_parameter_vector(torch.tensor([0.0, 1.0, 2.0, 1.5]))
    feats = MetricHistoryFeatures(history=3)
    lo, hi = loss.bounds
    f = feats(Observation(progress=0.5, metrics=[0.9, 0.8, 0.7, 0.6], phi=loss.parameter_vector(), lower=lo,
                          upper=hi, logits=torch.zeros(1, 2), targets=torch.zeros(1, dtype=torch.long),
                          loss=loss))
    torch.testing.assert_close(f[:, 0], torch.tensor([-1.0, 0.0, 1.0, 0.5]))
    assert f[:, 1].eq(0.5).all()
    torch.testing.assert_close(f[0, 2:], torch.tensor([0.6, 0.7, 0.8]))


def _bandit(controller: ALAController, episodes: int, *, target: float, seed: int) -> None:
    """One-step episodes: random Φ ∈ [−1, 1]^8, reward = decrease of Σ|Φ − Φ*|."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(episodes):
        phi = torch.rand(8, generator=g) * 2 - 1
        new = (phi + controller.act(phi[:, None])).clamp(-1, 1)
        controller.give_reward(float((phi - target).abs().sum() - (new - target).abs().sum()))


def _greedy_rollout(controller: ALAController, start: float, steps: int = 30) -> float:
    controller.greedy = True
    phi = torch.full((1,), start)
    for _ in range(steps):
        phi = (phi + controller.act(phi[:, None])).clamp(-1, 1)
    controller.greedy = False
    return float(phi)


def test_controller_learns_to_move_phi_toward_known_optimum() -> None:
    torch.manual_seed(0)
    controller = ALAController(ALAPolicy(1, hidden=(16,)), beta=0.1, lr=3e-2, reward="difference", seed=0)
    _bandit(controller, 400, target=0.5, seed=1)
    for start in (-1.0, 1.0):
        assert abs(_greedy_rollout(controller, start) - 0.5) <= 0.1 + 1e-6
    with torch.no_grad():
        probs = controller.policy(torch.tensor([[-0.8], [0.95]])).softmax(-1)
    assert probs[0, 2] > 0.9 and probs[1, 0] > 0.5  # increase far below Φ*, decrease above
    assert controller.episodes == 400 and len(controller.rewards) == 400


def test_controller_state_round_trip_with_replay() -> None:
    torch.manual_seed(0)

    def make() -> ALAController:
        return ALAController(ALAPolicy(1, hidden=(8,)), lr=1e-2, reward="difference", replay_capacity=5,
                             replay_batch=3, entropy_coef=0.01, seed=3)

    a = make()
    _bandit(a, 7, target=0.2, seed=0)
    assert len(a.replay) == 5
    a.act(torch.zeros(8, 1))  # a pending episode is part of the state
    b = make()
    b.load_state_dict(a.state_dict())
    for c in (a, b):
        c.give_reward(0.3)
        _bandit(c, 4, target=0.2, seed=5)
    for p, q in zip(a.policy.parameters(), b.policy.parameters()):
        assert torch.equal(p, q)
    assert a.rewards == b.rewards and a.baseline == b.baseline


def test_frozen_controller_does_not_change_policy() -> None:
    c = ALAController(ALAPolicy(1, hidden=(8,)), train_policy=False, seed=0)
    before = [p.clone() for p in c.policy.parameters()]
    _bandit(c, 5, target=0.0, seed=0)
    assert all(torch.equal(p, q) for p, q in zip(before, c.policy.parameters()))
    assert len(c.rewards) == 5


# ---------------------------------------------------------------------------- the learner


def test_learner_window_reward_and_phi_update(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, method_args={"every": 5, "val_batches": 2, "smoothing_window": 1, "beta": 0.05,
                                      "total_steps": 20})
    trainer = build_trainer(cfg)
    learner = trainer.learner
    assert isinstance(learner, ALALearner) and learner.core.state_kind == "pair_confusion"
    prep = learner.prepare()
    assert set(prep) >= {"ala_metric", "phi_offdiag_mean_abs", "phi_diag_mean"}
    loss = learner.criterion
    assert isinstance(loss, ClassPairLoss) and loss.num_classes == 10
    phi0 = loss.parameter_vector()
    assert torch.all((phi0.abs() < 1e-7) | ((phi0.abs() - 0.05).abs() < 1e-7))  # one action in {−β, 0, +β}
    for step in range(1, 11):
        phi_before = loss.parameter_vector()
        out = learner.step(next(trainer.train_loader))
        if step % 5:
            assert "reward" not in out and torch.equal(loss.parameter_vector(), phi_before)
            continue
        # smoothing_window=1: M is the error of the model right now on the fixed validation subset
        metric = ErrorRate()
        trainer.model.eval()
        with torch.no_grad():
            for x, y in learner._val:
                metric.update(trainer.model(x), y)
        trainer.model.train()
        assert float(out["ala_metric"]) == pytest.approx(metric.compute())
        prev, now = learner.core.metrics[-2], learner.core.metrics[-1]
        assert float(out["reward"]) == float((prev > now) - (prev < now))  # sign of the error decrease
        step_taken = (loss.parameter_vector() - phi_before).abs()
        assert torch.all((step_taken < 1e-6) | ((step_taken - 0.05).abs() < 1e-6))
    assert learner.core.controller.episodes == 2
    assert learner.core._progress() == 0.5


def test_ala_end_to_end_through_cli(tmp_path: Path) -> None:
    rc = main(["train", "method=ala", "steps=60", "batch_size=32", "log_every=10", "eval_every=30",
               "model_args.hidden=[16]", "method_args.every=10", "method_args.val_batches=2",
               "method_args.smoothing_window=3", "method_args.form=log_prob", "method_args.family=class_pair",
               "progress=off",
               f"run_dir={tmp_path}"])
    assert rc == 0
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert records[0]["step"] == 0 and "prepare_ala_metric" in records[0]
    assert any("train_reward" in r for r in records) and any("train_grad_norm_ratio" in r for r in records)
    snaps = read_jsonl(tmp_path / "snapshots.jsonl")
    assert [s["step"] for s in snaps] == [0, 30, 60]
    assert len(snaps[-1]["phi"]) == 10 and len(snaps[-1]["rewards"]) == 6 and len(snaps[-1]["metric"]) == 7
    phi = torch.tensor(snaps[-1]["phi"])
    torch.testing.assert_close(phi, phi.T)
    assert phi.diagonal().eq(1).all() and phi.abs().max() <= 1


def test_default_ala_class_pair_trains_a_classifier_and_its_loss_stays_bounded(tmp_path: Path) -> None:
    # Regression: the default (log_prob) form once put negative off-diagonal weights on log p_j, its
    # loss fell without limit (−27 by step 400) and the error went to chance on the built-in digits job.
    rc = main(["train", "method=ala", "steps=600", "log_every=50", "eval_every=600", "method_args.every=50",
               "method_args.val_batches=2", "method_args.smoothing_window=5", "method_args.family=class_pair",
               "progress=off", "threads=1", f"run_dir={tmp_path}"])
    assert rc == 0
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert all(r["train_loss"] >= 0 for r in records if "train_loss" in r)
    assert sum("train_reward" in r for r in records) >= 10
    phi = torch.tensor(read_jsonl(tmp_path / "snapshots.jsonl")[-1]["phi"])
    assert phi.ne(torch.eye(10)).any() and phi.abs().max() <= 1  # Φ moved, within its bounds
    assert records[-1]["test_error"] < 0.2


def test_default_ala_is_the_tied_class_frequency_family_with_its_measured_settings(tmp_path: Path) -> None:
    from adaloss.losses import FrequencyWeightLoss
    from adaloss.methods.ala import FAMILY_DEFAULTS

    trainer = build_trainer(TrainConfig(method="ala", steps=300, batch_size=32, log_every=50, eval_every=300,
                                        model_args={"hidden": [16]}, progress="off", run_dir=str(tmp_path),
                                        minority_classes=[1, 2], minority_fraction=0.2))
    learner = trainer.learner
    measured = FAMILY_DEFAULTS["FrequencyWeightLoss"]
    assert learner.core.every == measured["every"] and learner.core.controller.beta == measured["beta"]
    assert learner.core.controller.reward_kind == measured["reward"] and learner.core.state_kind == "metric"
    trainer.fit()
    loss = learner.criterion
    assert isinstance(loss, FrequencyWeightLoss)
    # the loss counted exactly the training targets it saw: 300 steps × 32 rows
    assert float(loss.class_counts.sum()) == 300 * 32
    counts = torch.bincount(learner.context.train_split.y, minlength=10).double()
    assert loss.class_counts[1] / loss.class_counts[0] == pytest.approx(float(counts[1] / counts[0]), rel=0.25)
    tau = float(loss.parameter_vector())
    assert 0.0 <= tau <= 1.0 and len(learner.core.controller.rewards) == 300 // measured["every"]  # one per window
    expected = (loss.class_counts + 1) ** -tau
    torch.testing.assert_close(loss.weights.double() / loss.weights[0], expected / expected[0], rtol=1e-5, atol=0)


def test_ala_resume_is_exact(tmp_path: Path, kill_and_resume) -> None:  # type: ignore[no-untyped-def]
    base = _cfg(tmp_path, steps=50, checkpoint_every=25, eval_every=20, momentum=0.9,
                method_args={**TINY["ala_args"], "preset": "faithful", "replay_batch": 3})
    run = kill_and_resume(base)  # compares φ, the policy, its replay buffer, the logs, ... bit for bit
    assert run.killed_at == 25  # killed right after the step-25 checkpoint, mid-window
    assert len(load_checkpoint(run.full / "checkpoints" / "last.pt")["learner"]["controller"]["replay"]) == 5


def test_policy_transfer_into_frozen_policy_run(tmp_path: Path) -> None:
    train(_cfg(tmp_path / "a", checkpoint_every=40))
    policy = load_policy(tmp_path / "a" / "checkpoints" / "last.pt")
    path = save_policy(policy, tmp_path / "policy.pt")
    frozen = _cfg(tmp_path / "b", checkpoint_every=40, seed=1,
                  method_args={**TINY["ala_args"], "policy": str(path), "train_policy": False})
    train(frozen)
    state = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["learner"]["controller"]
    for k, v in policy.state_dict().items():
        assert torch.equal(v, state["policy"][k])
    assert state["optimizer"]["state"] == {} and len(state["rewards"]) == 4
    snaps = read_jsonl(tmp_path / "b" / "snapshots.jsonl")
    assert snaps[-1]["phi"] != torch.eye(10).tolist()  # the frozen policy still adapts Φ


def test_options_are_checked_before_training() -> None:
    with pytest.raises(ValueError, match=r"Expected `metric` to be one of .*'error'.*but got 'eror'"):
        create_learner("ala", task="classification", metric="eror")
    with pytest.raises(ValueError, match="Metric 'mse' is for regression"):
        create_learner("ala", task="classification", metric="mse")
    with pytest.raises(TypeError, match=r"Unknown option\(s\) \['k'\] for method 'ala'.*'every'.*loss options"):
        create_learner("ala", task="classification", k=10)
    with pytest.raises(ValueError, match="symmetric=True"):
        create_learner("ala", task="classification", family="class_pair", features="pair_confusion", symmetric=False)
    with pytest.raises(ValueError, match=r"`form` to be one of"):
        create_learner("ala", task="classification", family="class_pair", form="hinge")
    with pytest.raises(ValueError, match=r"`preset` to be one of \['default', 'faithful'\]"):
        create_learner("ala", task="classification", preset="paper")
    with pytest.raises(TypeError, match=r"\['symmetric'\] do not apply to the 'class_frequency' loss family"):
        create_learner("ala", task="classification", symmetric=False)
    with pytest.raises(ValueError, match=r"`family` to be one of"):
        create_learner("ala", task="classification", family="pairs")
    learner = create_learner("ala", task="classification", family="class_pair", symmetric=False)
    assert isinstance(learner, ALALearner) and learner.core.state_kind == "metric"
    weights = create_learner("ala", task="classification", family="class_weight")
    assert isinstance(weights, ALALearner) and weights.core.state_kind == "class_error"
    faithful = ALALearner(preset="faithful")
    assert faithful.core.every == 200 and faithful.core.controller.replay_capacity == 1000
    assert faithful.core.controller.policy.config() == {"in_features": 24, "hidden": [32, 32]}


def test_policy_feature_mismatch_is_an_error(tmp_path: Path) -> None:
    path = save_policy(ALAPolicy(7), tmp_path / "p.pt")
    with pytest.raises(ValueError, match="takes 7 features per parameter"):
        ALALearner(policy=str(path))
    assert ALALearner(policy=str(path), features="metric", history=5).core.controller.policy.in_features == 7


def test_the_options_old_names_still_work_with_a_future_warning(tmp_path: Path) -> None:
    path = save_policy(ALAPolicy(7), tmp_path / "p.pt")
    with pytest.warns(FutureWarning, match="`K` is now `every`"):
        old = create_learner("ala", task="classification", K=30)
    assert isinstance(old, ALALearner) and old.core.every == 30
    with pytest.warns(FutureWarning) as caught:
        both = ALALearner(policy_path=str(path), state="metric", history=5)  # type: ignore[call-arg]
    assert sorted(str(w.message).split("`")[1] for w in caught) == ["policy_path", "state"]
    assert both.core.state_kind == "metric" and both.core.controller.policy.in_features == 7
    with pytest.warns(FutureWarning), pytest.raises(TypeError, match="`every` was given twice"):
        ALALearner(every=10, K=20)  # type: ignore[call-arg]


# ---------------------------------------------------------------------------- known optimum, real training


class _ShiftLoss(nn.Module):
    """``l_φ(ŷ, y) = mean((ŷ − y − φ)²)``, φ ∈ [−1, 1]: a model trained under it learns ``y + φ``."""

    parameter_names = ["shift"]

    def __init__(self, start: float) -> None:
        super().__init__()
        self.register_buffer("phi", torch.tensor([start]))

    @property
    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor([-1.0]), torch.tensor([1.0])

    def parameter_vector(self) -> torch.Tensor:
        return self.phi.clone()

    def set_parameter_vector(self, vector: torch.Tensor) -> None:
        self.phi.copy_(vector.clamp(-1.0, 1.0))

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((prediction - target - self.phi) ** 2).mean()


def _shift_run(*, train_policy: bool, windows: int = 600, shift: float = 0.5) -> list[float]:
    """ALA on linear regression whose validation targets are shifted by ``shift`` (a train/val
    distribution shift): validation MSE is minimised exactly at φ* = ``shift``.
    Sign reward (Eq. 5), K = 5, β = 0.1. Returns Φ after every controller action."""
    g = torch.Generator().manual_seed(0)
    w = torch.tensor([[1.5], [-2.0]])

    def stream(offset: float):  # type: ignore[no-untyped-def]
        while True:
            x = torch.randn(64, 2, generator=g)
            yield x, x @ w + offset

    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)  # converges within a window: no lag
    learner = ALALearner(task="regression", loss=_ShiftLoss(-1.0), metric="mse", every=5, smoothing_window=1,
                         val_batches=1, features="metric", history=1, hidden=[16], policy_lr=1e-2, beta=0.1,
                         train_policy=train_policy, grad_ratio_every=0, seed=0)
    learner.bind(TrainContext(model=model, optimizer=optimizer, scheduler=None, task="regression",
                              meta_batches=stream(shift), train_batches=stream(0.0), device=torch.device("cpu"),
                              total_steps=5 * windows))
    learner.prepare()
    train = stream(0.0)
    for _ in range(5 * windows):
        learner.step(next(train))
    return [v[0] for v in learner.core.history["phi_trace"]]


def test_policy_learns_to_move_phi_toward_known_optimum_in_real_training() -> None:
    """on a task whose best loss parameter is known (φ* = 0.5), ALA moves
    Φ there from the far bound −1 by REINFORCE on the validation-MSE reward; a frozen, untrained
    policy (same seeds) does not."""
    learned, frozen = _shift_run(train_policy=True), _shift_run(train_policy=False)
    dist = lambda trace: sum(abs(v - 0.5) for v in trace[-150:]) / 150  # noqa: E731
    assert learned[0] <= -0.9 + 1e-6  # starts far from the optimum (one action after −1)
    assert dist(learned) < 0.2, dist(learned)
    assert dist(frozen) > 2 * dist(learned), (dist(frozen), dist(learned))


def test_reinforce_update_matches_naive_policy_gradient_with_baseline() -> None:
    """One update = SGD on −(r − b)·mean_p log π(a_p|s_p), b the EMA of earlier rewards (b₀ = 0),
    against autograd on a copy of the policy (plain SGD swapped in for Adam)."""
    import copy

    torch.manual_seed(0)
    c = ALAController(ALAPolicy(3, hidden=(5,)), reward="difference", baseline_decay=0.8, seed=0)
    c.optimizer = torch.optim.SGD(c.policy.parameters(), lr=0.5)
    feats = torch.randn(4, 3)
    baseline = 0.0
    for r in (0.3, -0.2, 0.7):
        ref = copy.deepcopy(c.policy)
        delta = c.act(feats)
        actions = torch.round(delta / c.beta).long() + 1  # {−β, 0, +β} → {0, 1, 2}
        logp = ref(feats).log_softmax(-1).gather(1, actions[:, None]).mean()
        grads = torch.autograd.grad(-(r - baseline) * logp, list(ref.parameters()))
        stats = c.give_reward(r)
        assert stats["advantage"] == pytest.approx(r - baseline)
        for p, q, g in zip(c.policy.parameters(), ref.parameters(), grads):
            torch.testing.assert_close(p, q - 0.5 * g)
        baseline = 0.8 * baseline + 0.2 * r
        assert c.baseline == pytest.approx(baseline)


@pytest.mark.parametrize("metric", ["error", "aucpr"])
def test_reward_is_oriented_by_higher_is_better(tmp_path: Path, metric: str) -> None:
    """The reward is the sign of the metric's *improvement*: a fall of the error, a rise of AUCPR."""
    from adaloss.metrics import create_metric

    cfg = _cfg(tmp_path, method_args={"every": 4, "val_batches": 2, "smoothing_window": 1, "metric": metric})
    trainer = build_trainer(cfg)
    learner = trainer.learner
    assert isinstance(learner, ALALearner)
    learner.prepare()
    for step in range(1, 17):
        out = learner.step(next(trainer.train_loader))
        if step % 4 == 0:
            m = create_metric(metric)
            trainer.model.eval()
            with torch.no_grad():
                for x, y in learner._val:
                    m.update(trainer.model(x), y)
            trainer.model.train()
            now, prev = m.compute(), learner.core.metrics[-2]
            assert float(out["ala_metric"]) == pytest.approx(now)
            better = now > prev if metric == "aucpr" else now < prev
            worse = now < prev if metric == "aucpr" else now > prev
            assert float(out["reward"]) == float(better) - float(worse)


# ---------------------------------------------------------------------------- command line

CLI_TINY = ["steps=40", "batch_size=32", "log_every=10", "eval_every=20", "model_args.hidden=[16]", "method_args.every=10",
            "method_args.val_batches=2", "method_args.smoothing_window=3", "method_args.family=class_pair", "progress=off",
            "threads=1"]


def test_cli_metric_key_sets_the_reward_metric_and_is_evaluated(tmp_path: Path) -> None:
    assert main(["train", "method=ala", "metric=aucpr", *CLI_TINY, f"run_dir={tmp_path}"]) == 0
    snap = read_jsonl(tmp_path / "snapshots.jsonl")[-1]
    assert snap["metric_name"] == "aucpr" and snap["higher_is_better"] is True
    final = read_jsonl(tmp_path / "metrics.jsonl")[-1]
    assert {"valid_aucpr", "test_aucpr", "valid_error", "test_error"} <= set(final)  # target added to metrics
    # a method that does not target a metric only evaluates it
    assert main(["train", "method=ce", "metric=aucpr", *CLI_TINY[:5], "progress=off", "threads=1",
                 f"run_dir={tmp_path / 'ce'}"]) == 0
    assert "test_aucpr" in read_jsonl(tmp_path / "ce" / "metrics.jsonl")[-1]


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("recall@1", r"`metric`.*'recall@1' is for embedding.*metrics for classification: \['aucpr', 'balanced_aucpr', 'balanced_error', 'error'\]"),
        ("eror", r"Expected `metric` to be one of \['aucpr', 'balanced_aucpr', 'balanced_error', 'error', .*but got 'eror'. Did you mean 'error'\?"),
    ],
)
def test_cli_bad_metric_is_an_error_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    metric: str, expected: str) -> None:
    run = tmp_path / "run"
    assert main(["train", "method=ala", f"metric={metric}", *CLI_TINY, f"run_dir={run}"]) == 2
    assert __import__("re").search(expected, capsys.readouterr().err)
    assert not run.exists()  # nothing was trained or written
    assert main(["train", "method=ala", "metric=aucpr", "method_args.metric=error", *CLI_TINY, f"run_dir={run}"]) == 2
    assert "set only `metric`" in capsys.readouterr().err


def test_cli_plot_draws_phi_and_reward(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from adaloss.plotting import plot_ala_phi, plot_ala_reward

    assert main(["train", "method=ala", *CLI_TINY, f"run_dir={tmp_path}"]) == 0
    capsys.readouterr()
    assert main(["plot", str(tmp_path)]) == 0
    written = capsys.readouterr().out.split()
    assert {Path(p).name for p in written} >= {"ala_phi.png", "ala_reward.png", "learning_curves.png"}
    assert all(Path(p).stat().st_size > 0 for p in written)
    snaps = read_jsonl(tmp_path / "snapshots.jsonl")
    last = snaps[-1]
    # the statistics drawn agree with the final Φ matrix, recomputed here
    phi = torch.tensor(last["phi"])
    off = phi[~torch.eye(10, dtype=torch.bool)]
    assert last["phi_stats"]["diag_mean"][-1] == pytest.approx(1.0)
    assert last["phi_stats"]["offdiag_mean"][-1] == pytest.approx(float(off.mean()), abs=1e-6)
    assert last["phi_stats"]["offdiag_max"][-1] == pytest.approx(float(off.max()), abs=1e-6)
    assert last["controller_steps"] == [0, 10, 20, 30, 40] and len(last["rewards"]) == 4
    stats_ax = plot_ala_phi(snaps).axes[0]
    assert len(stats_ax.lines) == 5 and list(stats_ax.lines[1].get_ydata()) == last["phi_stats"]["offdiag_mean"]
    reward_ax = plot_ala_reward(snaps).axes[0]
    assert list(reward_ax.lines[0].get_xdata()) == [10, 20, 30, 40]
    assert list(reward_ax.lines[0].get_ydata()) == last["rewards"]
    with pytest.raises(ValueError, match="kind 'ala'"):
        plot_ala_phi([{"step": 0, "kind": "classification"}])


def test_cli_policy_reuse_frozen_on_another_architecture(tmp_path: Path) -> None:
    """Policy trained in run A (MLP) drives run B (logistic regression) frozen, from the CLI."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", "method=ala", *CLI_TINY, "checkpoint_every=40", f"run_dir={a}"]) == 0
    trained = load_policy(a / "policy.pt")
    for k, v in load_checkpoint(a / "checkpoints" / "last.pt")["learner"]["controller"]["policy"].items():
        assert torch.equal(v, trained.state_dict()[k])  # policy.pt is the policy at the end of A
    assert main(["train", "method=ala", "model=logistic", *[o for o in CLI_TINY if "hidden" not in o], "seed=3",
                 f"method_args.policy={a}", "method_args.train_policy=false", "checkpoint_every=40",
                 f"run_dir={b}"]) == 0
    controller = load_checkpoint(b / "checkpoints" / "last.pt")["learner"]["controller"]
    for k, v in trained.state_dict().items():
        assert torch.equal(v, controller["policy"][k])
    assert len(controller["rewards"]) == 4 and not (b / "policy.pt").exists()
    assert read_jsonl(b / "snapshots.jsonl")[-1]["phi"] != torch.eye(10).tolist()
    assert main(["train", "method=ala", *CLI_TINY, f"method_args.policy={tmp_path / 'none'}",
                 f"run_dir={tmp_path / 'c'}"]) == 2


def test_cli_compare_ce_and_ala(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    rc = main(["compare", "--methods", "ce,ala", "--seeds", "0", "--out", str(out), "metric=aucpr",
               *[o.replace("method_args.", "method_args.ala.") for o in CLI_TINY]])
    assert rc == 0
    table = (out / "summary.md").read_text()
    assert "| ce |" in table and "| ala |" in table and "test_aucpr" in table
    assert read_jsonl(out / "ala" / "seed0" / "snapshots.jsonl")[-1]["metric_name"] == "aucpr"


def test_config_metric_key() -> None:
    from adaloss.training.config import ConfigError

    assert "metric" not in TrainConfig().identity()  # unset: runs recorded before the key still match
    assert TrainConfig(metric="aucpr").identity()["metric"] == "aucpr"
    with pytest.raises(ConfigError, match=r"Expected `metric` to be one of .*but got 'auc'"):
        TrainConfig(metric="auc")


# ---------------------------------------------------------------------------- metric learning (§3.2, §10.2)

EMBED_TINY = {"task": "embedding", "model": "embedding", "model_args": {"channels": 8}, "embedding_dim": 8,
              "batch_size": 30, "samples_per_class": 6, "threads": 1}
EMBED_CLI = ["dataset=digits", "task=embedding", "model=embedding", "model_args.channels=8", "embedding_dim=8",
             "batch_size=30", "samples_per_class=6", "progress=off", "threads=1"]


def _embed_cfg(tmp: Path, **changes: object) -> TrainConfig:
    return _cfg(tmp, **EMBED_TINY).replace(**changes)


def _recall1_bounds(emb: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Recall@1 by brute force, float64, ties broken against and in favour of the query."""
    d = torch.cdist(emb.double(), emb.double())
    d.fill_diagonal_(float("inf"))
    same = labels[:, None] == labels[None, :]
    same.fill_diagonal_(False)
    s = torch.where(same, d, torch.full_like(d, float("inf"))).min(1, keepdim=True).values
    sure = ((d <= s) & ~same).sum(1) < 1
    maybe = (d < s).sum(1) < 1
    return float(sure.double().mean()), float(maybe.double().mean())


def test_pair_distance_features_layout() -> None:
    loss = PairDistanceLoss(bins=3, bounds=(0.0, 2.0))
    loss.set_parameter_vector(torch.tensor([0.0, 1.0, 2.0, 0.5, 1.5, 1.0]))
    feats = PairDistanceFeatures(history=4)
    assert feats.num_features == 10 and PairDistanceFeatures.fits(loss) and not PairDistanceFeatures.fits(
        ClassPairLoss(3))
    g = torch.Generator().manual_seed(0)
    e1, y = torch.randn(20, 4, generator=g), torch.arange(20) % 3
    lo, hi = loss.bounds

    def obs(e: torch.Tensor) -> Observation:
        return Observation(progress=0.75, metrics=[0.5], phi=loss.parameter_vector(), lower=lo, upper=hi,
                           logits=e, targets=y, loss=loss)

    f1 = feats(obs(e1))
    assert f1.shape == (6, 10)
    from adaloss.losses.ala import pair_distance_histograms

    p1, n1 = pair_distance_histograms(e1, y, bins=3)
    torch.testing.assert_close(f1[:, 0], torch.cat([p1, n1]))  # own share, newest
    assert f1[:, 1:4].eq(0).all() and f1[:, 4].abs().max() < 1e-7  # zero-padded history; no change yet
    torch.testing.assert_close(f1[:, 5], torch.cat([n1, p1]))  # the other pair type, same bin
    torch.testing.assert_close(f1[:, 6], torch.tensor([1.0, 1, 1, -1, -1, -1]))
    torch.testing.assert_close(f1[:, 7], torch.tensor([1 / 6, 3 / 6, 5 / 6] * 2))
    torch.testing.assert_close(f1[:, 8], torch.tensor([-1.0, 0.0, 1.0, -0.5, 0.5, 0.0]))
    assert f1[:, 9].eq(0.75).all()
    e2 = e1 * torch.linspace(0.2, 3.0, 20)[:, None]
    f2 = feats(obs(e2))
    p2, n2 = pair_distance_histograms(e2, y, bins=3)
    torch.testing.assert_close(f2[:, 1], f1[:, 0])  # the previous histogram shifts back
    torch.testing.assert_close(f2[:, 4], torch.cat([p2, n2]) - (torch.cat([p1, n1]) + torch.cat([p2, n2])) / 2)
    restored = PairDistanceFeatures(history=4)
    restored.load_state_dict(feats.state_dict())
    torch.testing.assert_close(restored(obs(e1)), feats(obs(e1)))
    with pytest.raises(ValueError, match="needs a PairDistanceLoss"):
        feats(Observation(progress=0.0, metrics=[], phi=torch.zeros(3), lower=torch.zeros(3), upper=torch.ones(3),
                          logits=e1, targets=y, loss=ClassPairLoss(3)))  # type: ignore[arg-type]


@pytest.mark.parametrize("metric", ["recall@1", "nmi"])
def test_embedding_window_reward_from_retrieval_metric(tmp_path: Path, metric: str) -> None:
    """ALA on the embedding task: the pair-distance loss and state, M = the retrieval metric of the
    fixed validation subset (classes 0-4), reward = sign of its rise, the state's histograms
    taken on those validation embeddings."""
    from adaloss.losses.ala import pair_distance_histograms
    from adaloss.metrics import nmi

    cfg = _embed_cfg(tmp_path, metric=metric,
                     method_args={"every": 4, "val_batches": 2, "smoothing_window": 1, "total_steps": 12})
    trainer = build_trainer(cfg)
    learner = trainer.learner
    assert isinstance(learner, ALALearner) and learner.core.state_kind == "pair_distance"
    assert learner.core.metric.name == metric and learner.val_subset == "fixed"
    assert isinstance(learner.criterion, PairDistanceLoss) and learner.core.controller.policy.in_features == 16
    learner.prepare()
    assert set(torch.cat([y for _, y in learner._val]).tolist()) == {0, 1, 2, 3, 4}
    for step in range(1, 13):
        out = learner.step(next(trainer.train_loader))
        if step % 4:
            continue
        trainer.model.eval()
        with torch.no_grad():
            emb = torch.cat([trainer.model(x) for x, _ in learner._val])
        trainer.model.train()
        labels = torch.cat([y for _, y in learner._val])
        now = learner.core.metrics[-1]  # M of this window (smoothing_window=1: the metric now); logged as float32
        assert float(out["ala_metric"]) == pytest.approx(now, rel=1e-6)
        if metric == "recall@1":
            low, high = _recall1_bounds(emb, labels)
            assert low - 1e-9 <= now <= high + 1e-9
        else:
            assert now == pytest.approx(float(nmi(emb, labels)))
        prev = learner.core.metrics[-2]
        assert float(out["reward"]) == float((now > prev) - (now < prev))  # higher is better
        pos, neg = pair_distance_histograms(emb, labels, bins=10)
        assert learner.core.history["distance_hist"]["pos"][-1] == pos.tolist()
        assert learner.core.history["distance_hist"]["neg"][-1] == neg.tolist()
    assert learner.core.controller.episodes == 3
    snap = learner.snapshot()
    assert snap is not None and len(snap["distance_hist"]["pos"]) == len(snap["controller_steps"]) == 4
    assert len(snap["weights_pos"]) == len(snap["weights_neg"]) == 10


def test_embedding_end_to_end_resume_is_exact(tmp_path: Path, kill_and_resume) -> None:  # type: ignore[no-untyped-def]
    """ALA on the embedding task with class-balanced batches, killed mid-window right after a
    checkpoint, resumes to the uninterrupted run's numbers."""
    base = _embed_cfg(tmp_path, steps=40, checkpoint_every=15, eval_every=20, momentum=0.9, metric="recall@1",
                      method_args={**TINY["ala_args"], "preset": "faithful", "replay_batch": 3})
    run = kill_and_resume(base)  # compares the loss weights, the policy, the loader state, ... bit for bit
    assert run.killed_at == 15
    full = run.full_summary
    keys = {f"{s}_{m}" for s in ("valid", "test") for m in ("recall@1", "recall@2", "recall@4", "recall@8", "nmi")}
    assert set(full["final"]) == keys
    a = load_checkpoint(run.full / "checkpoints" / "last.pt")
    assert a["train_loader"]["kind"] == "class_balanced" and a["train_loader"]["batches"] == 30
    snap = read_jsonl(run.full / "snapshots.jsonl")[-1]
    assert snap["metric_name"] == "recall@1" and snap["controller_steps"] == [0, 10, 20, 30, 40]
    assert all(abs(sum(h) - 1) < 1e-5 for kind in ("pos", "neg") for h in snap["distance_hist"][kind])
    w = torch.tensor(snap["weights_pos"] + snap["weights_neg"])
    assert w.min() >= 0 and w.max() <= 2 and not torch.equal(w, torch.ones(20))  # Φ moved, within bounds


def test_embedding_cli_run_and_compare_with_contrastive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "method=ala", *EMBED_CLI, "steps=20", "log_every=10", "method_args.every=10",
                 "method_args.smoothing_window=2", f"run_dir={tmp_path / 'run'}"]) == 0
    final = json.loads((tmp_path / "run" / "summary.json").read_text())["final"]
    assert {"test_recall@1", "test_recall@8", "test_nmi", "valid_recall@1"} <= set(final)
    snap = read_jsonl(tmp_path / "run" / "snapshots.jsonl")[-1]
    assert snap["metric_name"] == "recall@1"  # the embedding task's default target
    out = tmp_path / "cmp"
    assert main(["compare", "--methods", "contrastive,ala", "--seeds", "0", "--out", str(out), *EMBED_CLI,
                 "steps=20", "metric=nmi", "method_args.ala.every=10", "method_args.ala.smoothing_window=2"]) == 0
    table = (out / "summary.md").read_text()
    assert "| contrastive |" in table and "| ala |" in table and "test_recall@1" in table and "test_nmi" in table
    assert read_jsonl(out / "ala" / "seed0" / "snapshots.jsonl")[-1]["metric_name"] == "nmi"
    assert "p vs contrastive" in table


@pytest.mark.parametrize("metric", ["error", "aucpr"])
def test_embedding_refuses_classification_metrics_before_training(tmp_path: Path, metric: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "method=ala", f"metric={metric}", *EMBED_CLI, "steps=10", f"run_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert (f"Invalid config key `metric`: Metric '{metric}' is for classification, but the task is embedding; "
            "metrics for embedding: ['nmi', 'recall@1', 'recall@2', 'recall@4', 'recall@8']") in err
    assert not run.exists()
    with pytest.raises(ValueError, match=f"Metric '{metric}' is for classification, but the task is embedding"):
        create_learner("ala", task="embedding", metric=metric)


def test_embedding_bad_options_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"Unknown option\(s\) \['form'\] for method 'ala' on the embedding task.*"
                                        r"loss options: \['base', 'bins', 'boundary', 'bounds', 'margin'"):
        create_learner("ala", task="embedding", form="sigmoid")
    with pytest.raises(ValueError, match=r"`features='pair_confusion'` needs a ClassPairLoss"):
        create_learner("ala", task="embedding", features="pair_confusion")
    with pytest.raises(ValueError, match=r"`features='pair_distance'` needs a PairDistanceLoss"):
        create_learner("ala", task="classification", features="pair_distance")
    with pytest.raises(ValueError, match=r"`val_subset='stream'` is refused for the retrieval metric 'recall@1'"):
        create_learner("ala", task="embedding", val_subset="stream")
    with pytest.raises(ValueError, match=r"`base` to be one of \['contrastive', 'margin'\], but got 'triplet'"):
        create_learner("ala", task="embedding", base="triplet")
    with pytest.raises(ValueError, match="default losses for classification .* and embedding"):
        ALALearner(task="regression", metric="mse")
    # the faithful preset's pair state becomes the pair-distance state; loss options reach the loss
    learner = create_learner("ala", task="embedding", preset="faithful", bins=4, base="margin", margin=0.2)
    assert isinstance(learner, ALALearner) and learner.core.state_kind == "pair_distance"
    assert isinstance(learner.criterion, PairDistanceLoss) and learner.criterion.config()["bins"] == 4
    assert learner.core.metric.name == "recall@1" and len(learner.criterion.parameter_names) == 8
    # a fixed validation subset that would repeat examples (73 valid rows, batches of 30)
    cfg = _embed_cfg(tmp_path, method_args={"val_batches": 3, "val_subset": "fixed"})
    with pytest.raises(ValueError, match=r"Expected `val_batches` to be at most 2 .* for the retrieval metric "
                                         r"'recall@1', but got 3"):
        build_trainer(cfg)
    auto = build_trainer(_embed_cfg(tmp_path, method_args={"val_batches": 3})).learner
    assert isinstance(auto, ALALearner) and auto.val_subset == "all"  # auto: the whole split, no repeats


def test_resolve_val_subset_reads_the_whole_split_only_where_batches_would_repeat() -> None:
    from adaloss.learners.ala import resolve_val_subset

    def pick(subset: str = "auto", *, batches: int = 3, per_pass: int | None = 2, metric: str | None = "recall@1",
             split: bool = True) -> str:
        return resolve_val_subset(subset, val_batches=batches, batches_per_pass=per_pass,  # type: ignore[arg-type]
                                  retrieval_metric=metric, has_split=split)

    assert pick() == "all"
    assert pick(batches=2) == pick(metric=None) == pick(per_pass=None) == "fixed"
    assert pick("stream", metric=None) == "stream"
    for subset in ("fixed", "auto"):  # auto without a whole split to read: fixed batches, which would repeat
        with pytest.raises(ValueError, match="at most 2 .* retrieval metric 'recall@1', but got 3"):
            pick(subset, split=subset == "fixed")
    with pytest.raises(ValueError, match="`val_subset='all'` evaluates the whole validation split"):
        pick("all", split=False)


def test_the_preset_picks_the_class_pair_form() -> None:
    from adaloss.learners import create_learner

    def form(**options: object) -> str:
        learner = create_learner("ala", task="classification", family="class_pair", **options)
        learner.core._build_loss(3)
        return learner.criterion.form

    assert form() == "log_prob"  # Φ = I is exactly cross-entropy
    assert form(preset="faithful") == "sigmoid"
    assert form(loss_scale=2.0) == "log_prob" and form(preset="faithful", loss_scale=2.0) == "sigmoid"
    assert form(preset="faithful", form="log_prob") == "log_prob"
    with pytest.raises(ValueError, match="Expected `preset` to be one of"):
        create_learner("ala", task="classification", family="class_pair", preset="paper", loss_scale=2.0)


def test_truncated_eq4_window_against_the_full_sum(tmp_path: Path) -> None:
    """Dossier §9 #5: M_t from the last L steps; L = K is Eq. 4 verbatim (smoothing_window=0)."""
    args = {"every": 4, "val_batches": 2, "gamma": 0.8, "total_steps": 8}

    def run(window: int, name: str) -> tuple[list[float], list[list[float]]]:
        trainer = build_trainer(_cfg(tmp_path / name, method_args={**args, "smoothing_window": window}))
        learner = trainer.learner
        assert isinstance(learner, ALALearner)
        learner.prepare()
        by_hand: list[float] = []  # the validation error after every step, evaluated independently
        for _ in range(8):
            learner.step(next(trainer.train_loader))
            metric = ErrorRate()
            trainer.model.eval()
            with torch.no_grad():
                for x, y in learner._val:
                    metric.update(trainer.model(x), y)
            trainer.model.train()
            by_hand.append(float(metric.compute()))
        return learner.core.metrics, [by_hand[0:4], by_hand[4:8]]

    full, windows = run(0, "full")
    assert full[1:] == pytest.approx([smoothed_metric(w, 0.8) for w in windows], abs=1e-12)
    assert run(4, "same")[0] == full  # L = K: the same numbers
    last2, windows2 = run(2, "last2")
    assert last2[1:] == pytest.approx([smoothed_metric(w[2:], 0.8) for w in windows2], abs=1e-12)


def test_class_error_features_layout_by_hand() -> None:
    from adaloss.losses import ClassWeightLoss
    from adaloss.methods.ala import ClassErrorFeatures

    loss = ClassWeightLoss(3, center=False)  # bounds (-2, 2), Φ as written
    loss.set_parameter_vector(torch.tensor([1.0, 0.0, -2.0]))
    feats = ClassErrorFeatures(history=2)
    assert feats.num_features == 7 and ClassErrorFeatures.fits(loss) and not ClassErrorFeatures.fits(ClassPairLoss(3))
    lo, hi = loss.bounds
    y = torch.tensor([0, 0, 0, 0, 1, 1])  # class 2 absent
    z1 = torch.eye(3)[torch.tensor([0, 0, 1, 1, 1, 0])]  # class 0: 2 of 4 right, class 1: 1 of 2 right
    obs = Observation(progress=0.5, metrics=[], phi=loss.parameter_vector(), lower=lo, upper=hi, logits=z1, targets=y,
                      loss=loss)
    f1 = feats(obs)
    expected = torch.tensor([
        # error now, error before (none yet), gap to mean error, change, share × C, Φ position, t/T
        [0.5, 0.0, 0.0, 0.0, 4 / 6 * 3, 0.5, 0.5],
        [0.5, 0.0, 0.0, 0.0, 2 / 6 * 3, 0.0, 0.5],
        [0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.5],
    ])
    torch.testing.assert_close(f1, expected)
    z2 = torch.eye(3)[torch.tensor([0, 0, 0, 0, 1, 0])]  # class 0 now all right, class 1 still half
    f2 = feats(Observation(progress=0.5, metrics=[], phi=loss.parameter_vector(), lower=lo, upper=hi, logits=z2,
                           targets=y, loss=loss))
    torch.testing.assert_close(f2[:2, :4], torch.tensor([[0.0, 0.5, -0.25, -0.5], [0.5, 0.5, 0.25, 0.0]]))
    again = ClassErrorFeatures(history=2)
    again.load_state_dict(feats.state_dict())
    assert [e.tolist() for e in again.state_dict()["errors"]] == [[0.0, 0.5, 0.0], [0.5, 0.5, 0.0]]
