"""Reliability: run directories with one writer, divergence caught at the source (non-finite or
past the divergence limit), named errors with exit status 2 for bad input and file-system faults,
signals that stop after a step, comparisons that never replace a finished run, defaults that follow
the data, and kill -9 at random moments followed by ``--resume``.

Where nothing should change, the run directory is hashed file by file before and after.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
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
    args = [*TINY, "method=ala", "workers=2", "checkpoint_every=10", "method_args.every=5", f"run_dir={run}"]
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
    (finished / "summary.json").unlink()  # killed after its last checkpoint: --resume continues it
    assert _train(finished, "checkpoint_every=10", "keep_checkpoints=true", "--resume") == 0
    assert not any(p.exists() for p in stale)
    assert not list(finished.rglob("*.tmp"))


def test_compare_resumes_its_runs_and_replaces_runs_of_another_configuration_only_on_request(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["compare", "--methods", "ce", "--seeds", "0", "--out", str(tmp_path), *TINY[1:]]
    assert main(args) == 0
    assert main(args) == 0 and "(reused)" in capsys.readouterr().err
    before = _tree(tmp_path)
    assert main([*args, "steps=12"]) == 2  # the folder holds a run of 20 steps: refused, nothing changed
    err = capsys.readouterr().err
    assert "1 run directory holds a run of another configuration" in err and "(steps)" in err and "--overwrite" in err
    assert _tree(tmp_path) == before
    assert main([*args, "steps=12", "--overwrite"]) == 0  # replaced on request
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
    assert _train(run, "lr=1e30", "log_every=0", "divergence_factor=null") == 1
    err = capsys.readouterr().err
    assert "adaloss: training stopped: Training loss became nan by step 20 (first non-finite at step 2)" in err
    assert "no checkpoint was written" in err
    assert not (run / "summary.json").exists()


def test_the_kept_checkpoint_is_the_last_finite_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert _train(run, "lr=1e30", "log_every=0", "checkpoint_every=1", "divergence_factor=null") == 1
    assert "first non-finite at step 2); the last checkpoint" in capsys.readouterr().err
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    before = _tree(run)
    assert _train(run, "lr=1e30", "log_every=0", "checkpoint_every=1", "divergence_factor=null",
                  "--resume") == 1  # the same step again
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


# ---------------------------------------------------------------------------- compare keeps every finished run


def test_compare_twice_with_one_key_changed_keeps_both_sets_of_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The default folder is keyed by the configuration: a changed key trains new runs beside the
    old ones; running the first configuration again retrains nothing and changes no file."""
    monkeypatch.chdir(tmp_path)
    args = ["compare", "--methods", "ce,focal", "--seeds", "0,1", *TINY[1:]]
    assert main(args) == 0
    assert main([*args, "lr=0.02"]) == 0
    folders = sorted((tmp_path / "runs" / "compare").iterdir())
    assert len(folders) == 2 and all(f.name.startswith("digits-mlp-") for f in folders)
    trees = {f: _tree(f) for f in folders}
    lrs = set()
    for folder in folders:
        for method in ("ce", "focal"):
            for seed in (0, 1):
                summary = json.loads((folder / method / f"seed{seed}" / "summary.json").read_text())
                lrs.add(summary["config"]["lr"])
        assert "| ce | 2 |" in (folder / "summary.md").read_text()
    assert lrs == {0.01, 0.02}
    capsys.readouterr()
    for extra in ([], ["lr=0.02"]):  # both configurations again: every run reused, no run file rewritten
        assert main([*args, *extra]) == 0
        err = capsys.readouterr().err
        assert err.count("(reused)") == 4 and "0 runs to train, 4 already finished" in err
    for folder in folders:
        after = _tree(folder)
        assert {k: v for k, v in after.items() if "/seed" in k} == {k: v for k, v in trees[folder].items()
                                                                    if "/seed" in k}


