"""Stopping a run on SIGINT / SIGTERM at a safe point: after the current step, with a checkpoint.

The command line installs :func:`graceful_stop` around a run. The first signal only sets a flag;
the trainer reads it after every step (and when a learner checkpoints during its offline phase),
writes a final checkpoint when the run has a checkpoint interval, and raises :class:`Interrupted`.
A second signal stops at once (``KeyboardInterrupt``). Without :func:`graceful_stop` (the Python
API) nothing changes: Ctrl-C raises ``KeyboardInterrupt`` where it lands.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

__all__ = ["Interrupted", "graceful_stop", "stop_requested"]

_requested: int | None = None


class Interrupted(KeyboardInterrupt):
    """A run stopped at a safe point on a signal.

    Attributes:
        signum: the signal (``signal.SIGINT`` or ``signal.SIGTERM``).
        step: the last completed step.
        checkpoint: the checkpoint to resume from (``None``: the run has none).
        checkpoint_step: that checkpoint's step.
    """

    def __init__(self, signum: int, *, step: int, checkpoint: Path | None, checkpoint_step: int | None) -> None:
        name = signal.Signals(signum).name
        where = (f"the last checkpoint is {checkpoint} (step {checkpoint_step})" if checkpoint is not None
                 and checkpoint_step is not None else "no checkpoint was written (set checkpoint_every to keep one)")
        super().__init__(f"stopped by {name} after step {step}; {where}")
        self.signum, self.step, self.checkpoint, self.checkpoint_step = signum, step, checkpoint, checkpoint_step


def stop_requested() -> int | None:
    """The signal that asked the run to stop, or ``None``."""
    return _requested


def _handler(signum: int, frame: FrameType | None) -> None:
    global _requested
    if _requested is not None:  # the second signal: stop now
        raise KeyboardInterrupt
    _requested = signum
    print(f"\nadaloss: {signal.Signals(signum).name} received: stopping after the current step "
          "(send it again to stop at once)", file=sys.stderr, flush=True)


@contextmanager
def graceful_stop() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM ask the run to stop at its next safe point.

    Only in the main thread (signal handlers can be installed nowhere else); elsewhere a no-op.
    """
    global _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    _requested = None
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _requested = None
