"""ALA: a policy adapts the loss parameters Φ every K base steps from validation-metric rewards.

Huang et al., "Addressing the Loss-Metric Mismatch with Adaptive Loss Alignment" (ICML 2019).
The paper body was not available; the loop follows the figure-2 caption and patent abstract
and the numbers and layouts a public re-implementation attributes to the paper (marked *reconstructed*),
with choices of our own where the paper is silent.

The loop (one-step episodes, T = 1, so a contextual bandit):

1. every K base steps the controller observes a state ``s_t`` (:class:`PairConfusionFeatures`,
   :class:`PairDistanceFeatures`, :class:`ClassErrorFeatures` or :class:`MetricHistoryFeatures`), samples one of
   ``{−β, 0, +β}`` per loss parameter from the shared per-parameter :class:`ALAPolicy`, and
   sets ``Φ ← clip(Φ + ΔΦ, bounds)``;
2. the base model trains K steps under ``l_Φ``;
3. the smoothed validation metric ``M_t`` (Eq. 4, :func:`smoothed_metric`) is compared with
   the previous one; the reward (sign of the improvement by default, Eq. 5) updates the policy
   by REINFORCE with a moving-average baseline (:class:`ALAController`); then step 1 again.

Modules, one seam each: :mod:`.features` (the state), :mod:`.policy` (policy, controller, policy
files), :mod:`.presets` (option tables), :mod:`.scheduler` (:class:`ALA`, the method as a loss
scheduler for any training loop) and :mod:`.bandit` (a synthetic task with a known answer, at a
given reward noise, for the controller). The trainer's adapter (``method=ala``) is :class:`adaloss.learners.ALALearner`.
"""

from __future__ import annotations

from adaloss.methods.ala.features import (
    ClassErrorFeatures,
    Features,
    MetricHistoryFeatures,
    Observation,
    PairConfusionFeatures,
    PairDistanceFeatures,
    soft_confusion,
)
from adaloss.methods.ala.policy import (
    ACTION_SIGNS,
    POLICY_FILE,
    ALAController,
    ALAPolicy,
    load_policy,
    policy_state,
    save_policy,
)
from adaloss.methods.ala.presets import (
    ALA_EMBEDDING_LOSS_OPTIONS,
    ALA_LOSS_OPTIONS,
    ALA_PRESETS,
    DEFAULT_TARGET_METRIC,
    FAMILY_DEFAULTS,
    PRESET_FAMILIES,
    PRESET_FORMS,
)
from adaloss.methods.ala.scheduler import ALA, PHI_TRACE_MAX, phi_statistics, smoothed_metric

__all__ = [
    "ACTION_SIGNS",
    "ALA",
    "ALA_EMBEDDING_LOSS_OPTIONS",
    "ALA_LOSS_OPTIONS",
    "ALA_PRESETS",
    "ALAController",
    "ALAPolicy",
    "ClassErrorFeatures",
    "DEFAULT_TARGET_METRIC",
    "FAMILY_DEFAULTS",
    "Features",
    "MetricHistoryFeatures",
    "Observation",
    "PHI_TRACE_MAX",
    "POLICY_FILE",
    "PRESET_FAMILIES",
    "PRESET_FORMS",
    "PairConfusionFeatures",
    "PairDistanceFeatures",
    "load_policy",
    "phi_statistics",
    "policy_state",
    "save_policy",
    "smoothed_metric",
    "soft_confusion",
]
