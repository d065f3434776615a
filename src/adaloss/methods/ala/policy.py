"""ALA's controller: the shared per-parameter policy, REINFORCE over one-step episodes, policy files."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaloss._validation import check_choice, check_fraction, check_int, check_int_list, check_positive
from adaloss.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from adaloss.distributed import Collective, LocalCollective
from adaloss.typing import StateDict

__all__ = ["ACTION_SIGNS", "ALAController", "ALAPolicy", "POLICY_FILE", "load_policy", "policy_state", "save_policy"]

POLICY_FORMAT = "adaloss-ala-policy"
#: the policy file an ALA run keeps up to date in its run directory (for reuse)
POLICY_FILE = "policy.pt"
#: action index → multiple of β (decrease, keep, increase)
ACTION_SIGNS = (-1.0, 0.0, 1.0)


class ALAPolicy(nn.Module):
    """The controller's policy π_θ: an MLP from one parameter's features to 3 action logits.

    Shared across all loss parameters (class pairs), so its size does not depend on the number
    of classes and a trained policy transfers between tasks (a public re-implementation's layout: MLP 24→32→32→3 with
    ReLU, reconstructed). Actions: 0 = decrease by β, 1 = keep, 2 = increase by β.

    Args:
        in_features: features per parameter (24 for the faithful pair state).
        hidden: hidden widths.
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (32, 32)) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, minimum=1)
        self.hidden = check_int_list("hidden", hidden)
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


def policy_state(policy: ALAPolicy) -> StateDict:
    """What a policy file holds (architecture and weights); :func:`load_policy` rebuilds the policy."""
    if not isinstance(policy, ALAPolicy):
        raise TypeError(f"Expected `policy` to be an ALAPolicy, but got {type(policy).__name__}.")
    return {"kind": POLICY_FORMAT, "policy_config": policy.config(), "policy": policy.state_dict()}


def save_policy(policy: ALAPolicy, path: str | os.PathLike[str]) -> Path:
    """Write ``policy`` (architecture and weights) to ``path``; :func:`load_policy` rebuilds it."""
    return save_checkpoint(policy_state(policy), path)


def load_policy(path: str | os.PathLike[str]) -> ALAPolicy:
    """An ALA policy from a file of :func:`save_policy`, a training checkpoint of an ALA run, or
    an ALA run directory (its ``policy.pt``, else ``checkpoints/last.pt``)."""
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
                                  "adaloss.methods.ala.save_policy or a checkpoint of a method=ala run.")
        state = controller
    policy = ALAPolicy(**state["policy_config"])
    policy.load_state_dict(state["policy"])
    return policy


# ---------------------------------------------------------------------------- controller


class ALAController:
    """REINFORCE over one-step episodes, with a moving-average reward baseline (the baseline as a public
    re-implementation has it; reconstructed).

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
        replay_capacity: replay memory size (0 = on-policy only).
        replay_batch: replayed episodes per update.
        clip_ratio: the clipped importance ratio of replayed episodes.
        reward: ``"sign"`` (Eq. 5: sign of the improvement), ``"difference"`` (the improvement), or
            ``"normalized"`` (ours: the improvement divided by the running root-mean-square of the
            improvements so far, decay ``baseline_decay`` — the magnitude kept, the scale of the
            metric and of its shrinking changes late in training removed; the first episode,
            which starts at the initial model, gives its sign only and does not set the scale).
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
        reward: Literal["sign", "difference", "normalized"] = "sign",
        train_policy: bool = True,
        greedy: bool = False,
        seed: int = 0,
    ) -> None:
        self.policy = policy.cpu()
        self.beta = float(check_positive("beta", beta))
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=float(check_positive("policy_lr", lr)))
        self.baseline_decay = check_fraction("baseline_decay", baseline_decay, low_open=False)
        self.entropy_coef = float(check_positive("entropy_coef", entropy_coef, allow_zero=True))
        self.replay_capacity = check_int("replay_capacity", replay_capacity, minimum=0)
        self.replay_batch = check_int("replay_batch", replay_batch, minimum=1)
        self.clip_ratio = float(check_positive("clip_ratio", clip_ratio))
        self.reward_kind = check_choice("reward", reward, ("sign", "difference", "normalized"))
        self.train_policy = bool(train_policy)
        self.greedy = bool(greedy)
        self.seed = check_int("seed", seed, minimum=0)
        self.generator = torch.Generator().manual_seed(self.seed)
        #: the workers sharing this policy (one process: a no-op); see :meth:`share`
        self.collective: Collective = LocalCollective()
        self.baseline = 0.0
        #: running mean of the squared improvements (the ``"normalized"`` reward's scale; 0 = none yet)
        self.reward_sq = 0.0
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
        if self.reward_kind == "normalized":
            if self.episodes == 0:
                # the first window trains from the initial model: an improvement tens of times any
                # later one, which would set the scale for the whole run — only its sign counts
                return float((improvement > 0) - (improvement < 0))
            sq = float(improvement) ** 2
            rho = self.baseline_decay
            self.reward_sq = sq if self.reward_sq == 0.0 else rho * self.reward_sq + (1 - rho) * sq
            return float(improvement) / max(self.reward_sq ** 0.5, 1e-12)
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
        self.collective.ordered_mean_([mean_r])
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
        self.collective.ordered_mean_([p.grad for p in self.policy.parameters() if p.grad is not None])
        self.optimizer.step()
        return float(loss.detach())

    def state_dict(self) -> StateDict:
        return {
            "policy_config": self.policy.config(),
            "policy": self.policy.state_dict(),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),  # no aliasing of the live Adam moments
            "baseline": self.baseline,
            "reward_sq": self.reward_sq,
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
        self.reward_sq = float(state.get("reward_sq", 0.0))  # absent in checkpoints before the option
        self.episodes = int(state["episodes"])
        self.rewards = [float(r) for r in state["rewards"]]
        self.replay = [dict(ep) for ep in state["replay"]]
        self.pending = dict(state["pending"]) if state["pending"] is not None else None
        self.generator.set_state(state["generator"])
