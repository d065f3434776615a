"""ALA: a policy adapts the loss parameters Φ every K base steps from validation-metric rewards.

Huang et al., "Addressing the Loss-Metric Mismatch with Adaptive Loss Alignment" (ICML 2019).
The paper body was not available; the loop follows the figure-2 caption and patent abstract
(dossier ``papers/ala.md`` §2, verified), the numbers and layouts the public re-implementation
attributes to the paper (§4, marked *reconstructed*) and the dossier's recommendations (§9).

The loop (one-step episodes, T = 1, so a contextual bandit):

1. every K base steps the controller observes a state ``s_t`` (:class:`PairConfusionFeatures`,
   :class:`PairDistanceFeatures` or :class:`MetricHistoryFeatures`), samples one of
   ``{−β, 0, +β}`` per loss parameter from the shared per-parameter :class:`ALAPolicy`, and
   sets ``Φ ← clip(Φ + ΔΦ, bounds)``;
2. the base model trains K steps under ``l_Φ``;
3. the smoothed validation metric ``M_t`` (Eq. 4, :func:`smoothed_metric`) is compared with
   the previous one; the reward (sign of the improvement by default, Eq. 5) updates the policy
   by REINFORCE with a moving-average baseline (:class:`ALAController`); then step 1 again.

Tasks: classification (the class-pair loss, dossier §3.1) and metric learning, ``task=
"embedding"`` (the pair-distance loss over distance bins, rewarded by Recall@k or NMI on the
validation split of the training classes; dossier §3.2, §10.2 — a reconstruction).
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaloss._validation import check_choice, check_fraction, check_int, check_positive
from adaloss.data.loader import iterate_batches
from adaloss.distributed import Collective, LocalCollective
from adaloss.learners.base import Learner, TrainContext
from adaloss.functional.losses import contrastive_loss
from adaloss.losses.ala import ClassPairLoss, PairDistanceLoss, ParametricLoss, apply_parameter_delta
from adaloss.metrics import create_metric
from adaloss.typing import Batch, StateDict, Task

__all__ = [
    "ALA_EMBEDDING_LOSS_OPTIONS",
    "ALA_LOSS_OPTIONS",
    "ALA_PRESETS",
    "ALAController",
    "ALALearner",
    "ALAPolicy",
    "DEFAULT_TARGET_METRIC",
    "MetricHistoryFeatures",
    "Observation",
    "PairConfusionFeatures",
    "PairDistanceFeatures",
    "create_ala_learner",
    "load_policy",
    "phi_statistics",
    "save_policy",
    "smoothed_metric",
    "soft_confusion",
]

logger = logging.getLogger("adaloss")

POLICY_FORMAT = "adaloss-ala-policy"
#: the policy file an ALA run keeps up to date in its run directory (for reuse, dossier §9 #13)
POLICY_FILE = "policy.pt"
#: Φ vectors up to this length are traced entry by entry in snapshots (longer: statistics only)
PHI_TRACE_MAX = 16

#: Option values per preset; every one is also a keyword option of :class:`ALALearner`.
#: ``faithful`` = the values the public re-implementation attributes to the paper (dossier §4,
#: §9 #1; reconstructed), with Eq. 4 truncated to the last 40 steps of each window (§9 #5).
#: ``default`` = the same but on-policy REINFORCE without replay (§9 #7) and a state chosen
#: to fit the loss (the 24-d pair layout for the symmetric class-pair loss, else the generic one).
ALA_PRESETS: dict[str, dict[str, Any]] = {
    "faithful": {
        "K": 200, "beta": 0.1, "gamma": 0.9, "smoothing_window": 40, "state": "pair_confusion",
        "history": 10, "hidden": [32, 32], "policy_lr": 1e-3, "baseline_decay": 0.9, "entropy_coef": 0.0,
        "replay_capacity": 1000, "replay_batch": 8, "clip_ratio": 0.2, "reward": "sign", "val_batches": 16,
    },
    "default": {
        "K": 200, "beta": 0.1, "gamma": 0.9, "smoothing_window": 40, "state": "auto",
        "history": 10, "hidden": [32, 32], "policy_lr": 1e-3, "baseline_decay": 0.9, "entropy_coef": 0.0,
        "replay_capacity": 0, "replay_batch": 8, "clip_ratio": 0.2, "reward": "sign", "val_batches": 16,
    },
}

#: The class-pair loss form each preset builds when no loss is given. ``faithful``: the paper's
#: sigmoid form as reconstructed (dossier §3.1). ``default``: the log-probability form, exactly
#: cross-entropy at Φ = I. Measured (Fashion-MNIST, LeNet-5, SGD 0.01 momentum 0.9, Φ = I held
#: fixed, 2000 steps): CE 12.9 % test error, sigmoid form 56.0 % (loss_scale 4: 58.3 % at step
#: 1000) — the sigmoid's gradient ``p_y / (1 + p_y)²`` vanishes for confidently wrong examples, so
#: whole classes are given up; no learning-rate scale repairs that (NOTES, "ALA loss form").
PRESET_FORMS: dict[str, str] = {"faithful": "sigmoid", "default": "log_prob"}

#: options of ``method=ala`` that go to :class:`~adaloss.losses.ala.ClassPairLoss`
ALA_LOSS_OPTIONS = ("form", "bounds", "diagonal_bounds", "symmetric", "adapt_diagonal", "loss_scale", "num_classes")
#: options of ``method=ala`` on the embedding task that go to :class:`~adaloss.losses.ala.PairDistanceLoss`
ALA_EMBEDDING_LOSS_OPTIONS = ("bins", "base", "margin", "boundary", "max_distance", "normalize", "bounds")
#: the metric rewarded when none is named, per task
DEFAULT_TARGET_METRIC: dict[str, str] = {"classification": "error", "regression": "mse", "embedding": "recall@1"}

#: action index → multiple of β (decrease, keep, increase)
ACTION_SIGNS = (-1.0, 0.0, 1.0)


# ---------------------------------------------------------------------------- helpers


def smoothed_metric(values: Sequence[float], gamma: float) -> float:
    """Eq. 4 (reconstructed), normalised: ``Σ_j γ^{n−j} m_j / Σ_j γ^{n−j}`` over ``values = m_1..m_n``.

    The paper's sum is over all K steps of the window and unnormalised; normalising leaves the
    sign reward unchanged and keeps ``M`` on the metric's scale (dossier §4, §9 #5).
    """
    n = len(values)
    if n == 0:
        raise ValueError("smoothed_metric() needs at least one value.")
    weights = [gamma ** (n - 1 - k) for k in range(n)]
    return sum(w * v for w, v in zip(weights, values)) / sum(weights)


def soft_confusion(logits: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """Eq. 7 (reconstructed): ``C_ij`` = mean of ``−log p_j`` over validation samples of class i.

    Rows of classes absent from ``targets`` are 0.
    """
    nll = -F.log_softmax(logits.float(), dim=-1)
    sums = torch.zeros(num_classes, num_classes, device=logits.device).index_add_(0, targets, nll)
    counts = torch.bincount(targets, minlength=num_classes).clamp_min(1).to(sums)
    return sums / counts[:, None]


@dataclass
class Observation:
    """What a state-feature builder sees at a controller step.

    Attributes:
        progress: ``t / T`` (0 when the total step count is unknown).
        metrics: the smoothed validation metric ``M`` of every controller step so far, oldest first.
        phi, lower, upper: the loss parameter vector and its bounds.
        logits, targets: the model's outputs on the validation subset at this step.
        loss: the loss being adapted.
    """

    progress: float
    metrics: list[float]
    phi: Tensor
    lower: Tensor
    upper: Tensor
    logits: Tensor
    targets: Tensor
    loss: ParametricLoss


class PairConfusionFeatures:
    """The 24-d per-class-pair state of the re-implementation (dossier §4, reconstructed).

    For each unordered pair ``i < j`` (the order of a symmetric :class:`ClassPairLoss`'s vector):
    the last ``history`` soft-confusion values ``(C_ij, C_ji)`` (newest first, zero-padded) —
    ``2·history``; their relative change ``(C − mean) / (|mean| + ε)`` against the mean of that
    history — 2; ``Φ_ij`` — 1; ``t / T`` — 1. ``history = 10`` gives 24.

    Addition (dossier §9 #12): with ``log_confusion`` (default) the confusion values, which are
    unbounded NLLs, enter as ``log1p(C)``.
    """

    def __init__(self, *, history: int = 10, log_confusion: bool = True) -> None:
        self.history = int(check_positive("history", history))
        self.log_confusion = bool(log_confusion)
        self._confusions: list[Tensor] = []

    @property
    def num_features(self) -> int:
        return 2 * self.history + 4

    @staticmethod
    def fits(loss: object) -> bool:
        return isinstance(loss, ClassPairLoss) and loss.symmetric and not loss.adapt_diagonal

    def __call__(self, obs: Observation) -> Tensor:
        loss = obs.loss
        if not self.fits(loss):
            raise ValueError("The pair-confusion state needs a ClassPairLoss with symmetric=True and "
                             "adapt_diagonal=False; use state='metric' for other losses.")
        assert isinstance(loss, ClassPairLoss)
        c = loss.num_classes
        conf = soft_confusion(obs.logits, obs.targets, c).cpu()
        if self.log_confusion:
            conf = torch.log1p(conf)
        self._confusions = [conf, *self._confusions][: self.history]
        rows, cols = torch.triu_indices(c, c, offset=1)
        hist = torch.stack(self._confusions)  # (h, C, C), newest first
        h = hist.shape[0]
        pair_hist = torch.zeros(rows.numel(), self.history, 2)
        pair_hist[:, :h, 0] = hist[:, rows, cols].T
        pair_hist[:, :h, 1] = hist[:, cols, rows].T
        mean = pair_hist[:, :h].mean(1)
        rel = (pair_hist[:, 0] - mean) / (mean.abs() + 1e-8)
        phi = obs.phi.detach().float().cpu()[:, None]
        progress = torch.full_like(phi, obs.progress)
        return torch.cat([pair_hist.reshape(rows.numel(), -1), rel, phi, progress], dim=1)

    def state_dict(self) -> StateDict:
        return {"confusions": [c.clone() for c in self._confusions]}

    def load_state_dict(self, state: StateDict) -> None:
        self._confusions = [c.clone() for c in state["confusions"]]


class MetricHistoryFeatures:
    """A generic per-parameter state for any :class:`~adaloss.losses.ala.ParametricLoss` (ours).

    For each entry ``φ_k``: its position within its bounds scaled to [−1, 1]; ``t / T``; the
    last ``history`` smoothed validation-metric values (newest first, zero-padded).
    ``2 + history`` numbers; the policy is shared across parameters, as in the pair layout.
    """

    def __init__(self, *, history: int = 10) -> None:
        self.history = int(check_positive("history", history))

    @property
    def num_features(self) -> int:
        return 2 + self.history

    def __call__(self, obs: Observation) -> Tensor:
        phi, lo, hi = (t.detach().float().cpu() for t in (obs.phi, obs.lower, obs.upper))
        pos = 2 * (phi - lo) / (hi - lo) - 1
        recent = list(reversed(obs.metrics[-self.history :]))
        hist = torch.zeros(self.history)
        hist[: len(recent)] = torch.tensor(recent, dtype=torch.float32)
        n = phi.shape[0]
        return torch.cat([pos[:, None], torch.full((n, 1), obs.progress), hist.expand(n, -1)], dim=1)

    def state_dict(self) -> StateDict:
        return {}

    def load_state_dict(self, state: StateDict) -> None:
        pass


class PairDistanceFeatures:
    """The per-bin metric-learning state (dossier §10.2, a reconstruction).

    At each controller step the validation embeddings give the normalised histograms of the
    positive- and negative-pair distances in the bins of the
    :class:`~adaloss.losses.ala.PairDistanceLoss` (:func:`~adaloss.losses.ala.pair_distance_histograms`),
    so each entry of Φ — a weight of one pair type in one bin — has its own share of pairs. For
    each entry, in Φ's order (positive bins, then negative bins):

    * its share at the last ``history`` controller steps, newest first, zero-padded — ``history``;
    * the change of the current share against the mean of that history — 1 (the shares are
      already on [0, 1], so a difference, not a ratio);
    * the other pair type's current share in the same bin (how much the two overlap) — 1;
    * the pair type, +1 positive / −1 negative — 1;
    * the bin's centre divided by ``max_distance`` — 1;
    * Φ's position within its bounds, scaled to [−1, 1] — 1;
    * ``t / T`` — 1.

    ``history + 6`` numbers (16 for ``history = 10``); the policy is shared across entries, so
    its size does not depend on the number of bins.
    """

    def __init__(self, *, history: int = 10) -> None:
        self.history = int(check_positive("history", history))
        #: (positive, negative) histograms of the controller steps so far, newest first
        self._hists: list[tuple[Tensor, Tensor]] = []

    @property
    def num_features(self) -> int:
        return self.history + 6

    @staticmethod
    def fits(loss: object) -> bool:
        return isinstance(loss, PairDistanceLoss)

    @property
    def latest(self) -> tuple[Tensor, Tensor] | None:
        """The (positive, negative) histograms of the last controller step."""
        return self._hists[0] if self._hists else None

    def __call__(self, obs: Observation) -> Tensor:
        loss = obs.loss
        if not isinstance(loss, PairDistanceLoss):
            raise ValueError("The pair-distance state needs a PairDistanceLoss; use state='metric' for other losses.")
        pos, neg = loss.histograms(obs.logits, obs.targets)
        self._hists = [(pos, neg), *self._hists][: self.history]
        b = loss.bins
        hist = torch.zeros(2 * b, self.history)
        for k, (p, q) in enumerate(self._hists):
            hist[:, k] = torch.cat([p, q])
        h = len(self._hists)
        change = hist[:, 0] - hist[:, :h].mean(1)
        other = torch.cat([neg, pos])
        kind = torch.cat([torch.ones(b), -torch.ones(b)])
        centre = ((torch.arange(b, dtype=torch.float32) + 0.5) / b).repeat(2)
        phi, lo, hi = (t.detach().float().cpu() for t in (obs.phi, obs.lower, obs.upper))
        pos_in_bounds = 2 * (phi - lo) / (hi - lo) - 1
        progress = torch.full((2 * b,), obs.progress)
        return torch.cat([hist, torch.stack([change, other, kind, centre, pos_in_bounds, progress], dim=1)], dim=1)

    def state_dict(self) -> StateDict:
        return {"histograms": [(p.clone(), q.clone()) for p, q in self._hists]}

    def load_state_dict(self, state: StateDict) -> None:
        self._hists = [(p.clone(), q.clone()) for p, q in state["histograms"]]


# ---------------------------------------------------------------------------- policy


class ALAPolicy(nn.Module):
    """The controller's policy π_θ: an MLP from one parameter's features to 3 action logits.

    Shared across all loss parameters (class pairs), so its size does not depend on the number
    of classes and a trained policy transfers between tasks (dossier §4: MLP 24→32→32→3 with
    ReLU, reconstructed). Actions: 0 = decrease by β, 1 = keep, 2 = increase by β.

    Args:
        in_features: features per parameter (24 for the faithful pair state).
        hidden: hidden widths.
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (32, 32)) -> None:
        super().__init__()
        self.in_features = int(check_positive("in_features", in_features))
        self.hidden = [int(check_positive("hidden", h)) for h in hidden]
        layers: list[nn.Module] = []
        width = self.in_features
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, len(ACTION_SIGNS)))
        self.net = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        """``(P, in_features)`` → ``(P, 3)`` action logits."""
        return self.net(features)

    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "hidden": list(self.hidden)}


