"""Learners: one per method, each deciding how a base step comes about."""

from __future__ import annotations

from adaloss.learners.adalfl import AdaLFL, AdaLFLLearner
from adaloss.learners.base import Learner, TrainContext, TrainingDiverged
from adaloss.learners.differentiable import DifferentiableOptimizer
from adaloss.learners.handcrafted import FixedLossLearner
from adaloss.learners.search import SearchResult, cma_search
from adaloss.learners.taylorglo import TaylorGLO, TaylorGLOLearner, TrainingFitness
from adaloss.learners.registry import METHOD_TASKS, METHODS, create_learner, methods_for, register_method

__all__ = [
    "METHODS",
    "METHOD_TASKS",
    "AdaLFL",
    "AdaLFLLearner",
    "DifferentiableOptimizer",
    "FixedLossLearner",
    "Learner",
    "SearchResult",
    "TaylorGLO",
    "TaylorGLOLearner",
    "TrainContext",
    "TrainingFitness",
    "TrainingDiverged",
    "cma_search",
    "create_learner",
    "methods_for",
    "register_method",
]
