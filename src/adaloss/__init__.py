"""adaloss: meta-learned, adaptive loss functions for PyTorch.

The subpackages hold one concept each: :mod:`adaloss.data`, :mod:`adaloss.models`,
:mod:`adaloss.losses`, :mod:`adaloss.functional`, :mod:`adaloss.metrics`, :mod:`adaloss.methods`
(the methods as objects for any training loop), :mod:`adaloss.learners` (their adapters to the
trainer) and :mod:`adaloss.training`.
"""

from __future__ import annotations

from adaloss.data import DATASETS, DatasetSplits, TensorSplit, load_dataset
from adaloss.learners import AdaLFLLearner, FixedLossLearner, Learner, TaylorGLOLearner, TrainContext, create_learner
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
from adaloss.methods import ALA, AdaLFL, ALAPolicy, TaylorGLO, TrainingFitness
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