def save_policy(policy: ALAPolicy, path: str | os.PathLike[str]) -> Path:
    """Write ``policy`` (architecture and weights) to ``path``; :func:`load_policy` rebuilds it."""
    from adaloss.checkpoint import save_checkpoint  # deferred: training imports learners

    if not isinstance(policy, ALAPolicy):
        raise TypeError(f"Expected `policy` to be an ALAPolicy, but got {type(policy).__name__}.")
    return save_checkpoint({"kind": POLICY_FORMAT, "policy_config": policy.config(),
                            "policy": policy.state_dict()}, path)


def load_policy(path: str | os.PathLike[str]) -> ALAPolicy:
    """An ALA policy from a file of :func:`save_policy`, a training checkpoint of an ALA run, or
    an ALA run directory (its ``policy.pt``, else ``checkpoints/last.pt``)."""
    from adaloss.checkpoint import CheckpointError, load_checkpoint

    if Path(path).is_dir():
        run = Path(path)
        candidates = [run / POLICY_FILE, run / "checkpoints" / "last.pt"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"Expected the ALA run directory {str(run)!r} to hold {POLICY_FILE} or "
                                    "checkpoints/last.pt, but it holds neither.")
        path = found
    state = load_checkpoint(path)
    if state.get("kind") != POLICY_FORMAT:
        controller = state.get("learner", {}).get("controller") if isinstance(state.get("learner"), dict) else None
        if not isinstance(controller, dict) or "policy_config" not in controller:
            raise CheckpointError(f"{str(path)!r} holds no ALA policy: expected a file from "
                                  "adaloss.learners.ala.save_policy or a checkpoint of a method=ala run.")
        state = controller
    policy = ALAPolicy(**state["policy_config"])
    policy.load_state_dict(state["policy"])
    return policy


