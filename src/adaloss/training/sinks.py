"""Where per-step metrics go: JSON lines by default, any object with ``write``/``close`` otherwise."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from adaloss.records import read_jsonl

__all__ = ["LOGGERS", "JsonlSink", "MetricSink", "TensorBoardSink", "tensorboard_available"]

#: the metric sinks a run directory can have (config key ``logger``)
LOGGERS: tuple[str, ...] = ("jsonl", "tensorboard")


@runtime_checkable
class MetricSink(Protocol):
    """Receives one flat record of scalars per logging event."""

    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """Appends one JSON object per line to ``path``.

    Args:
        path: the file.
        truncate_after_step: when resuming, first drop records with ``step`` beyond this value,
            so the file holds exactly what an uninterrupted run would have written.
    """

    def __init__(self, path: str | os.PathLike[str], *, truncate_after_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after_step is None:
            self.path.write_text("")
        else:
            kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= truncate_after_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._file = self.path.open("a")

    def write(self, record: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def tensorboard_available() -> bool:
    """Whether the optional ``tensorboard`` package (``pip install 'adaloss[tensorboard]'``) is installed."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardSink:
    """Writes every record's numbers as TensorBoard scalars (tag = the ``metrics.jsonl`` key, at
    the record's ``step``), and, at the end of a run, the figures of what was learned.

    Args:
        log_dir: the event files' folder (the trainer uses ``<run_dir>/tensorboard``).
        purge_step: TensorBoard hides events of earlier files at this step and later — a resumed
            run passes its checkpoint step + 1, so the steps it redoes are shown once; a fresh
            start passes 0.

    Non-finite values are left out, as ``metrics.jsonl`` writes them as ``null``.
    """

    def __init__(self, log_dir: str | os.PathLike[str], *, purge_step: int | None = None) -> None:
        if not tensorboard_available():
            raise ValueError("Expected the `tensorboard` package for logger 'tensorboard', but it is not installed: "
                             "pip install 'adaloss[tensorboard]' (or choose logger=jsonl).")
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)

    def write(self, record: dict[str, Any]) -> None:
        step = int(record.get("step", 0))
        for key, value in record.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def write_figures(self, run_dir: str | os.PathLike[str], step: int) -> list[str]:
        """Add the figures of what the run learned (learned loss, implicit learning rate, ALA's Φ,
        reward and distance state: :func:`adaloss.plotting.run_figures`, without the learning
        curves, which are the scalars themselves) at ``step``; returns their tags."""
        from adaloss.plotting import run_figures

        tags = []
        for name, fig in run_figures(run_dir, learning_curves=False):
            tag = f"figures/{name}"
            self._writer.add_figure(tag, fig, step, close=False)
            tags.append(tag)
        self._writer.flush()
        return tags

    def close(self) -> None:
        self._writer.close()
