"""Where per-step metrics go: JSON lines by default, any object with ``write``/``close`` otherwise."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from adaloss.records import read_jsonl

__all__ = ["LOGGERS", "JsonlSink", "MetricSink", "RunLog", "TensorBoardSink", "tensorboard_available"]

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


class RunLog:
    """Where a run's records go: ``metrics.jsonl`` always, TensorBoard event files when ``loggers``
    names ``"tensorboard"``, and the caller's ``extra`` sinks; the learner's snapshots go to
    ``snapshots.jsonl`` (opened on the first one: most learners write none). Only the ``writer``
    (rank 0) writes; elsewhere every method is a no-op.

    Args:
        run_dir: the run directory (``None``: only the ``extra`` sinks).
        loggers: ``"jsonl"`` and/or ``"tensorboard"`` (:data:`LOGGERS`).
        extra: further :class:`MetricSink` objects.
        writer: whether this rank writes.
    """

    def __init__(self, run_dir: Path | None, *, loggers: Sequence[str], extra: Sequence[MetricSink] = (),
                 writer: bool = True) -> None:
        self.run_dir, self.loggers, self.extra, self.writer = run_dir, list(loggers), list(extra), writer
        self.sinks: list[MetricSink] | None = None
        self._snapshots: JsonlSink | None = None
        self._truncate_after_step: int | None = None

    @property
    def opened(self) -> bool:
        return self.sinks is not None

    def open(self, *, truncate_after_step: int | None) -> None:
        """Open the sinks; resuming (``truncate_after_step``: the checkpoint's step) first drops the
        records past that step, so the files hold what an uninterrupted run writes."""
        self._truncate_after_step = truncate_after_step
        self.sinks = list(self.extra) if self.writer else []
        if self.run_dir is not None and self.writer:
            own: list[MetricSink] = [JsonlSink(self.run_dir / "metrics.jsonl", truncate_after_step=truncate_after_step)]
            if "tensorboard" in self.loggers:
                purge = 0 if truncate_after_step is None else truncate_after_step + 1
                own.append(TensorBoardSink(self.run_dir / "tensorboard", purge_step=purge))
            self.sinks[:0] = own

    def write(self, record: dict[str, Any]) -> None:
        for sink in self.sinks or ():
            sink.write(record)

    def snapshot(self, record: dict[str, Any]) -> None:
        if self.run_dir is None or not self.writer:
            return
        if self._snapshots is None:
            self._snapshots = JsonlSink(self.run_dir / "snapshots.jsonl", truncate_after_step=self._truncate_after_step)
        self._snapshots.write(record)

    def write_figures(self, step: int) -> None:
        """The TensorBoard figures of what was learned, at the end of a run."""
        for sink in self.sinks or ():
            if isinstance(sink, TensorBoardSink) and self.run_dir is not None:
                sink.write_figures(self.run_dir, step)

    def close(self) -> None:
        try:
            for sink in [*(self.sinks or ()), *([self._snapshots] if self._snapshots else [])]:
                sink.close()
        finally:
            self.sinks = None
            self._snapshots = None