# ---------------------------------------------------------------------------- controller


class ALAController:
    """REINFORCE over one-step episodes, with a moving-average reward baseline (dossier §4, §9 #7).

    :meth:`act` samples one action per parameter and remembers the episode; :meth:`give_reward`
    closes it and updates the policy: ``loss = −A · mean_p log π(a_p | s_p) − c_H · entropy`` with
    ``A = r − b`` and ``b ← ρ b + (1 − ρ) r``. With ``replay_capacity > 0`` each update also
    replays up to ``replay_batch − 1`` stored episodes, corrected by the PPO-clipped importance
    ratio ``π_new / π_old`` (never silently off-policy, §9 #7). The policy lives on the CPU; its
    sampling uses its own generator, so the global RNG is untouched.

    Args:
        policy: the shared per-parameter policy.
        beta: action step size β.
        lr: Adam learning rate of the policy.
        baseline_decay: ρ of the reward baseline.
        entropy_coef: c_H (0 = none).
        replay_capacity, replay_batch, clip_ratio: replay memory (0 = on-policy only).
        reward: ``"sign"`` (Eq. 5: sign of the improvement) or ``"difference"`` (the improvement).
        train_policy: ``False`` freezes the policy (transfer); rewards are still recorded.
        greedy: take the most probable action instead of sampling.
        seed: seed of the sampling generator.
    """

    def __init__(
        self,
        policy: ALAPolicy,
        *,
        beta: float = 0.1,
        lr: float = 1e-3,
        baseline_decay: float = 0.9,
        entropy_coef: float = 0.0,
        replay_capacity: int = 0,
        replay_batch: int = 8,
        clip_ratio: float = 0.2,
        reward: Literal["sign", "difference"] = "sign",
        train_policy: bool = True,
        greedy: bool = False,
        seed: int = 0,
    ) -> None:
        self.policy = policy.cpu()
        self.beta = float(check_positive("beta", beta))
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=float(check_positive("policy_lr", lr)))
        self.baseline_decay = check_fraction("baseline_decay", baseline_decay, low_open=False)
        self.entropy_coef = float(check_positive("entropy_coef", entropy_coef, allow_zero=True))
        self.replay_capacity = int(check_positive("replay_capacity", replay_capacity, allow_zero=True))
        self.replay_batch = int(check_positive("replay_batch", replay_batch))
        self.clip_ratio = float(check_positive("clip_ratio", clip_ratio))
        self.reward_kind = check_choice("reward", reward, ("sign", "difference"))
        self.train_policy = bool(train_policy)
        self.greedy = bool(greedy)
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        #: the workers sharing this policy (one process: a no-op); see :meth:`share`
        self.collective: Collective = LocalCollective()
        self.baseline = 0.0
        self.episodes = 0
        self.rewards: list[float] = []
        self.replay: list[dict[str, Any]] = []
        self.pending: dict[str, Any] | None = None
        self.last_act_stats: dict[str, float] = {}

    def share(self, collective: Collective) -> None:
        """Share the policy with the other workers of ``collective`` (ALA workers as ranks, §2):
        rank 0's policy and baseline are broadcast, every rank samples its own actions, and each
        update averages the policy gradient and the reward baseline over the ranks (CPU
        collectives: a gloo group beside NCCL)."""
        self.collective = collective.cpu()
        if self.collective.world_size > 1:
            baseline = torch.tensor([self.baseline], dtype=torch.float64)
            self.collective.broadcast_([*self.policy.parameters(), baseline], src=0)
            self.baseline = float(baseline)
            self.generator.manual_seed(self.seed + 7919 * self.collective.rank)

    def act(self, features: Tensor) -> Tensor:
        """Sample an action per row of ``features`` (``(P, F)``); returns ``ΔΦ`` (``(P,)``, CPU).

        The episode stays pending until :meth:`give_reward`; acting again replaces it.
        """
        features = features.detach().float().cpu()
        with torch.no_grad():
            logits = self.policy(features)
            logp_all = F.log_softmax(logits, dim=-1)
        if self.greedy:
            actions = logits.argmax(-1)
        else:
            actions = torch.multinomial(logp_all.exp(), 1, generator=self.generator).squeeze(1)
        logp = logp_all.gather(1, actions[:, None]).squeeze(1)
        entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
        self.pending = {"features": features, "actions": actions, "logp": logp}
        self.last_act_stats = {
            "policy_entropy": float(entropy),
            "action_decrease": float((actions == 0).float().mean()),
            "action_increase": float((actions == 2).float().mean()),
        }
        signs = torch.tensor(ACTION_SIGNS)
        return self.beta * signs[actions]

    def shape_reward(self, improvement: float) -> float:
        """The reward for an oriented metric improvement (positive = better)."""
        if self.reward_kind == "sign":
            return float((improvement > 0) - (improvement < 0))
        return float(improvement)

    def give_reward(self, improvement: float) -> dict[str, float]:
        """Close the pending episode with the metric ``improvement`` (positive = better); update π."""
        if self.pending is None:
            raise RuntimeError("give_reward() without a pending episode: call act() first.")
        r = self.shape_reward(improvement)
        episode = {**self.pending, "reward": r}
        self.pending = None
        self.episodes += 1
        self.rewards.append(r)
        stats: dict[str, float] = {"reward": r, "advantage": r - self.baseline}
        if self.train_policy:
            stats["policy_loss"] = self._update(episode)
            if self.replay_capacity > 0:
                self.replay = [*self.replay, episode][-self.replay_capacity :]
        # several workers: the baseline follows the workers' mean reward, so it stays identical
        mean_r = torch.tensor([r], dtype=torch.float64)
        self.collective.mean_([mean_r])
        self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * float(mean_r)
        return stats

    def _update(self, newest: dict[str, Any]) -> float:
        replayed: list[dict[str, Any]] = []
        k = min(self.replay_batch - 1, len(self.replay))
        if k > 0:
            idx = torch.randperm(len(self.replay), generator=self.generator)[:k].tolist()
            replayed = [self.replay[i] for i in idx]
        terms, entropies = [], []
        for i, ep in enumerate([newest, *replayed]):
            logp_all = F.log_softmax(self.policy(ep["features"]), dim=-1)
            logp = logp_all.gather(1, ep["actions"][:, None]).squeeze(1)
            adv = ep["reward"] - self.baseline
            if i == 0:  # the fresh episode: plain REINFORCE (ratio ≡ 1)
                terms.append(adv * logp.mean())
            else:
                ratio = torch.exp(logp - ep["logp"])
                clipped = ratio.clamp(1 - self.clip_ratio, 1 + self.clip_ratio)
                terms.append(torch.minimum(ratio * adv, clipped * adv).mean())
            entropies.append(-(logp_all.exp() * logp_all).sum(-1).mean())
        loss = -torch.stack(terms).mean() - self.entropy_coef * torch.stack(entropies).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # workers pool their episodes: the mean gradient, identical on every rank, keeps π identical
        self.collective.mean_([p.grad for p in self.policy.parameters() if p.grad is not None])
        self.optimizer.step()
        return float(loss.detach())

    def state_dict(self) -> StateDict:
        return {
            "policy_config": self.policy.config(),
            "policy": self.policy.state_dict(),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),  # no aliasing of the live Adam moments
            "baseline": self.baseline,
            "episodes": self.episodes,
            "rewards": list(self.rewards),
            "replay": [dict(ep) for ep in self.replay],
            "pending": dict(self.pending) if self.pending is not None else None,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: StateDict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = float(state["baseline"])
        self.episodes = int(state["episodes"])
        self.rewards = [float(r) for r in state["rewards"]]
        self.replay = [dict(ep) for ep in state["replay"]]
        self.pending = dict(state["pending"]) if state["pending"] is not None else None
        self.generator.set_state(state["generator"])