def test_a_run_made_under_other_library_defaults_is_neither_reused_nor_resumed(
        finished: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    import adaloss.learners.registry as registry

    before = _tree(finished)
    for _ in range(2):  # --resume on a finished run: a no-op that says so, however often
        with caplog.at_level("WARNING", logger="adaloss"):
            assert _train(finished, "checkpoint_every=10", "keep_checkpoints=true", "--resume") == 0
        assert "holds the finished run of this configuration: nothing to do" in caplog.text
        caplog.clear()
        assert _tree(finished) == before
    real = registry.method_defaults
    monkeypatch.setattr(registry, "method_defaults", lambda m: {**real(m), "a_new_default": 1})
    (finished / "summary.json").unlink()
    before = _tree(finished)
    assert _train(finished, "checkpoint_every=10", "keep_checkpoints=true", "--resume") == 2
    assert "different configuration (method_defaults:" in capsys.readouterr().err
    assert _tree(finished) == before


def test_overrides_modify_the_built_in_job_and_the_plan_is_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    from adaloss.cli import BUILTIN_METHODS

    seen: dict[str, object] = {}

    class Stop(Exception):
        pass

    compare_module = importlib.import_module("adaloss.training.compare")

    def fake_compare(cfg, *, methods, seeds, out_dir, on_result=None, overwrite=False,  # type: ignore[no-untyped-def]
                     on_plan=None, executor=None):
        seen.update(cfg=cfg, methods=list(methods), out=out_dir)
        on_plan(compare_module.plan(cfg, methods=methods, seeds=seeds, out_dir=out_dir))  # what compare announces
        raise Stop

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(compare_module, "compare", fake_compare)
    with pytest.raises(Stop):
        main(["compare", "threads=1"])
    cfg = seen["cfg"]
    assert seen["methods"] == list(BUILTIN_METHODS)  # the six cheap methods, not every method
    assert (cfg.threads, cfg.steps, cfg.model_args, cfg.method_args) == (  # type: ignore[attr-defined]
        1, 1000, {"hidden": [256, 256]}, {"adalfl": {"init_steps": 250}})
    err = capsys.readouterr().err
    assert "modified by: threads=1" in err
    assert "about to run 6 methods × 3 seeds × 1000 steps on digits / mlp: 18 runs to train" in err
    assert f"folder: {seen['out']}" in err and str(seen["out"]).startswith("runs/compare/digits-mlp-")
    with pytest.raises(Stop):
        main(["compare", "threads=1", "steps=10"])
    assert seen["out"] != Path(err.split("folder: ")[1].split()[0])  # another configuration, another folder


# ---------------------------------------------------------------------------- finite divergence


@pytest.mark.parametrize("method", ["ce", "adalfl"])
@pytest.mark.parametrize("log_every", ["100", "0"])
def test_exploding_but_finite_training_stops_with_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         method: str, log_every: str) -> None:
    run = tmp_path / "run"
    extra = ["method_args.init_steps=5"] if method == "adalfl" else []
    assert _train(run, "lr=1e4", f"method={method}", *extra, f"log_every={log_every}", "checkpoint_every=1",
                  "steps=40") == 1
    err = capsys.readouterr().err
    assert "adaloss: training stopped:" in err and "diverged:" in err and "past the divergence limit" in err
    assert "divergence_factor=" in err and "the last checkpoint" in err and "Traceback" not in err
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] < 40 and all(torch.isfinite(t).all() for t in state["model"].values())
    assert not (run / "summary.json").exists()


def test_the_divergence_limit_is_configurable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a healthy run passes the default limit, and stops under a tight absolute bound at the first step past it
    assert _train(tmp_path / "a", "log_every=5") == 0
    losses = [r["train_loss"] for r in read_jsonl(tmp_path / "a" / "metrics.jsonl") if "train_loss" in r]
    assert _train(tmp_path / "b", "log_every=1", "divergence_bound=1e-3") == 1
    err = capsys.readouterr().err
    assert "Training loss diverged:" in err and "at step 1, past the divergence limit 0.001 (divergence_factor=1000 × " \
        in err and ", at most divergence_bound=0.001)" in err, err
    assert losses and all(math.isfinite(v) for v in losses)
    for bad in ("divergence_factor=0", "divergence_bound=-1"):
        assert _train(tmp_path / "c", bad) == 2
        assert f"Expected `{bad.split('=')[0]}` to be a positive number or null" in capsys.readouterr().err


