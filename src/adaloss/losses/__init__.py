"""Loss modules: every one is a plain ``nn.Module`` criterion ``loss(prediction, target)``."""

from __future__ import annotations

from adaloss.losses.ala import ClassPairLoss, ClassWeightLoss, FrequencyWeightLoss, PairDistanceLoss, ParametricLoss
from adaloss.losses.handcrafted import (
    HANDCRAFTED_LOSSES,
    OPTIONAL_LOSSES,
    ContrastiveLoss,
    FocalLoss,
    GeneralizedCrossEntropy,
    MarginLoss,
    MultiSimilarityLoss,
    SymmetricCrossEntropy,
    create_loss,
)
from adaloss.losses.io import load, save
from adaloss.losses.network import LossNetwork, SmoothLeakyReLU
from adaloss.losses.taylor import TaylorLoss

__all__ = ["HANDCRAFTED_LOSSES", "OPTIONAL_LOSSES", "ClassPairLoss", "ClassWeightLoss", "ContrastiveLoss",
           "FrequencyWeightLoss", "FocalLoss", "GeneralizedCrossEntropy", "LossNetwork", "MarginLoss",
           "MultiSimilarityLoss", "PairDistanceLoss", "ParametricLoss", "SmoothLeakyReLU",
           "SymmetricCrossEntropy", "TaylorLoss", "create_loss", "load", "save"]
