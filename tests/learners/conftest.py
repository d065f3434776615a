"""Fixtures shared by the learner tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def search_killed_after(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], contextlib.AbstractContextManager[None]]:
    """``with search_killed_after(n): …``: the CMA-ES search is killed (``KeyboardInterrupt``) right
    after it has written its state for generation ``n``; the block expects that and restores the search."""
    import adaloss.learners.search as search

    @contextlib.contextmanager
    def killed(generation: int) -> Iterator[None]:
        original = search._write_state
        calls = {"n": 0}

        def write_then_die(path: Any, state: Any) -> None:
            original(path, state)
            calls["n"] += 1
            if calls["n"] == generation:
                raise KeyboardInterrupt

        monkeypatch.setattr(search, "_write_state", write_then_die)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(search, "_write_state", original)

    return killed
