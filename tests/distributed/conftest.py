"""Fixtures that start ``adaloss train`` in child processes: on several ranks under torchrun, or alone."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

Run = Callable[..., "subprocess.CompletedProcess[str]"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                              "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture
def launch_env() -> dict[str, str]:
    """This process's environment without torchrun's rank variables, one OpenMP thread."""
    return _env()


@pytest.fixture
def torchrun() -> Run:
    """``torchrun(args, nproc=2)``: ``adaloss train *args`` on ``nproc`` CPU ranks; the finished process."""

    def run(args: list[str], *, nproc: int = 2, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "adaloss", "train", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())

    return run


@pytest.fixture
def train_in_subprocess() -> Run:
    """``train_in_subprocess(args)``: ``adaloss train *args`` in one child process; the finished process."""

    def run(args: list[str], *, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "adaloss", "train", *args], capture_output=True, text=True,
                              timeout=timeout, env=_env())

    return run