# ---------------------------------------------------------------------------- learner

LossSpec = Union[ParametricLoss, Callable[[int], ParametricLoss], None]


class ALALearner(Learner):
    """Adaptive Loss Alignment as a learner of the shared trainer.

    Each :meth:`step` is an ordinary base step (backward, ``optimizer.step()``) with the current
    parametric loss ``l_Φ``. Every K steps the controller closes the last episode with the
    change of the smoothed validation metric and acts again (see the module docstring). The
    first action is taken before step 0, from the metric of the initial model.

    Validation: ``val_batches`` batches of ``ctx.meta_batches``. With ``val_subset="fixed"``
    they are drawn once and reused, so successive ``M_t`` compare the same examples (they are
    kept in checkpoints); ``"stream"`` draws fresh batches for every evaluation; ``"all"``
    evaluates the whole validation split. A retrieval metric (Recall@k, NMI) scores the
    evaluated examples against each other, so a repeated example would find its own copy:
    ``"fixed"`` must then fit in one pass over the validation split and ``"stream"`` is refused.
    ``"auto"`` (default) is ``"fixed"``, except for a retrieval metric whose ``val_batches``
    exceed one pass — then ``"all"``, the same examples without repeats.
    The metric is evaluated after each of the last ``smoothing_window`` steps of every window
    (0 = all K: Eq. 4 verbatim) in eval mode.

    Every option left ``None`` takes the value of ``preset`` (:data:`ALA_PRESETS`).

    Args:
        task: classification or embedding for the default losses (any task with ``loss``).
        loss: a :class:`~adaloss.losses.ala.ParametricLoss` module, a factory ``num_classes →
            loss`` (the class count is read from the model's output), or ``None`` for
            ``ClassPairLoss(num_classes, form=PRESET_FORMS[preset])`` (classification) or
            ``PairDistanceLoss()`` (embedding).
        preset: ``"default"`` or ``"faithful"``.
        metric: the validation metric rewarded (a registered metric name fitting the task;
            ``None``: :data:`DEFAULT_TARGET_METRIC` of the task — error, mse, recall@1).
        K: base steps per controller step.
        beta: action step size β.
        gamma: discount γ of Eq. 4.
        smoothing_window: evaluate the metric after each of the last L steps of a window (0 = K).
        state: ``"pair_confusion"`` (24-d, faithful, class-pair loss), ``"pair_distance"``
            (:class:`PairDistanceFeatures`, pair-distance loss), ``"metric"`` (generic), or
            ``"auto"`` (the one fitting the loss; a preset's ``pair_confusion`` also becomes
            ``pair_distance`` for the pair-distance loss).
        history: controller steps of history in the state.
        hidden: the policy's hidden widths.
        policy_lr, baseline_decay, entropy_coef, replay_capacity, replay_batch, clip_ratio, reward:
            see :class:`ALAController`.
        val_batches: validation batches per evaluation.
        val_subset: ``"auto"``, ``"fixed"``, ``"stream"`` or ``"all"``.
        total_steps: T of the ``t / T`` feature (``None``: the trainer's step count; 0 outside a trainer).
        train_policy: ``False`` = frozen policy (transfer, dossier §9 #13).
        greedy: act greedily instead of sampling.
        policy_path: start from a policy saved by :func:`save_policy`, an ALA checkpoint, or an
            ALA run directory (a run keeps ``<run_dir>/policy.pt`` up to date after every policy update).
        seed: seed of the policy's initialisation and sampling (``None``: drawn from the global
            torch RNG at construction, so it follows the run's seed).
        grad_ratio_every: every this many steps log ``‖∇_θ l_Φ‖ / ‖∇_θ l_ref‖`` (dossier §9 #2; 0 =
            never); ``l_ref`` is the loss's ``reference_loss`` if it has one (the pair-distance
            loss at Φ = 1), else CE (classification), MSE (regression) or the contrastive loss.
    """

    data_parallel = False  # under torchrun every rank is a worker with its own child model (§2)

    def __init__(
        self,
        *,
        task: Task = "classification",
        loss: LossSpec = None,
        preset: Literal["default", "faithful"] = "default",
        metric: str | None = None,
        K: int | None = None,
        beta: float | None = None,
        gamma: float | None = None,
        smoothing_window: int | None = None,
        state: Literal["auto", "pair_confusion", "pair_distance", "metric"] | None = None,
        history: int | None = None,
        hidden: Sequence[int] | None = None,
        policy_lr: float | None = None,
        baseline_decay: float | None = None,
        entropy_coef: float | None = None,
        replay_capacity: int | None = None,
        replay_batch: int | None = None,
        clip_ratio: float | None = None,
        reward: Literal["sign", "difference"] | None = None,
        val_batches: int | None = None,
        val_subset: Literal["auto", "fixed", "stream", "all"] = "auto",
        total_steps: int | None = None,
        train_policy: bool = True,
        greedy: bool = False,
        policy_path: str | None = None,
        seed: int | None = None,
        grad_ratio_every: int = 10,
    ) -> None:
        self.task: Task = task
        self.preset = check_choice("preset", preset, tuple(ALA_PRESETS))
        given = {
            "K": K, "beta": beta, "gamma": gamma, "smoothing_window": smoothing_window, "state": state,
            "history": history, "hidden": hidden, "policy_lr": policy_lr, "baseline_decay": baseline_decay,
            "entropy_coef": entropy_coef, "replay_capacity": replay_capacity, "replay_batch": replay_batch,
            "clip_ratio": clip_ratio, "reward": reward, "val_batches": val_batches,
        }
        opts = {k: (ALA_PRESETS[self.preset][k] if v is None else v) for k, v in given.items()}
        self.options = opts
        if metric is None:
            metric = DEFAULT_TARGET_METRIC[check_choice("task", task, tuple(DEFAULT_TARGET_METRIC))]
        self.metric = create_metric(metric, task=task)  # unknown or misfit metric: error now, not mid-run
        self.K = check_int("K", opts["K"], minimum=1)
        self.gamma = check_fraction("gamma", opts["gamma"], high_open=False)
        self.smoothing_window = check_int("smoothing_window", opts["smoothing_window"], minimum=0)
        self.val_batches = check_int("val_batches", opts["val_batches"], minimum=1)
        self.val_subset = check_choice("val_subset", val_subset, ("auto", "fixed", "stream", "all"))
        if self.val_subset == "stream" and self.metric.task == "embedding":
            raise ValueError(f"`val_subset='stream'` is refused for the retrieval metric {self.metric.name!r}: a set "
                             "drawn across two passes of the validation split repeats examples, and a repeated example "
                             "finds its own copy; use val_subset='fixed' or 'all'.")
        self.total_steps = None if total_steps is None else check_int("total_steps", total_steps, minimum=1)
        self.grad_ratio_every = check_int("grad_ratio_every", grad_ratio_every, minimum=0)

        # the loss: built now if possible, else when the class count is known
        self._loss_factory: Callable[[int], ParametricLoss] | None = None
        self.loss: ParametricLoss | None = None
        self._num_classes: int | None = None
        if loss is None and task == "embedding":
            loss = PairDistanceLoss()
        if loss is None:
            if task != "classification":
                raise ValueError(f"ALA has default losses for classification (ClassPairLoss) and embedding "
                                 f"(PairDistanceLoss), but the task is {task}; pass a ParametricLoss as `loss`.")
            self._loss_factory = functools.partial(ClassPairLoss, form=PRESET_FORMS[self.preset])
        elif isinstance(loss, nn.Module):
            if not isinstance(loss, ParametricLoss):
                raise TypeError(f"Expected `loss` to expose parameter_vector/set_parameter_vector/bounds/"
                                f"parameter_names (ParametricLoss), but got {type(loss).__name__}.")
            self.loss = loss
        else:
            self._loss_factory = loss
        probe = self.loss if self.loss is not None else self._loss_factory(2)  # type: ignore[misc]

        kind = check_choice("state", opts["state"], ("auto", "pair_confusion", "pair_distance", "metric"))
        if kind == "auto" or (state is None and kind == "pair_confusion" and PairDistanceFeatures.fits(probe)):
            kind = ("pair_confusion" if PairConfusionFeatures.fits(probe)
                    else "pair_distance" if PairDistanceFeatures.fits(probe) else "metric")
        if kind == "pair_confusion" and not PairConfusionFeatures.fits(probe):
            raise ValueError("`state='pair_confusion'` needs a ClassPairLoss with symmetric=True and "
                             f"adapt_diagonal=False, but the loss is {probe!r}; use state='metric'.")
        if kind == "pair_distance" and not PairDistanceFeatures.fits(probe):
            raise ValueError(f"`state='pair_distance'` needs a PairDistanceLoss, but the loss is {probe!r}; use "
                             "state='metric'.")
        self.state_kind = kind
        history_len = check_int("history", opts["history"], minimum=1)
        self.features: PairConfusionFeatures | PairDistanceFeatures | MetricHistoryFeatures = (
            PairConfusionFeatures(history=history_len) if kind == "pair_confusion"
            else PairDistanceFeatures(history=history_len) if kind == "pair_distance"
            else MetricHistoryFeatures(history=history_len)
        )

        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)))
        seed = check_int("seed", seed, minimum=0)
        if policy_path is not None:
            policy = load_policy(policy_path)
            if policy.in_features != self.features.num_features:
                raise ValueError(
                    f"The policy in {policy_path!r} takes {policy.in_features} features per parameter, but the "
                    f"{kind!r} state with history={history_len} gives {self.features.num_features}."
                )
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                policy = ALAPolicy(self.features.num_features, opts["hidden"])
        self.controller = ALAController(
            policy, beta=opts["beta"], lr=opts["policy_lr"], baseline_decay=opts["baseline_decay"],
            entropy_coef=opts["entropy_coef"], replay_capacity=opts["replay_capacity"],
            replay_batch=opts["replay_batch"], clip_ratio=opts["clip_ratio"], reward=opts["reward"],
            train_policy=train_policy, greedy=greedy, seed=seed,
        )
        self.steps = 0
        self.started = False
        self.window_start = 0
        self.window_values: list[float] = []
        self.metrics: list[float] = []
        self.clamp_hits = 0
        self._val: list[Batch] = []
        #: per controller action: the step, Φ's statistics after the action, and (short Φ) Φ itself
        self.history: dict[str, Any] = {"step": [], "phi_stats": {}, "phi_trace": []}

    # ------------------------------------------------------------------ pieces
    @property
    def criterion(self) -> nn.Module:
        if self.loss is None:
            raise RuntimeError("The ALA loss is built when the class count is known (first step or load_state_dict).")
        assert isinstance(self.loss, nn.Module)
        return self.loss

    def _build_loss(self, num_classes: int) -> None:
        if self.loss is None:
            assert self._loss_factory is not None
            self.loss = self._loss_factory(num_classes)
            self._num_classes = num_classes
        if hasattr(self, "context"):
            self.criterion.to(self.context.device)

    def bind(self, context: TrainContext) -> None:
        super().bind(context)
        self.controller.share(context.collective)
        if context.meta_batches is None:
            raise ValueError("ALA rewards a validation metric and needs a validation split; the run has none "
                             "(valid_fraction).")
        per_pass = getattr(context.meta_batches, "batches_per_epoch", None)
        repeats = self.metric.task == "embedding" and per_pass is not None and self.val_batches > per_pass
        if self.val_subset == "auto":
            self.val_subset = "all" if repeats and context.valid_split is not None else "fixed"
        if self.val_subset == "all" and context.valid_split is None:
            raise ValueError("`val_subset='all'` evaluates the whole validation split, but the trainer passed none.")
        if self.val_subset == "fixed" and repeats:
            raise ValueError(
                f"Expected `val_batches` to be at most {per_pass} (the validation batches of one pass over the "
                f"validation split) for the retrieval metric {self.metric.name!r}, but got {self.val_batches}: more "
                "would repeat examples, and a repeated example finds its own copy. Lower it or use val_subset='all'."
            )
        if self.loss is not None:
            self.criterion.to(context.device)

    @torch.no_grad()
    def _evaluate(self, keep_outputs: bool) -> tuple[float, Tensor | None, Tensor | None]:
        """The metric on the validation subset (eval mode), and optionally the outputs."""
        model = self.context.model
        was_training = model.training
        model.eval()
        outputs, targets = [], []
        try:
            self.metric.reset()
            batches: Iterable[Batch]
            if self.val_subset == "fixed":
                batches = self._val
            elif self.val_subset == "all":
                assert self.context.valid_split is not None
                batches = iterate_batches(self.context.valid_split, batch_size=self.context.batch_size or 1000,
                                          device=self.context.device)
            else:
                assert self.context.meta_batches is not None
                batches = [next(self.context.meta_batches) for _ in range(self.val_batches)]
            for x, y in batches:
                z = model(x)
                self.metric.update(z, y)
                if keep_outputs:
                    outputs.append(z)
                    targets.append(y)
            value = float(self.metric.compute())
        finally:
            model.train(was_training)
        if not keep_outputs:
            return value, None, None
        return value, torch.cat(outputs), torch.cat(targets)

    def _reference_loss(self) -> Callable[[Tensor, Tensor], Tensor]:
        """The loss of the gradient-norm ratio's denominator (dossier §9 #2)."""
        reference = getattr(self.loss, "reference_loss", None)
        if callable(reference):
            return reference  # type: ignore[no-any-return]
        return {"classification": F.cross_entropy, "regression": F.mse_loss,
                "embedding": contrastive_loss}[self.task]

    def _progress(self) -> float:
        """``t / T`` of the state; T is ``total_steps`` or else the trainer's step count."""
        total = self.total_steps or (self.context.total_steps if hasattr(self, "context") else None)
        return min(self.steps / total, 1.0) if total else 0.0

    def _act(self, logits: Tensor, targets: Tensor) -> dict[str, float]:
        loss = self.loss
        assert loss is not None
        lower, upper = loss.bounds
        obs = Observation(progress=self._progress(), metrics=list(self.metrics), phi=loss.parameter_vector(),
                          lower=lower, upper=upper, logits=logits, targets=targets, loss=loss)
        delta = self.controller.act(self.features(obs))
        hits = apply_parameter_delta(loss, delta)
        self.clamp_hits += hits
        stats = phi_statistics(loss)
        self.history["step"].append(self.steps)
        for k, v in stats.items():
            self.history["phi_stats"].setdefault(k, []).append(v)
        phi = loss.parameter_vector()
        if phi.numel() <= PHI_TRACE_MAX:
            self.history["phi_trace"].append(phi.cpu().tolist())
        phi_scalars = {f"phi_{k}": v for k, v in stats.items()}
        if isinstance(self.features, PairDistanceFeatures) and self.features.latest is not None:
            pos, neg = self.features.latest  # the validation distances the action was taken on
            self.history.setdefault("distance_hist", {"pos": [], "neg": []})
            self.history["distance_hist"]["pos"].append(pos.tolist())
            self.history["distance_hist"]["neg"].append(neg.tolist())
        return {**self.controller.last_act_stats, "clamp_hits": float(hits), **phi_scalars}

    def _start(self) -> float:
        """Draw the validation subset, evaluate the initial model and take the first action."""
        if self.val_subset == "fixed":
            assert self.context.meta_batches is not None
            self._val = [next(self.context.meta_batches) for _ in range(self.val_batches)]
        value, logits, targets = self._evaluate(True)
        assert logits is not None and targets is not None
        self._build_loss(int(logits.shape[-1]))
        self.metrics = [value]
        self._act(logits, targets)
        self.started = True
        self.window_start = self.steps
        return value

    def _controller_step(self, logits: Tensor, targets: Tensor) -> dict[str, float]:
        m = smoothed_metric(self.window_values, self.gamma)
        prev = self.metrics[-1]
        improvement = m - prev if self.metric.higher_is_better else prev - m
        scalars: dict[str, float] = {"ala_metric": m}
        if self.controller.pending is not None:
            scalars.update(self.controller.give_reward(improvement))
            self._export_policy()
        self.metrics.append(m)
        self.window_values = []
        self.window_start = self.steps
        scalars.update(self._act(logits, targets))
        return scalars

    def _export_policy(self) -> None:
        """Keep ``<run_dir>/policy.pt`` equal to the current policy (what a later run reuses)."""
        run_dir = getattr(self.context, "run_dir", None) if hasattr(self, "context") else None
        if run_dir is not None and self.controller.train_policy:
            save_policy(self.controller.policy, Path(run_dir) / POLICY_FILE)

    # ------------------------------------------------------------------ Learner interface
    def prepare(self) -> dict[str, float]:
        """Before step 0 of a fresh run: validation subset, initial metric, first action."""
        if self.started:
            return {}
        value = self._start()
        return {"ala_metric": value, **{f"phi_{k}": v for k, v in phi_statistics(self.criterion).items()}}

    def step(self, batch: Batch) -> dict[str, Tensor]:
        if not self.started:
            self._start()
        x, y = batch
        model, optimizer = self.context.model, self.context.optimizer
        loss_fn = self.criterion
        optimizer.zero_grad(set_to_none=True)
        z = model(x)
        m = loss_fn(z, y)
        scalars: dict[str, Tensor] = {"loss": m.detach()}
        if self.grad_ratio_every and self.steps % self.grad_ratio_every == 0:
            params = [p for p in model.parameters() if p.requires_grad]
            ce = torch.autograd.grad(self._reference_loss()(z, y), params, retain_graph=True)
            m.backward()
            scalars["grad_norm_ratio"] = _norm(p.grad for p in params if p.grad is not None) / _norm(ce).clamp_min(
                1e-30)
        else:
            m.backward()
        optimizer.step()
        self.steps += 1

        j = self.steps - self.window_start
        window = self.smoothing_window or self.K
        if j > self.K - window:
            value, logits, targets = self._evaluate(keep_outputs=j == self.K)
            self.window_values.append(value)
            if j == self.K:
                assert logits is not None and targets is not None
                for k, v in self._controller_step(logits, targets).items():
                    scalars[k] = torch.tensor(v)
        return scalars

    def snapshot(self) -> dict[str, Any] | None:
        """Φ now (the loss's own snapshot, else name → value) and the controller's history:
        ``metric`` (M of every controller step, the initial value first) at ``controller_steps``;
        ``rewards`` (one per closed episode, i.e. per ``controller_steps[1:]``); ``phi_stats``
        and, for at most :data:`PHI_TRACE_MAX` entries, ``phi_trace`` — Φ after each action;
        with the pair-distance state, ``distance_hist`` — the validation positive/negative-pair
        distance histograms each action was taken on (``pos``, ``neg``: one list per action)."""
        if self.loss is None:
            return None
        snap = getattr(self.loss, "snapshot", None)
        base = snap() if callable(snap) else {
            "parameters": dict(zip(self.loss.parameter_names, self.loss.parameter_vector().cpu().tolist()))
        }
        names = self.loss.parameter_names
        return {
            "kind": "ala", **base, "metric_name": self.metric.name,
            "higher_is_better": self.metric.higher_is_better,
            "controller_steps": list(self.history["step"]), "metric": list(self.metrics),
            "rewards": list(self.controller.rewards),
            "phi_stats": {k: list(v) for k, v in self.history["phi_stats"].items()},
            **({"parameter_names": names, "phi_trace": [list(v) for v in self.history["phi_trace"]]}
               if len(names) <= PHI_TRACE_MAX else {}),
            "clamp_hits": self.clamp_hits,
            **({"distance_hist": copy.deepcopy(self.history["distance_hist"])} if "distance_hist" in self.history
               else {}),
        }

    def save_policy(self, path: str | os.PathLike[str]) -> Path:
        """Write the current policy with :func:`save_policy`."""
        return save_policy(self.controller.policy, path)

    def state_dict(self) -> StateDict:
        loss = self.loss
        return {
            "num_classes": self._num_classes,
            "loss": loss.state_dict() if isinstance(loss, nn.Module) else None,
            "loss_config": loss.config() if isinstance(loss, ClassPairLoss) else None,
            "controller": self.controller.state_dict(),
            "features": self.features.state_dict(),
            "steps": self.steps,
            "started": self.started,
            "window_start": self.window_start,
            "window_values": list(self.window_values),
            "metrics": list(self.metrics),
            "clamp_hits": self.clamp_hits,
            "val": [(x.clone(), y.clone()) for x, y in self._val],
            "history": copy.deepcopy(self.history),
        }

    def load_state_dict(self, state: StateDict) -> None:
        if state["num_classes"] is not None:
            self._build_loss(int(state["num_classes"]))
        if state["loss"] is not None:
            if self.loss is None:
                raise ValueError("The checkpoint holds a loss, but the learner cannot build one to load it into.")
            self.criterion.load_state_dict(state["loss"])
        self.controller.load_state_dict(state["controller"])
        self.features.load_state_dict(state["features"])
        self.steps = int(state["steps"])
        self.started = bool(state["started"])
        self.window_start = int(state["window_start"])
        self.window_values = [float(v) for v in state["window_values"]]
        self.metrics = [float(v) for v in state["metrics"]]
        self.clamp_hits = int(state["clamp_hits"])
        self.history = copy.deepcopy(state["history"])
        device = self.context.device if hasattr(self, "context") else None
        self._val = [(x.to(device), y.to(device)) if device is not None else (x, y) for x, y in state["val"]]


