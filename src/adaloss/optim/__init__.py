"""Optimisers the peers of the learned losses train with: SGD with hypergradient descent on its
learning rate (written here), and the learning-rate-free and schedule-free optimisers of their
authors' packages (an optional extra)."""

from adaloss.optim.external import dadapt_sgd, eval_weights, final_weights, prodigy, schedulefree_sgd, train_weights
from adaloss.optim.hypergradient import HypergradientSGD

__all__ = [
    "HypergradientSGD",
    "dadapt_sgd",
    "eval_weights",
    "final_weights",
    "prodigy",
    "schedulefree_sgd",
    "train_weights",
]
