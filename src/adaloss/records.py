"""What a run leaves behind, as read back: its JSON-lines records and its result in a comparison.

Below both the training harness (which writes them) and the plots (which read them).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RunResult", "read_jsonl"]


@dataclass(frozen=True)
class RunResult:
    """One finished run of a comparison."""

    method: str
    seed: int
    final: dict[str, float]
    wall_time_s: float
    run_dir: Path
    reused: bool
    diverged: str | None = None
    """Why the run stopped early (its learned loss turned non-finite); ``final`` is then empty."""
    failed: str | None = None
    """Why the run failed for good (its task raised, or its worker died past its retries)."""
    host: str | None = None
    """The machine it trained on (``None``: not recorded)."""


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