# ---------------------------------------------------------------------------- file-system faults and signals


def test_an_unwritable_run_dir_is_a_named_error_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() == 0:  # root writes anywhere: a path under a file cannot be created by anyone
        blocker = tmp_path / "file"
        blocker.write_text("x")
        run = blocker / "run"
    else:
        locked = tmp_path / "ro"
        locked.mkdir()
        locked.chmod(0o555)
        run = locked / "run"
    assert _train(run) == 2
    err = capsys.readouterr().err
    assert err.startswith("adaloss: error: Could not write") and str(run) in err and "choose another `run_dir`" in err
    assert "Traceback" not in err


def test_a_full_disk_is_a_named_error_and_leaves_nothing_half_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import adaloss.checkpoint as checkpoint

    real_save, calls = checkpoint.torch.save, []

    def full_disk_after_the_first(obj: object, f: object) -> None:
        calls.append(1)
        if len(calls) == 1:
            return real_save(obj, f)
        f.write(b"part of a checkpoint")  # type: ignore[attr-defined]
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk_after_the_first)
    run = tmp_path / "run"
    assert _train(run, "checkpoint_every=10") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"adaloss: error: Could not write '{run / 'checkpoints' / 'last.pt'}'") and "Traceback" \
        not in err
    assert not list(run.rglob("*.tmp"))  # nothing half-written
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 10  # the last good one, intact
    monkeypatch.setattr(checkpoint.torch, "save", real_save)  # space freed: the run continues
    assert _train(run, "checkpoint_every=10", "--resume") == 0


def test_run_files_share_one_mode(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _train(run, "checkpoint_every=10") == 0
    modes = {p.name: p.stat().st_mode & 0o777 for p in run.rglob("*") if p.is_file()}
    umask = os.umask(0)
    os.umask(umask)
    assert set(modes.values()) == {0o666 & ~umask}, modes


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_after_the_step_with_a_checkpoint_and_a_resume_command(
        tmp_path: Path, sig: int, code: int, compare_runs: Callable[[Path, Path], None]) -> None:
    full, part = tmp_path / "full", tmp_path / "part"
    run_args = [*KILL_RUN, "checkpoint_every=100"]
    assert main(["train", *run_args, f"run_dir={full}"]) == 0
    command = [sys.executable, "-m", "adaloss", "train", *run_args, f"run_dir={part}"]
    proc = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _logged_step(part) < 120 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    step = int(load_checkpoint(part / "checkpoints" / "last.pt")["step"])
    assert 120 <= step < 1000
    assert f"stopped by {signal.Signals(sig).name} after step {step}; the last checkpoint is " \
           f"{part / 'checkpoints' / 'last.pt'} (step {step}); continue with: adaloss train" in err
    assert err.rstrip().endswith("--resume") and "Traceback" not in err
    resume = err.rstrip().split("continue with: adaloss ")[1]
    assert main(shlex.split(resume)) == 0  # the printed command continues the run to the uninterrupted result
    compare_runs(full, part)


@pytest.mark.slow
def test_sigint_before_the_first_step_leaves_the_directory_as_found(tmp_path: Path) -> None:
    run = tmp_path / "run"
    command = [sys.executable, "-m", "adaloss", "train", *INIT_RUN[:-3], "method_args.init_steps=100000",
               f"run_dir={run}"]
    proc = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "config.yaml").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # inside the offline initialisation, which keeps no checkpoint here
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # the second one stops at once
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert not run.exists()


# ---------------------------------------------------------------------------- run-directory state


