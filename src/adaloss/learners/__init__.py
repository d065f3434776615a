"""Learners: the trainer's plug-in contract (:class:`Learner`, :class:`TrainContext`), the method
registry behind ``method=``, and one thin adapter per method that builds the method object of
:mod:`adaloss.methods` from the run."""

from __future__ import annotations

from adaloss.learners.adalfl import AdaLFLLearner
from adaloss.learners.ala import ALALearner, create_ala_learner
from adaloss.learners.base import Learner, TrainContext
from adaloss.learners.handcrafted import FixedLossLearner
from adaloss.learners.registry import (
    METHOD_TASKS,
    METHODS,
    create_learner,
    default_method,
    method_defaults,
    methods_for,
    register_method,
)
from adaloss.learners.taylorglo import TaylorGLOLearner
from adaloss.methods.base import TrainingDiverged

__all__ = [
    "METHODS",
    "METHOD_TASKS",
    "ALALearner",
    "AdaLFLLearner",
    "FixedLossLearner",
    "Learner",
    "TaylorGLOLearner",
    "TrainContext",
    "TrainingDiverged",
    "create_ala_learner",
    "create_learner",
    "default_method",
    "method_defaults",
    "methods_for",
    "register_method",
]
