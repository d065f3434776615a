"""Loss modules: every one is a plain ``nn.Module`` criterion ``loss(prediction, target)``."""

from __future__ import annotations

from adaloss.losses.ala import ClassPairLoss, ClassWeightLoss, FrequencyWeightLoss, PairDistanceLoss, ParametricLoss
from adaloss.losses.handcrafted import (
    HANDCRAFTED_LOSSES,
    ContrastiveLoss,
    FocalLoss,
    GeneralizedCrossEntropy,
    MarginLoss,
    SymmetricCrossEntropy,
    create_loss,
)
from adaloss.losses.io import load, save
from adaloss.losses.network import LossNetwork, SmoothLeakyReLU
from adaloss.losses.taylor import TaylorLoss

__all__ = ["HANDCRAFTED_LOSSES", "ClassPairLoss", "ClassWeightLoss", "ContrastiveLoss", "FrequencyWeightLoss",
           "FocalLoss", "GeneralizedCrossEntropy", "LossNetwork", "MarginLoss", "PairDistanceLoss", "ParametricLoss",
           "SmoothLeakyReLU", "SymmetricCrossEntropy", "TaylorLoss", "create_loss", "load", "save"]
