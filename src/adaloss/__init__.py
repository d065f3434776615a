"""adaloss: meta-learned, adaptive loss functions for PyTorch.

The subpackages hold one concept each: :mod:`adaloss.data`, :mod:`adaloss.models`,
:mod:`adaloss.losses`, :mod:`adaloss.functional`, :mod:`adaloss.learners`,
:mod:`adaloss.metrics` and :mod:`adaloss.training`.
"""

from __future__ import annotations

from adaloss.data import DATASETS, DatasetSplits, TensorSplit, load_dataset
from adaloss.learners import (
    AdaLFL,
    AdaLFLLearner,
    FixedLossLearner,
    Learner,
    TaylorGLO,
    TaylorGLOLearner,
    TrainContext,
    TrainingFitness,
    create_learner,
)
from adaloss.learners.ala import ALA, ALAPolicy
from adaloss.losses import (
    ClassPairLoss,
    ClassWeightLoss,
    FocalLoss,
    FrequencyWeightLoss,
    LossNetwork,
    PairDistanceLoss,
    TaylorLoss,
    create_loss,
)
from adaloss.metrics import Metric, create_metric
from adaloss.models import create_model, list_models
from adaloss.training import TrainConfig, Trainer, compare, load_config, seed_everything, train

__version__ = "0.1.0"

__all__ = [
    "ALA",
    "ALAPolicy",
    "AdaLFL",
    "AdaLFLLearner",
    "ClassPairLoss",
    "ClassWeightLoss",
    "DATASETS",
    "DatasetSplits",
    "FixedLossLearner",
    "FocalLoss",
    "FrequencyWeightLoss",
    "Learner",
    "LossNetwork",
    "Metric",
    "PairDistanceLoss",
    "TaylorGLO",
    "TaylorGLOLearner",
    "TaylorLoss",
    "TensorSplit",
    "TrainConfig",
    "TrainContext",
    "TrainingFitness",
    "Trainer",
    "compare",
    "create_learner",
    "create_loss",
    "create_metric",
    "create_model",
    "list_models",
    "load_config",
    "load_dataset",
    "seed_everything",
    "train",
    "__version__",
]
