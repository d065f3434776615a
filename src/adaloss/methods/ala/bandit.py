"""A synthetic task with a known answer for ALA's controller: can it learn at a given reward noise?

One loss parameter φ in ``[lower, upper]`` starts at ``start``; the best value is ``target``. At
each episode the controller sees the generic state (:class:`MetricHistoryFeatures`: φ's position,
progress, the metric's history) and moves φ by −β, 0 or +β. The metric improvement it is
rewarded with is ``Δ·(+1 toward the target, −1 away, 0 keep) + σ·ε`` — the paired effect Δ of a
good action and the noise σ measured on a real run by ``experiments/ala_signal.py``. Once φ is
within β/2 of the target, keeping is right and either move is −Δ.

Used by the controller's sample-efficiency test and by ``experiments/ala_bandit.py`` (ours).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from adaloss._rng import seeded_global_rng
from adaloss.methods.ala.features import MetricHistoryFeatures, Observation
from adaloss.methods.ala.policy import ALAController, ALAPolicy

__all__ = ["run_bandit"]


def run_bandit(
    make_controller: Callable[[ALAPolicy], ALAController],
    *,
    delta: float,
    sigma: float,
    episodes: int,
    target: float = 1.0,
    start: float = 0.0,
    bounds: tuple[float, float] = (-1.0, 2.0),
    history: int = 10,
    seed: int = 0,
) -> list[float]:
    """Run ``episodes`` episodes of the synthetic task; returns φ − target after each episode.

    Args:
        make_controller: builds the controller under test around a fresh policy (its β is the step).
        delta: Δ, the expected reward of a right move over keeping (and of keeping over a wrong one).
        sigma: σ, the reward noise.
        episodes: the episode budget.
        target, start, bounds: the best φ, φ's start, φ's clip range.
        history: metric history of the state.
        seed: seeds the policy's initialisation and the noise.
    """
    features = MetricHistoryFeatures(history=history)
    with seeded_global_rng(seed):
        policy = ALAPolicy(features.num_features)
    controller = make_controller(policy)
    beta = controller.beta
    noise = torch.Generator().manual_seed(10_000 + seed)
    lo, hi = bounds
    phi, metric = start, 1.0
    metrics: list[float] = [metric]
    phis: list[float] = []
    empty = torch.zeros(0)

    def observe(t: int) -> torch.Tensor:
        obs = Observation(progress=t / episodes, metrics=list(metrics), phi=torch.tensor([phi]),
                          lower=torch.tensor([lo]), upper=torch.tensor([hi]), logits=empty, targets=empty,
                          loss=None)  # type: ignore[arg-type]
        return features(obs)

    def good_sign() -> float:
        return 0.0 if abs(phi - target) <= beta / 2 else (1.0 if phi < target else -1.0)

    for t in range(episodes):
        step = float(controller.act(observe(t))[0])
        move = 0.0 if step == 0 else (1.0 if step > 0 else -1.0)
        good = good_sign()
        gain = delta * (move * good if good != 0 else -abs(move))
        improvement = gain + sigma * float(torch.randn((), generator=noise))
        phi = min(max(phi + step, lo), hi)
        metric -= improvement
        metrics.append(metric)
        controller.give_reward(improvement)
        phis.append(phi - target)
    return phis
