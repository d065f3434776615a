"""Training with a fixed criterion: ordinary backward and optimiser step."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from adaloss.learners.base import Learner, TrainContext, loss_step
from adaloss.losses.ala import ClassWeightLoss
from adaloss.typing import Batch, StateDict

__all__ = ["FixedLossLearner", "InverseFrequencyLearner"]


class FixedLossLearner(Learner):
    """Minimise a fixed criterion ``loss(model(x), y)`` with the run's optimiser.

    Args:
        loss: any criterion module (a handcrafted loss, or a previously learned one).
    """

    def __init__(self, loss: nn.Module) -> None:
        self.loss = loss

    @property
    def criterion(self) -> nn.Module:
        return self.loss

    def step(self, batch: Batch) -> dict[str, Tensor]:
        ctx = self.context
        return loss_step(ctx.model, ctx.optimizer, self.loss, batch, collective=ctx.collective)

    def state_dict(self) -> StateDict:
        return {"loss": self.loss.state_dict()}

    def load_state_dict(self, state: StateDict) -> None:
        self.loss.load_state_dict(state["loss"])


class InverseFrequencyLearner(FixedLossLearner):
    """Class-weighted cross-entropy with ``w_c ∝ (1 / n_c)^power`` from the training split's
    class counts (:meth:`~adaloss.losses.ClassWeightLoss.inverse_frequency`): the known answer of
    an imbalanced task, the oracle ALA's class weights are judged against (``method=ce_weighted``).

    Args:
        power: 1 = inverse frequency, 0.5 = its square root, 0 = plain cross-entropy.
        bounds: clip range of the centred log-weights.
    """

    def __init__(self, *, power: float = 1.0, bounds: tuple[float, float] = (-3.0, 3.0)) -> None:
        if not 0.0 <= float(power) <= 2.0:
            raise ValueError(f"Expected `power` to be in [0, 2], but got {power!r}.")
        self.power = float(power)
        self.bounds = (float(bounds[0]), float(bounds[1]))
        super().__init__(ClassWeightLoss(2, bounds=self.bounds))  # replaced at bind, from the counts

    def bind(self, context: TrainContext) -> None:
        super().bind(context)
        if context.train_split is None:
            raise ValueError("method=ce_weighted needs the training split (its class counts) in the context.")
        y = context.train_split.y
        probe = next(context.model.parameters(), None)
        counts = torch.bincount(y.cpu(), minlength=int(y.max()) + 1)
        if bool((counts == 0).any()):
            missing = (counts == 0).nonzero().flatten().tolist()
            raise ValueError(f"method=ce_weighted needs every class in the training split, but classes {missing} "
                             "have no rows.")
        self.loss = ClassWeightLoss.inverse_frequency(counts, power=self.power, bounds=self.bounds)
        if probe is not None:
            self.loss.to(probe.device)
