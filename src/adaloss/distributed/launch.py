"""Joining the process group ``torchrun`` describes in the environment."""

from __future__ import annotations

import datetime
import logging
import os
from typing import Literal

import torch
import torch.distributed as dist

from adaloss._validation import check_choice, check_positive
from adaloss.distributed.collective import Collective, LocalCollective, ProcessGroupCollective

__all__ = ["Backend", "init_distributed", "launched_by_torchrun"]

logger = logging.getLogger("adaloss")

Backend = Literal["auto", "gloo", "nccl"]


def launched_by_torchrun() -> bool:
    """Whether this process is one of several ranks started by ``torchrun`` (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(
    *, backend: Backend = "auto", timeout_s: float = 300.0, device: torch.device | None = None
) -> Collective:
    """Join the process group ``torchrun`` describes in the environment, or return a local no-op.

    Args:
        backend: ``"gloo"`` (CPU), ``"nccl"`` (GPUs), or ``"auto"``: NCCL for a CUDA ``device``,
            gloo otherwise.
        timeout_s: how long a collective waits for the other ranks before it fails; a rank that
            dies or hangs therefore ends the job with an error, never a silent hang.
        device: the run's device (chooses the backend for ``"auto"``).
    """
    check_choice("backend", backend, ("auto", "gloo", "nccl"))
    check_positive("timeout_s", timeout_s)
    if not launched_by_torchrun():
        return LocalCollective()
    if not dist.is_initialized():
        chosen = backend if backend != "auto" else ("nccl" if device is not None and device.type == "cuda" else "gloo")
        dist.init_process_group(backend=chosen, timeout=datetime.timedelta(seconds=float(timeout_s)))
        logger.info("torch.distributed: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), chosen)
    return ProcessGroupCollective()
