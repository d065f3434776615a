"""Learning-rate-free and schedule-free optimisers from their authors' packages, behind one
factory each with the packages' recommended settings, and the train/eval switch schedule-free
optimisers need.

Optional dependencies (``pip install -c constraints.txt -e ".[peers]"``): ``schedulefree``
(Defazio et al., "The Road Less Scheduled", NeurIPS 2024), ``prodigyopt`` (Mishchenko & Defazio,
"Prodigy: An Expeditiously Adaptive Parameter-Free Learner", ICML 2024) and ``dadaptation``
(Defazio & Mishchenko, "Learning-Rate-Free Learning by D-Adaptation", ICML 2023).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from torch import Tensor
from torch.optim import Optimizer

from adaloss._optional import import_optional
from adaloss._validation import check_fraction, check_positive

__all__ = [
    "dadapt_sgd",
    "eval_weights",
    "final_weights",
    "prodigy",
    "schedulefree_sgd",
    "train_weights",
]


def schedulefree_sgd(
    params: Iterable[Tensor], *, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
    warmup_steps: int = 0,
) -> Optimizer:
    """``schedulefree.SGDScheduleFree``: SGD with Polyak–Ruppert-style interpolated averaging in
    place of a schedule (Defazio et al. 2024, Alg. 1). Its README's advice: a learning rate 10–50×
    a tuned SGD one, momentum 0.9 and a warm-up; evaluate with :func:`eval_weights`."""
    sf = import_optional("schedulefree", needed_for="optimizer='schedulefree_sgd'", extra="peers")
    check_positive("lr", lr)
    check_fraction("momentum", momentum, low_open=False)
    if warmup_steps < 0:
        raise ValueError(f"Expected `warmup_steps` to be a non-negative integer, but got {warmup_steps!r}.")
    return sf.SGDScheduleFree(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                              warmup_steps=int(warmup_steps))


def prodigy(params: Iterable[Tensor], *, lr: float = 1.0, weight_decay: float = 0.0,
            betas: tuple[float, float] = (0.9, 0.999), d_coef: float = 1.0) -> Optimizer:
    """``prodigyopt.Prodigy``: Adam whose step size D is estimated on line (Mishchenko & Defazio
    2024, Alg. 4); the package recommends ``lr=1.0`` (a multiplier on D), decoupled weight decay."""
    mod = import_optional("prodigyopt", needed_for="optimizer='prodigy'", extra="peers")
    check_positive("lr", lr)
    check_positive("d_coef", d_coef)
    return mod.Prodigy(params, lr=lr, betas=betas, weight_decay=weight_decay, d_coef=d_coef)


def dadapt_sgd(params: Iterable[Tensor], *, lr: float = 1.0, momentum: float = 0.9,
               weight_decay: float = 0.0) -> Optimizer:
    """``dadaptation.DAdaptSGD``: SGD with a D-Adaptation estimate of the distance to the
    solution as its step size (Defazio & Mishchenko 2023, Alg. 1 with momentum); ``lr=1.0`` is the
    package's multiplier on that estimate, momentum 0.9 its README's advice for SGD."""
    mod = import_optional("dadaptation", needed_for="optimizer='dadapt_sgd'", extra="peers")
    check_positive("lr", lr)
    check_fraction("momentum", momentum, low_open=False)
    return mod.DAdaptSGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _has_modes(optimizer: Optimizer) -> bool:
    return "train_mode" in optimizer.param_groups[0] and callable(getattr(optimizer, "train", None))


def train_weights(optimizer: Optimizer) -> None:
    """Put a schedule-free optimiser's model at its training point ``y`` (``optimizer.train()``;
    the package creates the optimiser in eval mode) before the first step; no-op for others."""
    if _has_modes(optimizer) and not optimizer.param_groups[0]["train_mode"]:
        optimizer.train()  # type: ignore[attr-defined]


def final_weights(optimizer: Optimizer) -> None:
    """Leave the model at a schedule-free optimiser's averaged weights ``x`` (the ones it is
    evaluated at) once training ends; no-op for other optimisers."""
    if _has_modes(optimizer) and optimizer.param_groups[0]["train_mode"]:
        optimizer.eval()  # type: ignore[attr-defined]


@contextlib.contextmanager
def eval_weights(optimizer: Optimizer) -> Iterator[None]:
    """Inside the block, the model holds the weights to evaluate: a schedule-free optimiser's
    averaged sequence ``x`` (``optimizer.eval()``; the training point ``y`` is restored after);
    for any other optimiser the weights as they are."""
    training = _has_modes(optimizer) and bool(optimizer.param_groups[0]["train_mode"])
    if training:
        optimizer.eval()  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if training:
            optimizer.train()  # type: ignore[attr-defined]
