"""One lock for torch's global random generator, shared by every thread that seeds it and draws
from it (workers of one process building their models and policies)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

__all__ = ["GLOBAL_RNG_LOCK", "seeded_global_rng"]

#: Held while a thread seeds torch's global generator and draws from it. Without it, threads that
#: seed concurrently interleave their draws, and ``torch.manual_seed`` (which waits for the
#: generator's mutex while holding the GIL) can deadlock against a thread that holds that mutex and
#: waits for the GIL. Re-entrant: building a run takes it and builds an ALA policy inside.
GLOBAL_RNG_LOCK = threading.RLock()


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Draw from torch's CPU generator seeded with ``seed``, under :data:`GLOBAL_RNG_LOCK`, and
    leave its state as it was (what a policy's initialisation uses, without disturbing the run's
    stream)."""
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
