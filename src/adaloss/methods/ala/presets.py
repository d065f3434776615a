"""ALA's presets and option tables: the values each preset sets, and the losses and metrics by task."""

from __future__ import annotations

from typing import Any

from adaloss._validation import check_choice

__all__ = ["ALA_EMBEDDING_LOSS_OPTIONS", "ALA_LOSS_OPTIONS", "ALA_PRESETS", "DEFAULT_TARGET_METRIC", "FAMILY_DEFAULTS",
           "PRESET_FAMILIES", "PRESET_FORMS", "check_preset"]

#: Option values per preset; every one is also a keyword option of :class:`ALALearner`.
#: ``faithful`` = the values the public re-implementation attributes to the paper (reconstructed),
#: with Eq. 4 truncated to the last 40 steps of each window.
#: ``default`` = the same but on-policy REINFORCE without replay (§9 #7) and a state chosen
#: to fit the loss (the 24-d pair layout for the symmetric class-pair loss, else the generic one).
ALA_PRESETS: dict[str, dict[str, Any]] = {
    "faithful": {
        "every": 200, "beta": 0.1, "gamma": 0.9, "smoothing_window": 40, "features": "pair_confusion",
        "history": 10, "hidden": [32, 32], "policy_lr": 1e-3, "baseline_decay": 0.9, "entropy_coef": 0.0,
        "replay_capacity": 1000, "replay_batch": 8, "clip_ratio": 0.2, "reward": "sign", "val_batches": 16,
    },
    "default": {
        "every": 200, "beta": 0.1, "gamma": 0.9, "smoothing_window": 40, "features": "auto",
        "history": 10, "hidden": [32, 32], "policy_lr": 1e-3, "baseline_decay": 0.9, "entropy_coef": 0.0,
        "replay_capacity": 0, "replay_batch": 8, "clip_ratio": 0.2, "reward": "sign", "val_batches": 16,
    },
}

#: Settings the ``default`` preset takes for a loss family, over :data:`ALA_PRESETS`, chosen from
#: measurements (``experiments/results/ala_signal.md``, ``ala_bandit.md``, ``ala_planted.md``):
#: the tied class-frequency family's one parameter τ ∈ [0, 1] needs steps a good action is seen
#: through the reward noise with (SNR of one step ≈ 1 instead of 0.16 for β = 0.1 on the class
#: weights), and more episodes: every = K = 50 (60 episodes in a 3000-step run) rather than K = 100, which
#: on the planted task beat CE only marginally (``ala_planted.md`` and its replicate on other seeds,
#: ``ala_planted-replicate.md``, row "K=100").
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "FrequencyWeightLoss": {"every": 50, "smoothing_window": 10, "beta": 0.3, "policy_lr": 1e-2,
                            "reward": "normalized"},
}

#: The class-pair loss form each preset builds when no loss is given. ``faithful``: the paper's
#: sigmoid form as reconstructed (Huang et al., ICML 2019, Sec. 4). ``default``: the log-probability form, exactly
#: cross-entropy at Φ = I. Measured (Fashion-MNIST, LeNet-5, SGD 0.01 momentum 0.9, Φ = I held
#: fixed, 2000 steps): CE 12.9 % test error, sigmoid form 56.0 % (loss_scale 4: 58.3 % at step
#: 1000) — the sigmoid's gradient ``p_y / (1 + p_y)²`` vanishes for confidently wrong examples, so
#: whole classes are given up; no learning-rate scale repairs that (docs/decisions.md, "ALA loss form").
PRESET_FORMS: dict[str, str] = {"faithful": "sigmoid", "default": "log_prob"}

#: The classification loss family ``method=ala`` adapts when none is named, per preset.
#: ``default``: the tied class-frequency family, the one whose action a reward can see within one
#: run (measured SNR of one step 1.22 against 0.18 for the best move of the per-class weights and
#: far less for one class pair; ``experiments/results/ala_signal.md``). On balanced data its
#: weights stay ≈ 1 whatever τ is, so it trains as cross-entropy there. ``faithful``: the paper's
#: C×C class-pair matrix.
PRESET_FAMILIES: dict[str, str] = {"faithful": "class_pair", "default": "class_frequency"}

#: options of ``method=ala`` that go to :class:`~adaloss.losses.ala.ClassPairLoss`
ALA_LOSS_OPTIONS = ("form", "bounds", "diagonal_bounds", "symmetric", "adapt_diagonal", "loss_scale", "num_classes")
#: options of ``method=ala`` on the embedding task that go to :class:`~adaloss.losses.ala.PairDistanceLoss`
ALA_EMBEDDING_LOSS_OPTIONS = ("bins", "base", "margin", "boundary", "max_distance", "normalize", "bounds")
#: the metric rewarded when none is named, per task
DEFAULT_TARGET_METRIC: dict[str, str] = {"classification": "error", "regression": "mse", "embedding": "recall@1"}


def check_preset(preset: str) -> str:
    """``preset`` if it names one of :data:`ALA_PRESETS`; else a ``ValueError`` naming it."""
    return check_choice("preset", preset, tuple(ALA_PRESETS))