def phi_statistics(loss: ParametricLoss) -> dict[str, float]:
    """Summary statistics of Φ for logs and plots.

    A :class:`~adaloss.losses.ala.ClassPairLoss` gives the diagonal mean and the off-diagonal
    mean, mean absolute value, minimum and maximum of the C×C matrix; any other loss the mean,
    mean absolute value, minimum and maximum of its parameter vector, and a
    :class:`~adaloss.losses.ala.PairDistanceLoss` also the means of its positive and negative
    bin weights.
    """
    if isinstance(loss, ClassPairLoss):
        phi = loss.phi.detach().float().cpu()
        off = phi[~torch.eye(loss.num_classes, dtype=torch.bool)]
        return {"diag_mean": float(phi.diagonal().mean()), "offdiag_mean": float(off.mean()),
                "offdiag_mean_abs": float(off.abs().mean()), "offdiag_min": float(off.min()),
                "offdiag_max": float(off.max())}
    v = loss.parameter_vector().detach().float().cpu()
    stats = {"mean": float(v.mean()), "mean_abs": float(v.abs().mean()), "min": float(v.min()), "max": float(v.max())}
    if isinstance(loss, PairDistanceLoss):
        stats["pos_mean"] = float(v[: loss.bins].mean())
        stats["neg_mean"] = float(v[loss.bins :].mean())
    return stats


