"""The methods as objects a user holds in any training loop: :class:`AdaLFL` (and ML3, its offline
half), :class:`TaylorGLO` with its CMA-ES search, :class:`ALA`, and the pieces they share. Nothing
here knows the trainer: :mod:`adaloss.learners` adapts these objects to it."""

from __future__ import annotations

from adaloss.methods.adalfl import INIT_STEPS, AdaLFL, task_loss_for
from adaloss.methods.ala import ALA, ALAController, ALAPolicy
from adaloss.methods.base import TrainingDiverged, group_hyperparameters, loss_step
from adaloss.methods.differentiable import DifferentiableOptimizer
from adaloss.methods.search import SearchResult, cma_search
from adaloss.methods.taylorglo import PartialTrainingFitness, TaylorGLO, TrainingFitness

__all__ = [
    "ALA",
    "INIT_STEPS",
    "ALAController",
    "ALAPolicy",
    "AdaLFL",
    "DifferentiableOptimizer",
    "PartialTrainingFitness",
    "SearchResult",
    "TaylorGLO",
    "TrainingDiverged",
    "TrainingFitness",
    "cma_search",
    "group_hyperparameters",
    "loss_step",
    "task_loss_for",
]
