from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from adaloss.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from adaloss.training.seed import get_rng_state, seed_everything, set_rng_state


def test_round_trip_and_no_temporary_left(tmp_path: Path) -> None:
    path = save_checkpoint({"step": 3, "w": torch.arange(4.0)}, tmp_path / "c" / "last.pt")
    state = load_checkpoint(path)
    assert state["step"] == 3 and torch.equal(state["w"], torch.arange(4.0))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (Path("/tmp/adaloss-pwned"),))


def test_tampered_checkpoint_is_refused_not_executed(tmp_path: Path) -> None:
    bad = tmp_path / "evil.pt"
    torch.save({"format": "adaloss-checkpoint", "version": 1, "x": _Evil()}, bad)
    Path("/tmp/adaloss-pwned").unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="not a loadable adaloss checkpoint"):
        load_checkpoint(bad)
    assert not Path("/tmp/adaloss-pwned").exists()


def test_foreign_truncated_and_missing(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="expected key 'format' == 'adaloss-checkpoint'"):
        load_checkpoint(foreign)
    good = save_checkpoint({"w": torch.zeros(1000)}, tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError):
        load_checkpoint(truncated)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")


def test_rng_state_survives_a_checkpoint(tmp_path: Path) -> None:
    import random

    import numpy as np

    seed_everything(5)
    save_checkpoint({"rng": get_rng_state()}, tmp_path / "r.pt")
    expected = (random.random(), float(np.random.rand()), torch.rand(3))
    seed_everything(99)
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    got = (random.random(), float(np.random.rand()), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])
