"""Pure tensor functions underneath the stateful modules of adaloss.

Nothing here holds state or owns parameters: these are the functions that tests compare against
independent references and that ``torch.func`` transforms apply to.
"""

from __future__ import annotations

from adaloss.functional.activations import smooth_leaky_relu
from adaloss.functional.clip import clip_by_global_norm, global_norm
from adaloss.functional.losses import contrastive_loss, focal_loss, margin_loss, target_prediction_pairs
from adaloss.functional.meta import capture_rng, loss_meta_gradient, model_jvp
from adaloss.functional.optim import adam, sgd
from adaloss.functional.taylor import taylor_loss, taylor_polynomial

__all__ = [
    "adam",
    "capture_rng",
    "clip_by_global_norm",
    "contrastive_loss",
    "focal_loss",
    "global_norm",
    "loss_meta_gradient",
    "margin_loss",
    "model_jvp",
    "sgd",
    "smooth_leaky_relu",
    "taylor_loss",
    "target_prediction_pairs",
    "taylor_polynomial",
]
