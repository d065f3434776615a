"""Where per-step metrics go: JSON lines by default, any object with ``write``/``close`` otherwise."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = ["JsonlSink", "MetricSink", "read_jsonl"]


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


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All complete records of a JSON-lines file; a half-written last line (a killed run) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
