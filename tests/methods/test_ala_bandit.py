"""The ladder's first rung: ALA's controller, with the settings the default preset
takes for the tied class-frequency family, learns the direction of the better loss within the
episodes one real run gives it, at the reward noise measured on the planted task.

The synthetic task (:func:`adaloss.methods.ala.bandit.run_bandit`) has a known answer; σ and Δ
are the measured ones (``experiments/results/ala_signal.json``, checked below), so the test fails
if the controller's settings stop being sample-efficient enough for the real signal.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch

from adaloss.methods.ala import ALAController
from adaloss.methods.ala.bandit import run_bandit
from adaloss.methods.ala.presets import ALA_PRESETS, FAMILY_DEFAULTS

SIGNAL = Path(__file__).resolve().parents[2] / "experiments" / "results" / "ala_signal.json"
#: measured on the planted task (``python experiments/ala_signal.py --data-dir ../shared/datasets``):
#: reward noise at fixed Φ, and the paired effect of one step of the tied family's τ (β_τ = 0.3)
SIGMA = 0.008562
DELTA = 0.01048
#: controller steps one planted run gave at the K = 100 of the measurement (3000 steps / 100); the
#: default K = 50 gives twice as many episodes, each with its own noise (not measured), so the
#: test holds the controller to the measurement's budget
BUDGET = 30
SEEDS = 24


def _controller(**overrides: object):  # type: ignore[no-untyped-def]
    opts = {**ALA_PRESETS["default"], **FAMILY_DEFAULTS["FrequencyWeightLoss"], **overrides}

    def make(policy, seed):  # type: ignore[no-untyped-def]
        return ALAController(policy, beta=opts["beta"], lr=opts["policy_lr"], baseline_decay=opts["baseline_decay"],
                             reward=opts["reward"], seed=seed)
    return make


def _mean_phi_second_half(make, *, start: float, target: float) -> float:  # type: ignore[no-untyped-def]
    """φ (relative to the target) averaged over the second half of the budget and over seeds."""
    values = []
    for s in range(SEEDS):
        res = run_bandit(lambda p, s=s: make(p, s), delta=DELTA, sigma=SIGMA, episodes=BUDGET, start=start,
                         target=target, bounds=(0.0, 1.0), seed=s)
        values.append(statistics.fmean(abs(v) for v in res[BUDGET // 2 :]))
    return statistics.fmean(values)


def test_constants_are_the_measured_signal() -> None:
    if not SIGNAL.is_file():
        pytest.skip("experiments/results/ala_signal.json is not in this checkout")
    res = json.loads(SIGNAL.read_text())
    assert res["reward_sigma"] == pytest.approx(SIGMA, rel=1e-3)
    assert res["effects"]["tau"]["delta"] == pytest.approx(DELTA, rel=1e-3)
    assert res["windows"] == BUDGET
    assert 3000 // FAMILY_DEFAULTS["FrequencyWeightLoss"]["every"] >= BUDGET  # the default's run gives at least this


@pytest.mark.parametrize(("start", "target"), [(0.0, 1.0), (1.0, 0.0)], ids=["raise", "lower"])
def test_controller_finds_the_better_direction_within_one_runs_episodes(start: float, target: float) -> None:
    torch.set_num_threads(1)
    learned = _mean_phi_second_half(_controller(), start=start, target=target)
    walk = _mean_phi_second_half(_controller(policy_lr=1e-9), start=start, target=target)  # never learns
    # a random walk from one bound stays ≈ 0.5 away on average (measured: 0.49 / 0.54); the learned
    # controller must spend the second half of the run near the better end, whichever end that is
    # (measured: 0.12 / 0.08; with the paper's policy_lr 1e-3 instead: 0.42 / 0.43, which fails)
    assert learned < walk - 0.25, (learned, walk)
    assert learned < 0.25, learned


def test_normalized_reward_by_hand() -> None:
    from adaloss.methods.ala import ALAPolicy

    c = ALAController(ALAPolicy(4), reward="normalized", baseline_decay=0.9, train_policy=False)
    rewards = []
    for improvement in (0.5, 0.01, -0.02):
        c.act(torch.zeros(1, 4))
        rewards.append(c.give_reward(improvement)["reward"])
    # episode 0: its sign only; then the improvement over the running RMS (decay 0.9) including it
    scale = (0.9 * 0.01**2 + 0.1 * 0.02**2) ** 0.5
    assert rewards == pytest.approx([1.0, 1.0, -0.02 / scale])
    state = c.state_dict()
    again = ALAController(ALAPolicy(4), reward="normalized", baseline_decay=0.9)
    again.load_state_dict(state)
    assert again.reward_sq == pytest.approx(c.reward_sq)


def test_the_bandit_builds_its_policy_under_the_global_rng_lock() -> None:
    """Workers in threads build their policies from torch's global generator: one at a time, under
    :data:`adaloss._rng.GLOBAL_RNG_LOCK` (concurrent seeding interleaves the draws and can deadlock)."""
    import threading

    from adaloss._rng import GLOBAL_RNG_LOCK

    make = _controller()
    built = threading.Event()  # the controller is made right after the policy is built

    def build(policy):  # type: ignore[no-untyped-def]
        built.set()
        return make(policy, 0)

    def work() -> None:
        run_bandit(build, delta=DELTA, sigma=SIGMA, episodes=2, start=0.0, target=1.0, bounds=(0.0, 1.0), seed=0)

    work()  # warm: imports and first calls out of the way
    built.clear()
    with GLOBAL_RNG_LOCK:
        worker = threading.Thread(target=work)
        worker.start()
        assert not built.wait(1.0)  # the policy waits for the lock
    assert built.wait(30)
    worker.join(30)
    assert not worker.is_alive()
