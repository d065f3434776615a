"""One lock for torch's global random generator, shared by every thread that seeds it and draws
from it (workers of one process building their models and policies)."""

from __future__ import annotations

import threading

__all__ = ["GLOBAL_RNG_LOCK"]

#: Held while a thread seeds torch's global generator and draws from it. Without it, threads that
#: seed concurrently interleave their draws, and ``torch.manual_seed`` (which waits for the
#: generator's mutex while holding the GIL) can deadlock against a thread that holds that mutex and
#: waits for the GIL. Re-entrant: building a run takes it and builds an ALA policy inside.
GLOBAL_RNG_LOCK = threading.RLock()