def _norm(tensors: Any) -> Tensor:
    return torch.sqrt(sum((t.detach().double() ** 2).sum() for t in tensors))  # type: ignore[arg-type]


def create_ala_learner(*, task: Task, **options: Any) -> ALALearner:
    """``method=ala``: split ``options`` between :class:`ALALearner` and the task's default loss —
    :class:`~adaloss.losses.ala.ClassPairLoss` (:data:`ALA_LOSS_OPTIONS`) for classification,
    :class:`~adaloss.losses.ala.PairDistanceLoss` (:data:`ALA_EMBEDDING_LOSS_OPTIONS`) for
    embedding — naming unknown ones."""
    learner_options = sorted(n for n in inspect.signature(ALALearner).parameters if n not in ("task", "loss"))
    loss_names = ALA_EMBEDDING_LOSS_OPTIONS if task == "embedding" else ALA_LOSS_OPTIONS
    unknown = sorted(set(options) - set(learner_options) - set(loss_names))
    if unknown:
        raise TypeError(f"Unknown option(s) {unknown} for method 'ala' on the {task} task; learner options: "
                        f"{learner_options}; loss options: {sorted(loss_names)}.")
    loss_options = {k: options.pop(k) for k in loss_names if k in options}
    loss: LossSpec = None
    if task == "embedding":
        loss = PairDistanceLoss(**loss_options)
    elif loss_options:
        if "form" not in loss_options:  # the preset's form, as ALALearner's own default loss
            preset = check_choice("preset", options.get("preset", "default"), tuple(PRESET_FORMS))
            loss_options["form"] = PRESET_FORMS[preset]
        if "num_classes" in loss_options:
            loss = ClassPairLoss(**loss_options)
        else:
            loss = functools.partial(ClassPairLoss, **loss_options)
    return ALALearner(task=task, loss=loss, **options)