def test_a_run_that_fails_before_its_first_step_leaves_the_directory_as_found(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for existing in (False, True):
        run = tmp_path / f"run{existing}"
        run.mkdir()
        (run / "taylorglo_search.json").write_text("{not json")  # a corrupt search state
        if existing:
            (run / "notes.txt").write_text("mine")
        before = _tree(run)
        assert _train(run, "method=taylorglo") == 2
        assert "is not a readable CMA-ES search state" in capsys.readouterr().err
        assert _tree(run) == before
        (run / "taylorglo_search.json").unlink()  # the same command then starts: nothing claims the directory
        assert _train(run, "method=taylorglo", "method_args.popsize=4", "method_args.generations=1",
                      "method_args.partial_steps=5") == 0


# ---------------------------------------------------------------------------- defaults that follow the data


def _housing_csv(path: Path, rows: int) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 3))
    medv = 20 + 3 * x[:, 0] - 2 * x[:, 1] + rng.normal(scale=0.5, size=rows)
    lines = ["CRIM,RM,LSTAT,MEDV"] + [f"{a:.4f},{b:.4f},{c:.4f},{m:.2f}" for (a, b, c), m in zip(x, medv)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_default_method_follows_the_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _housing_csv(tmp_path / "housing.csv", 400)
    for extra in (["task=regression"], []):  # given, and inferred from the numeric target
        run = tmp_path / f"run{len(extra)}"
        assert main(["train", "dataset=csv", f"data_path={data}", "target=MEDV", *extra, "steps=50",
                     f"run_dir={run}", "progress=off"]) == 0
        config = json.loads((run / "summary.json").read_text())["config"]
        assert config["method"] == "mse"
    assert main(["list", "keys"]) == 0
    assert "method=None\t# unset: ce for classification, mse for regression, contrastive for embedding" in \
        capsys.readouterr().out


def test_a_batch_larger_than_the_split_is_clipped_with_one_warning(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    data = _housing_csv(tmp_path / "small.csv", 100)  # 80 rows after the test split, 72 for training
    with caplog.at_level("WARNING", logger="adaloss"):
        assert main(["train", "dataset=csv", f"data_path={data}", "target=MEDV", "steps=5", "log_every=1",
                     f"run_dir={tmp_path / 'run'}", "progress=off"]) == 0
    warnings = [r.getMessage() for r in caplog.records if "larger than the training split" in r.getMessage()]
    assert warnings == ["batch_size=128 is larger than the training split (72 rows): using batches of 72"]


def test_npz_accepts_string_labels_like_csv(tmp_path: Path) -> None:
    from adaloss.data import DataFormatError
    from adaloss.data.own import load_csv, load_npz

    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 4)).astype(np.float32)
    names = np.array(["setosa", "versicolor", "virginica"])[np.arange(90) % 3]
    np.savez(tmp_path / "flowers.npz", x=x, y=names)
    (tmp_path / "flowers.csv").write_text("a,b,c,d,species\n" + "".join(
        f"{','.join(f'{v:.9g}' for v in row)},{n}\n" for row, n in zip(x, names)))
    npz, csv_ = load_npz(tmp_path / "flowers.npz"), load_csv(tmp_path / "flowers.csv", target="species")
    assert npz.task == csv_.task == "classification"
    assert npz.class_names == csv_.class_names == ("setosa", "versicolor", "virginica")
    assert torch.equal(npz.train.y, csv_.train.y) and torch.equal(npz.test.y, csv_.test.y)
    assert main(["train", "dataset=npz", f"data_path={tmp_path / 'flowers.npz'}", "steps=5", "progress=off",
                 f"run_dir={tmp_path / 'run'}"]) == 0
    np.savez(tmp_path / "bad.npz", x=x, y=names, x_test=x[:3], y_test=np.array(["setosa", "rose", "setosa"]))
    with pytest.raises(DataFormatError, match=r"array 'y_test' holds 'rose' at row 1, a class array 'y' does not have"):
        load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "reg.npz", x=x, y=names)
    with pytest.raises(DataFormatError, match=r"holds strings .* expected numbers for task='regression'"):
        load_npz(tmp_path / "reg.npz", task="regression")
