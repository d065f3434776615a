"""Save and load learned losses as standalone criteria."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from adaloss.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from adaloss.losses.network import LossNetwork
from adaloss.losses.taylor import TaylorLoss

__all__ = ["load", "save"]

LOSS_FORMAT = "adaloss-loss"
#: the learned-loss classes a file may name, by class name
_LOSS_CLASSES: dict[str, type[LossNetwork] | type[TaylorLoss]] = {"LossNetwork": LossNetwork, "TaylorLoss": TaylorLoss}


def save(loss: LossNetwork | TaylorLoss, path: str | os.PathLike[str]) -> Path:
    """Write ``loss`` (architecture and weights) to ``path``; :func:`load` rebuilds it."""
    if not isinstance(loss, (LossNetwork, TaylorLoss)):
        raise TypeError(f"Expected `loss` to be a LossNetwork or TaylorLoss, but got {type(loss).__name__}.")
    return save_checkpoint(
        {"kind": LOSS_FORMAT, "class": type(loss).__name__, "loss_config": loss.config(), "loss": loss.state_dict()},
        path,
    )


def load(path: str | os.PathLike[str]) -> nn.Module:
    """A learned loss as a criterion ``loss(prediction, target)``, from a file written by
    :func:`save` or from a training checkpoint of a learned-loss run (its loss at that step).

    The file is read with ``weights_only`` loading: no code from it is executed.

    Raises:
        FileNotFoundError: no file at ``path`` (for ``<run>/checkpoints/last.pt``, the message
            says that runs write checkpoints only with ``checkpoint_every`` > 0).
        CheckpointError: the file holds no learned loss, or is not an adaloss file.
    """
    p = Path(path)
    if not p.is_file():
        hint = ""
        if p.parent.name == "checkpoints" or p.parent.parent.name == "checkpoints":
            run = p.parent.parent if p.parent.name == "checkpoints" else p.parent.parent.parent
            ran = f"the run in {str(run)!r} wrote none" if (run / "summary.json").is_file() else "no run wrote it"
            hint = (f" A run writes checkpoints/last.pt only when `checkpoint_every` > 0, and the default is 0 "
                    f"(no checkpoints): {ran}. Train it with checkpoint_every=N, or pass a file written by "
                    "adaloss.losses.save.")
        raise FileNotFoundError(
            f"Expected `path` to be a learned-loss file or a run's checkpoint, but {str(p)!r} does not exist.{hint}")
    state = load_checkpoint(path)
    if "loss_config" not in state:
        learner = state.get("learner")
        if not isinstance(learner, dict) or "loss_config" not in learner:
            raise CheckpointError(
                f"{str(path)!r} holds no learned loss: expected a file from adaloss.losses.save or a checkpoint of "
                "a run whose method learns a loss (e.g. adalfl, taylorglo)."
            )
        state = learner
    name = state.get("class", "LossNetwork")
    if name not in _LOSS_CLASSES:
        raise CheckpointError(
            f"{str(path)!r} holds a loss of unknown class {name!r}; expected one of {sorted(_LOSS_CLASSES)}."
        )
    loss = _LOSS_CLASSES[name](**state["loss_config"])
    loss.load_state_dict(state["loss"])
    return loss.eval()
