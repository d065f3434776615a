"""Reliability (issue 17): run directories with one writer, divergence caught at the source, named
errors with exit status 2 for bad input, and kill -9 at random moments followed by ``--resume``.

Where nothing should change, the run directory is hashed file by file before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from adaloss.checkpoint import load_checkpoint
from adaloss.cli import EXIT_BUSY, main
from adaloss.training import TrainConfig, read_jsonl, train
from adaloss.training.rundir import RunDirectoryError, RunDirLock
from adaloss.training.trainer import TrainingDiverged

TINY = ["dataset=digits", "steps=20", "model_args.hidden=[16]", "threads=1", "progress=off", "batch_size=32"]


def _tree(path: Path) -> dict[str, str]:
    """Every file under ``path`` (hidden ones too) with the SHA-256 of its bytes."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _train(run: Path, *args: str) -> int:
    return main(["train", *TINY, f"run_dir={run}", *args])


@pytest.fixture
def finished(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A finished run with checkpoints (steps 10 and 20: last.pt, step*.pt)."""
    run = tmp_path / "run"
    assert _train(run, "checkpoint_every=10", "keep_checkpoints=true") == 0
    capsys.readouterr()
    return run


# ---------------------------------------------------------------------------- run directories


@pytest.mark.parametrize("flags", [[], ["--resume"], ["--overwrite"]])
def test_a_second_writer_is_refused_and_touches_nothing(finished: Path, capsys: pytest.CaptureFixture[str],
                                                        flags: list[str]) -> None:
    before = _tree(finished)
    with RunDirLock(finished):  # another process training into the directory
        assert _train(finished, "checkpoint_every=10", "keep_checkpoints=true", *flags) == EXIT_BUSY == 3
    err = capsys.readouterr().err
    assert f"Run directory '{finished}' is in use by another adaloss process" in err
    assert _tree(finished) == before


def test_a_second_writer_on_a_new_directory_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "new"
    with RunDirLock(run):
        assert _train(run) == 3
    assert "in use by another adaloss process" in capsys.readouterr().err
    assert _tree(run) == {".lock": hashlib.sha256(b"").hexdigest()}  # only the other writer's lock file


def test_workers_stop_together_when_rank_0_cannot_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """ALA workers (threads here, ranks under torchrun) share one run directory: rank 0 alone
    takes the lock, and every worker stops with rank 0's error when it cannot."""
    run = tmp_path / "run"
    args = [*TINY, "method=ala", "workers=2", "checkpoint_every=10", "method_args.K=5", f"run_dir={run}"]
    assert main(["train", *args]) == 0
    assert (run / "checkpoints" / "rank1" / "last.pt").exists()
    capsys.readouterr()
    before = _tree(run)
    monkeypatch.setattr(RunDirLock, "probe", lambda self: None)  # reach the lock inside the workers' fit
    with RunDirLock(run):
        assert main(["train", *args, "--overwrite"]) == 3
    assert f"Run directory '{run}' is in use by another adaloss process" in capsys.readouterr().err
    assert _tree(run) == before
    assert main(["train", *args, "--resume"]) == 0


def test_a_run_dir_that_is_a_file_is_a_named_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "file"
    path.write_text("mine")
    assert _train(path) == 2
    assert f"Expected `run_dir` to be a directory, but '{path}' is a file." in capsys.readouterr().err
    assert path.read_text() == "mine"


def test_starting_afresh_on_a_run_needs_overwrite_or_resume(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _tree(finished)
    assert _train(finished) == 2
    err = capsys.readouterr().err
    assert f"Run directory '{finished}' already holds a run (metrics.jsonl, summary.json, checkpoints/)" in err
    assert "--resume" in err and "--overwrite" in err
    assert _tree(finished) == before
    assert _train(finished, "--resume", "--overwrite") == 2
    assert "Expected at most one of `resume`" in capsys.readouterr().err
    assert _tree(finished) == before
    with pytest.raises(RunDirectoryError, match="already holds a run"):
        train(TrainConfig(steps=20, model_args={"hidden": [16]}, progress="off", run_dir=str(finished)))
    assert _tree(finished) == before
    # --overwrite: the old run's files go (its checkpoints too), a new run is written
    assert _train(finished, "steps=12", "--overwrite") == 0
    assert not (finished / "checkpoints").exists()
    assert json.loads((finished / "summary.json").read_text())["step"] == 12
    assert [r["step"] for r in read_jsonl(finished / "metrics.jsonl")] == [12]


def test_a_refused_resume_changes_no_file(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _tree(finished)
    assert _train(finished, "checkpoint_every=10", "lr=0.5", "--resume") == 2
    assert "Cannot resume: the checkpoint was written with a different configuration (lr: 0.01 -> 0.5)" in \
        capsys.readouterr().err
    assert _tree(finished) == before  # config.yaml included
    # without a checkpoint, the finished run's summary records the configuration
    (finished / "checkpoints").rename(finished.parent / "moved")
    before = _tree(finished)
    assert _train(finished, "lr=0.5", "--resume") == 2
    assert "records a run with a different configuration (lr: 0.01 -> 0.5)" in capsys.readouterr().err
    assert _tree(finished) == before


def test_stale_temp_files_are_cleaned_at_the_next_start(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = [finished / "checkpoints" / ".last.pt.x1y2z3.tmp", finished / ".summary.json.abc.tmp",
             finished / "checkpoints" / "rank1" / ".last.pt.q.tmp"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a checkpoint")
    before = _tree(finished)
    assert _train(finished, "checkpoint_every=10", "keep_checkpoints=true") == 2  # refused: nothing removed
    assert _tree(finished) == before
    assert _train(finished, "checkpoint_every=10", "keep_checkpoints=true", "--resume") == 0
    assert not any(p.exists() for p in stale)
    assert not list(finished.rglob("*.tmp"))


def test_compare_resumes_its_runs_and_replaces_runs_of_another_configuration(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["compare", "--methods", "ce", "--seeds", "0", "--out", str(tmp_path), *TINY[1:]]
    assert main(args) == 0
    assert main(args) == 0 and "reused" in capsys.readouterr().err
    assert main([*args, "steps=12"]) == 0  # the folder's run of 20 steps is replaced
    assert json.loads((tmp_path / "ce" / "seed0" / "summary.json").read_text())["step"] == 12
    # a killed run (checkpoint, no summary) of this configuration is resumed
    assert main([*args, "steps=12", "checkpoint_every=4", "--out", str(tmp_path / "k")]) == 0
    run = tmp_path / "k" / "ce" / "seed0"
    (run / "summary.json").unlink()
    assert main([*args, "steps=12", "checkpoint_every=4", "--out", str(tmp_path / "k")]) == 0
    assert json.loads((run / "summary.json").read_text())["step"] == 12


# ---------------------------------------------------------------------------- divergence


def test_divergence_without_logging_exits_nonzero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert _train(run, "lr=1e30", "log_every=0") == 1
    err = capsys.readouterr().err
    assert "adaloss: training stopped: Training loss became nan by step 20 (first non-finite at step 2)" in err
    assert "no checkpoint was written" in err
    assert not (run / "summary.json").exists()


def test_the_kept_checkpoint_is_the_last_finite_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert _train(run, "lr=1e30", "log_every=0", "checkpoint_every=1") == 1
    assert "first non-finite at step 2); the last checkpoint" in capsys.readouterr().err
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    before = _tree(run)
    assert _train(run, "lr=1e30", "log_every=0", "checkpoint_every=1", "--resume") == 1  # the same step again
    after = _tree(run)
    assert after["checkpoints/last.pt"] == before["checkpoints/last.pt"]


def test_no_checkpoint_holds_non_finite_parameters(tmp_path: Path) -> None:
    """The loss of a step can be finite while its update is not: the parameters are checked too."""
    from adaloss.training import build_trainer

    cfg = TrainConfig(steps=5, batch_size=32, checkpoint_every=1, log_every=0, model_args={"hidden": [16]},
                      progress="off", run_dir=str(tmp_path))
    trainer = build_trainer(cfg)
    trainer.fit()
    first = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    with torch.no_grad():
        trainer.model.layers[0].weight[0, 0] = float("inf")  # type: ignore[index]
    with pytest.raises(TrainingDiverged, match=r"Model parameters became non-finite by step 5 \(layers\.0\.weight\)"):
        trainer.save_checkpoint()
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == first


class _InfInEval(nn.Module):
    """Finite while training, non-finite outputs in eval mode (a model that overflows at evaluation)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x.flatten(1))
        return z if self.training else z * float("inf")


def test_non_finite_outputs_at_evaluation_stop_the_run(tmp_path: Path) -> None:
    import adaloss
    from adaloss.data import BatchLoader
    from adaloss.training import Trainer

    data = adaloss.load_dataset("digits")
    model = _InfInEval()
    trainer = Trainer(model, adaloss.FixedLossLearner(nn.CrossEntropyLoss()),
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.01), task="classification", steps=4,
                      train_loader=BatchLoader(data.train, batch_size=32, seed=0), eval_splits={"valid": data.valid},
                      log_every=0, run_dir=tmp_path)
    with pytest.raises(TrainingDiverged, match="The model's outputs on the valid split are non-finite at step 4"):
        trainer.fit()
    assert not (tmp_path / "summary.json").exists()


# ---------------------------------------------------------------------------- named errors


def _yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("case", ["malformed", "python_tag", "duplicate", "duplicate_nested"])
def test_bad_config_files_are_named_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    text, expected = {
        "malformed": ("steps: 20\nlr: [0.1, 0.2\nmodel: mlp\n",
                      "line 3, column 6: not valid YAML: expected ',' or ']', but got ':' (while parsing a flow "
                      "sequence at line 2, column 5)"),
        "python_tag": ("steps: 20\nmethod: !!python/object/apply:os.system ['echo hi']\n",
                       "line 2, column 9: the YAML tag '!!python/object/apply:os.system' is not allowed"),
        "duplicate": ("steps: 20\nlr: 0.1\nsteps: 30\n", "line 3, column 1: the key 'steps' is given twice"),
        "duplicate_nested": ("model_args:\n  hidden: [16]\n  hidden: [32]\n",
                             "line 3, column 3: the key 'hidden' is given twice"),
    }[case]
    path = _yaml(tmp_path, text)
    run = tmp_path / "run"
    assert main(["train", "-c", path, f"run_dir={run}"]) == 2
    assert f"adaloss: error: Config file '{path}', {expected}" in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.parametrize("override, expected", [
    ("device=banana", "Expected `device` to be a torch device of type ['cpu', 'cuda', 'mps', 'xpu'] (e.g. 'cpu', "
                      "'cuda', 'cuda:1'), but got 'banana'."),
    ("threads=0", "Expected `threads` to be a positive integer (torch's intra-op threads) or null (torch's default), "
                  "but got 0."),
    ("threads=-1", "Expected `threads` to be a positive integer"),
    ("model_args.hidden=[100000000000]", "Expected `model` and `model_args` to describe a model that fits in memory "
                                         "on cpu, but model='mlp' with model_args={'hidden': [100000000000]} ran out "
                                         "of memory while it was built"),
    ("logger=[]", "Expected `logger` to name one or more of ['jsonl', 'tensorboard'], but got []."),
    ("method_args={a: 1, a: 2}", "Cannot parse the value of 'method_args' ('{a: 1, a: 2}'): the key 'a' is given "
                                 "twice"),
])
def test_bad_values_are_named_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str,
                                     expected: str) -> None:
    run = tmp_path / "run"
    assert _train(run, override) == 2
    assert f"adaloss: error: {expected}" in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA can use device=cuda")
def test_cuda_on_a_machine_without_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert _train(run, "device=cuda") == 2
    err = capsys.readouterr().err
    assert "adaloss: error: Expected `device` to be a device" in err and "device='cuda'" in err and "device=cpu" in err
    assert not run.exists()


def test_learned_loss_from_a_run_without_checkpoints_says_why(finished: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "plain"
    assert _train(plain, "method=adalfl", "method_args.init_steps=1") == 0
    run = tmp_path / "ll"
    assert _train(run, "method=learned_loss", f"method_args.path={plain}/checkpoints/last.pt") == 2
    err = capsys.readouterr().err
    assert "does not exist. A run writes checkpoints/last.pt only when `checkpoint_every` > 0, and the default is 0" \
        in err
    assert not run.exists()


# ---------------------------------------------------------------------------- kill -9 and resume

KILL_RUN = ["dataset=digits", "steps=1000", "model_args.hidden=[16]", "threads=1", "progress=off", "batch_size=32",
            "checkpoint_every=1", "log_every=10", "eval_every=250", "momentum=0.9"]


def _checkpoint_mtime(run: Path) -> int:
    try:
        return (run / "checkpoints" / "last.pt").stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def _logged_step(run: Path) -> int:
    records = read_jsonl(run / "metrics.jsonl")
    return int(records[-1]["step"]) if records else 0


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_is_bit_identical(tmp_path: Path,
                                                              compare_runs: Callable[[Path, Path], None]) -> None:
    """SIGKILL ``adaloss train`` at random moments (random steps, then a random fraction of a step;
    a checkpoint is written every step, so kills land in checkpoint writes too), ``--resume`` each
    time: the final metrics, every log record and the last checkpoint equal the uninterrupted run's
    bit for bit, and no temp file is left. While the first process trains, a second writer on its
    directory is refused (exit 3)."""
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", *KILL_RUN, f"run_dir={full}"]) == 0
    command = [sys.executable, "-m", "adaloss", "train", *KILL_RUN, f"run_dir={part}", "--resume"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = random.Random(17)
    targets = sorted(rng.sample(range(30, 900), 3))
    killed_at, mid_write = [], 0
    for attempt, target in enumerate(targets):
        mark = _checkpoint_mtime(part)
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while _checkpoint_mtime(part) == mark and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.001)  # until this process has written a checkpoint of its own
            if attempt == 0:
                assert main(["train", *KILL_RUN, f"run_dir={part}", "--resume"]) == EXIT_BUSY
            while _logged_step(part) < target and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, 0.005))  # somewhere in the next step or its checkpoint write
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed"
        assert not (part / "summary.json").exists()
        mid_write += bool(list(part.rglob("*.tmp")))
        killed_at.append(int(load_checkpoint(part / "checkpoints" / "last.pt")["step"]))
    assert killed_at == sorted(killed_at) and killed_at[0] >= targets[0] and killed_at[-1] < 1000, killed_at
    subprocess.run(command, env=env, check=True, capture_output=True)
    compare_runs(full, part)
    assert not list(part.rglob("*.tmp")), "a temp file was left"
    print(f"killed at steps {killed_at} (targets {targets}); {mid_write} kill(s) left a temp file behind")


INIT_RUN = ["dataset=digits", "steps=30", "model_args.hidden=[16]", "threads=1", "progress=off", "batch_size=32",
            "method=adalfl", "method_args.init_steps=600", "checkpoint_every=10", "log_every=10", "momentum=0.9"]


@pytest.mark.slow
def test_kill_9_during_the_offline_initialisation_then_resume_is_bit_identical(
        tmp_path: Path, compare_runs: Callable[[Path, Path], None]) -> None:
    """SIGKILL ``adaloss train method=adalfl`` at a random moment inside AdaLFL's offline
    initialisation (checkpointed every ``checkpoint_every`` unrolls), ``--resume``: the run
    continues the initialisation where its last checkpoint left it and ends bit-identical."""
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", *INIT_RUN, f"run_dir={full}"]) == 0
    command = [sys.executable, "-m", "adaloss", "train", *INIT_RUN, f"run_dir={part}", "--resume"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = random.Random(5)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _checkpoint_mtime(part) == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.05))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed"
    state = load_checkpoint(part / "checkpoints" / "last.pt")
    learner = state["learner"]
    assert state["step"] == 0 and not learner["initialized"] and 0 < learner["init_done"] < 600, learner["init_done"]
    subprocess.run(command, env=env, check=True, capture_output=True)
    compare_runs(full, part)
    assert not list(part.rglob("*.tmp"))


def test_a_dataloader_given_to_the_trainer_is_a_named_error() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    from adaloss.learners import FixedLossLearner
    from adaloss.training import Trainer

    model = nn.Linear(4, 3)
    loader = DataLoader(TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,))), batch_size=4)
    with pytest.raises(TypeError, match=r"`train_loader` to be an adaloss.data.BatchLoader.*data=dataset"):
        Trainer(model, FixedLossLearner(nn.CrossEntropyLoss()), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                train_loader=loader, task="classification", steps=1)  # type: ignore[arg-type]
