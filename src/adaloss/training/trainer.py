"""The step loop shared by every method: data, learner step, schedule, evaluation, logging, checkpoints."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from tqdm.auto import tqdm

from adaloss.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from adaloss.data.loader import BatchLoader, ClassBalancedLoader, iterate_batches
from adaloss.data.types import TensorSplit
from adaloss.distributed import Collective, LocalCollective, ShardedBatches
from adaloss.learners.base import Learner, TrainContext, TrainingDiverged
from adaloss.metrics import Metric, create_metric, evaluate_batches
from adaloss.training.interrupt import Interrupted, stop_requested
from adaloss.training.rundir import (
    RunDirectoryBusy,
    RunDirectoryError,
    RunDirLock,
    check_run_dir,
    clean_stale_temp_files,
    clear_run,
    finished_summary,
    write_text_atomic,
)
from adaloss.training.seed import get_rng_state, set_rng_state
from adaloss.training.sinks import LOGGERS, JsonlSink, MetricSink, TensorBoardSink, tensorboard_available
from adaloss.typing import Device, StateDict, Task

__all__ = ["TrainingDiverged", "Trainer", "evaluate"]

logger = logging.getLogger("adaloss")

#: metrics evaluated when the config names none; embedding: retrieval on the held-out classes
#: (Recall@1/2/4/8) and NMI of a k-means clustering (ALA dossier §9 #16)
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("error",),
    "regression": ("mse",),
    "embedding": ("recall@1", "recall@2", "recall@4", "recall@8", "nmi"),
}


def evaluate(
    model: nn.Module,
    split: TensorSplit,
    metrics: Sequence[Metric],
    *,
    batch_size: int = 1000,
    device: Device = "cpu",
) -> dict[str, float]:
    """Metrics of ``model`` on ``split`` in eval mode (no dropout, BatchNorm running statistics).

    The model's train/eval mode is restored afterwards.
    """
    return evaluate_batches(model, iterate_batches(split, batch_size=batch_size, device=device), metrics).values


class Trainer:
    """Runs ``steps`` base steps of ``learner`` on ``model``; method-agnostic.

    Args:
        model: the base model, already on ``device``.
        learner: decides how each base step comes about (see :class:`~adaloss.learners.Learner`).
        optimizer: the base optimiser over ``model``'s parameters.
        train_loader: the training stream (shuffled or class-balanced batches).
        task: classification, regression or embedding (chooses the default metrics).
        steps: total number of base steps.
        scheduler: LR schedule stepped once per base step.
        meta_loader: validation stream handed to meta-learners.
        eval_splits: named splits evaluated every ``eval_every`` steps and at the end
            (e.g. ``{"valid": ..., "test": ...}``); records are ``<split>_<metric>``.
        metrics: metric names (default: error for classification, mse for regression).
        eval_every: evaluate every this many steps (0: only at the end).
        log_every: write the running mean of the learner's scalars every this many steps (0: never).
        checkpoint_every: write ``run_dir/checkpoints/last.pt`` every this many steps (0: never).
        run_dir: where ``metrics.jsonl``, checkpoints and ``summary.json`` go (``None``: nowhere).
        progress: show a tqdm bar.
        config: the resolved run configuration, stored in checkpoints and the summary.
        sinks: extra metric sinks besides the run directory's JSON lines.
        model_factory: builds a fresh base model, for learners whose offline search restarts
            training (handed to the learner in its :class:`~adaloss.learners.TrainContext`).
        keep_checkpoints: besides ``last.pt``, keep every checkpoint as ``step<NNNNNNNN>.pt``.
        collective: under torchrun, the ranks' collectives (default: one process). With several
            ranks, each trains on its shard of every global batch (``train_loader.batch_size``
            is the global batch), the learner averages gradients, and only rank 0 evaluates,
            logs, shows progress and writes the run directory; every rank resumes from the
            same checkpoint. A learner with ``data_parallel = False`` (ALA) makes the ranks
            independent workers instead: full batches from each rank's own loader, and a
            checkpoint per rank in ``checkpoints/rank<r>/``.
        loggers: the run directory's metric sinks: ``metrics.jsonl`` always, and ``"tensorboard"``
            in addition when named (event files in ``run_dir/tensorboard``, the same scalars, plus
            the figures of what was learned at the end of the run).
        divergence_factor: stop (:class:`TrainingDiverged`) when the magnitude of the training
            loss exceeds this multiple of max(|its first value|, 1) (``None``: never).
        divergence_bound: ... or this absolute value (``None``: no bound).
        run_config: the full resolved configuration, written to ``run_dir/config.yaml`` by
            :meth:`fit` once the run directory is claimed (``None``: no ``config.yaml``).

    Run directory: :meth:`fit` holds an exclusive lock on ``run_dir/.lock`` for the whole run
    (rank 0 only; a second writer gets :class:`~adaloss.training.rundir.RunDirectoryBusy`), and
    starts afresh in a directory that holds a run only with ``overwrite=True`` (or continues it
    with ``resume=True``). Divergence: the training loss is checked for non-finite values at
    every step on its device (no synchronisation per step), as is its magnitude against the
    divergence limit (``divergence_factor``, ``divergence_bound``); the flag is read at every
    logging, evaluation and checkpoint step and at the end. Model parameters are checked before
    every checkpoint and model outputs at every evaluation. A non-finite value, or a loss past the
    limit, raises :class:`TrainingDiverged` and no checkpoint is written past the last good one.
    """

    def __init__(
        self,
        model: nn.Module,
        learner: Learner,
        *,
        optimizer: Optimizer,
        train_loader: BatchLoader | ClassBalancedLoader,
        task: Task,
        steps: int,
        scheduler: LRScheduler | None = None,
        meta_loader: BatchLoader | None = None,
        eval_splits: Mapping[str, TensorSplit] | None = None,
        metrics: Sequence[str] | None = None,
        eval_every: int = 0,
        eval_batch_size: int = 1000,
        log_every: int = 100,
        checkpoint_every: int = 0,
        run_dir: str | Path | None = None,
        progress: bool = False,
        device: Device = "cpu",
        config: Mapping[str, Any] | None = None,
        sinks: Sequence[MetricSink] = (),
        model_factory: Callable[[], nn.Module] | None = None,
        keep_checkpoints: bool = False,
        collective: Collective | None = None,
        loggers: Sequence[str] = ("jsonl",),
        run_config: Mapping[str, Any] | None = None,
        divergence_factor: float | None = 1e3,
        divergence_bound: float | None = None,
    ) -> None:
        for name, value in (("steps", steps), ("eval_every", eval_every), ("log_every", log_every),
                            ("checkpoint_every", checkpoint_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Expected `{name}` to be a non-negative integer, but got {value!r}.")
        if checkpoint_every and run_dir is None:
            raise ValueError("`checkpoint_every` > 0 needs a `run_dir` to write checkpoints into.")
        for name, loader in (("train_loader", train_loader), ("meta_loader", meta_loader)):
            if loader is not None and not isinstance(loader, (BatchLoader, ClassBalancedLoader)):
                raise TypeError(
                    f"Expected `{name}` to be an adaloss.data.BatchLoader or ClassBalancedLoader (the trainer "
                    f"checkpoints its position for exact resume), but got {type(loader).__module__}."
                    f"{type(loader).__qualname__}. For a torch Dataset use adaloss.train(config, data=dataset); for "
                    "your own DataLoader and loop use adaloss.AdaLFL / adaloss.ALA directly (README: 'Use it in your "
                    "own training loop')."
                )
        if learner.needs_index and not getattr(train_loader, "return_index", False):
            raise ValueError(f"Expected `train_loader` to yield (x, y, index) batches for the learner "
                             f"{type(learner).__name__} (it keeps per-example state): build it as "
                             "BatchLoader(..., return_index=True).")
        loggers = [loggers] if isinstance(loggers, str) else list(loggers)
        bad = [name for name in loggers if name not in LOGGERS]
        if bad or not loggers:
            raise ValueError(f"Expected `logger` to name one or more of {list(LOGGERS)}, but got {loggers!r}.")
        for name, value in (("divergence_factor", divergence_factor), ("divergence_bound", divergence_bound)):
            if value is not None and not value > 0:
                raise ValueError(f"Expected `{name}` to be a positive number or None (no limit), but got {value!r}.")
        if "tensorboard" in loggers and not tensorboard_available():
            raise ValueError("Expected the `tensorboard` package for logger 'tensorboard', but it is not installed: "
                             "pip install 'adaloss[tensorboard]' (or choose logger=jsonl).")
        self.collective = collective if collective is not None else LocalCollective()
        self.is_main = self.collective.is_main
        #: independent workers (``learner.data_parallel`` False under torchrun): no sharding, and
        #: every rank checkpoints its own state
        self.workers = self.collective.world_size > 1 and not learner.data_parallel
        if self.collective.world_size > 1 and not self.workers:
            train_loader = ShardedBatches(train_loader, self.collective)  # type: ignore[assignment]
            if meta_loader is not None:
                meta_loader = ShardedBatches(meta_loader, self.collective)  # type: ignore[assignment]
        self.model = model
        self.learner = learner
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_loader = train_loader
        self.meta_loader = meta_loader
        self.task = task
        self.steps = steps
        self.eval_splits = dict(eval_splits or {})
        self.metrics = [create_metric(n, task=task) for n in (metrics or DEFAULT_METRICS[task])]
        self.eval_every = eval_every
        self.eval_batch_size = eval_batch_size
        self.log_every = log_every
        self.checkpoint_every = checkpoint_every
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress = progress and self.is_main
        self.device = torch.device(device)
        self.config = dict(config) if config is not None else None
        self.extra_sinks = list(sinks)
        self.keep_checkpoints = keep_checkpoints
        self.loggers = list(dict.fromkeys(["jsonl", *loggers]))  # metrics.jsonl always: `adaloss plot` reads it
        self.divergence_factor = divergence_factor
        self.divergence_bound = divergence_bound
        self.run_config = dict(run_config) if run_config is not None else None
        self.step = 0
        self.elapsed_s = 0.0
        self._mark: float | None = None
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}
        self._sinks: list[MetricSink] | None = None
        self._snapshot_sink: JsonlSink | None = None
        self._truncate_after_step: int | None = None
        self._bar: Any = None
        self._lock: RunDirLock | None = None
        # divergence: one watch per scalar of the learner's step output (the training loss, and the
        # task loss on the meta batch of meta-learners); their scales are kept in checkpoints
        self._watches: dict[str, _Watch] = {}
        self._scales: dict[str, float] = {}
        self._checkpoint_step: int | None = None
        valid = self.eval_splits.get("valid")
        learner.bind(
            TrainContext(
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                task=task,
                meta_batches=meta_loader,
                train_batches=train_loader,
                device=self.device,
                model_factory=model_factory,
                run_dir=self.run_dir if self.is_main else None,
                train_split=TensorSplit(train_loader.x, train_loader.y),
                valid_split=valid if valid is not None and len(valid) > 0 else None,
                batch_size=train_loader.batch_size,
                augment=train_loader.augment,  # type: ignore[arg-type]
                progress=self.progress,
                collective=self.collective,
                total_steps=steps,
                checkpoint=self._checkpoint_in_prepare if checkpoint_every else None,
                checkpoint_every=checkpoint_every,
            )
        )

    # ------------------------------------------------------------------ paths
    @property
    def checkpoint_path(self) -> Path | None:
        if self.run_dir is None:
            return None
        folder = self.run_dir / "checkpoints"
        return (folder / f"rank{self.collective.rank}" if self.workers else folder) / "last.pt"

    # ------------------------------------------------------------------ state
    def state_dict(self) -> StateDict:
        """The whole training state: model, optimiser, schedule, learner, data streams, RNGs, step."""
        return {
            "step": self.step,
            "elapsed_s": self.elapsed_s,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "learner": self.learner.state_dict(),
            "train_loader": self.train_loader.state_dict(),
            "meta_loader": self.meta_loader.state_dict() if self.meta_loader is not None else None,
            "rng": get_rng_state(),
            "running": {"sums": dict(self._sums), "counts": dict(self._counts)},
            "config": json.dumps(self.config, sort_keys=True) if self.config is not None else None,
            "divergence_scales": {**self._scales, **{k: w.scale_value() for k, w in self._watches.items()}},
        }

    def load_state_dict(self, state: StateDict) -> None:
        """Restore :meth:`state_dict`; refuses a checkpoint taken under a different configuration."""
        if self.config is not None and state.get("config") is not None:
            saved = json.loads(state["config"])
            diff = _config_diff(saved, self.config)
            if diff:
                raise ValueError(
                    "Cannot resume: the checkpoint was written with a different configuration "
                    f"({diff}). Use a new run directory, or the original settings."
                )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.learner.load_state_dict(state["learner"])
        self.train_loader.load_state_dict(state["train_loader"])
        if self.meta_loader is not None:
            self.meta_loader.load_state_dict(state["meta_loader"])
        set_rng_state(state["rng"])
        self._sums = dict(state["running"]["sums"])
        self._counts = {k: int(v) for k, v in state["running"]["counts"].items()}
        self.step = int(state["step"])
        self.elapsed_s = float(state["elapsed_s"])
        self._scales = {k: float(v) for k, v in (state.get("divergence_scales") or {}).items() if v is not None}
        self._watches = {}

    def save_checkpoint(self) -> Path:
        """Write the training state atomically to ``run_dir/checkpoints/last.pt``."""
        if self.checkpoint_path is None:
            raise ValueError("Trainer has no `run_dir`; nowhere to write a checkpoint.")
        self.check_finite(weights=True)  # a checkpoint to resume from must not hold the divergence
        state = self.state_dict()
        if self.keep_checkpoints:
            save_checkpoint(state, self.checkpoint_path.with_name(f"step{self.step:08d}.pt"))
        if self.workers and self.checkpoint_path.exists():
            # a job killed while the ranks write leaves some ranks one checkpoint ahead: keep the
            # previous one so every rank can resume from a step all of them have (see fit)
            os.replace(self.checkpoint_path, self.checkpoint_path.with_name("prev.pt"))
        path = save_checkpoint(state, self.checkpoint_path)
        self._checkpoint_step = self.step
        return path

    def _checkpoint_in_prepare(self) -> None:
        """What a learner calls during long offline work (``TrainContext.checkpoint``): the whole
        state at step 0, the learner's progress included, so a kill loses at most one interval."""
        if self.run_dir is not None and (self.is_main or self.workers):
            self._tick()
            self.save_checkpoint()
            signum = stop_requested()
            if signum is not None:
                raise Interrupted(signum, step=self.step, checkpoint=self.checkpoint_path,
                                            checkpoint_step=self.step)

    # ------------------------------------------------------------------ loop
    def fit(self, *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
        """Train to ``steps``, evaluate, and return (and write) the summary.

        Args:
            resume: continue from ``run_dir/checkpoints/last.pt`` if it exists (a fresh start if not).
            overwrite: start afresh even if ``run_dir`` holds a run; that run's files are removed
                (:data:`~adaloss.training.rundir.RUN_FILES`).

        Raises:
            RunDirectoryBusy: another process is writing ``run_dir``.
            RunDirectoryError: ``run_dir`` holds a run and neither ``resume`` nor ``overwrite``.
            ValueError: the checkpoint was written under another configuration (nothing is
                changed in ``run_dir``).
            TrainingDiverged: the training loss, the parameters or the outputs became non-finite.
        """
        ckpt = self.checkpoint_path
        if resume and self.run_dir is not None and self.config is not None and self.collective.world_size == 1:
            RunDirLock(self.run_dir).probe()
            done = finished_summary(self.run_dir, self.config)
            if done is not None and done.get("step") == self.steps:
                logger.warning("%s holds the finished run of this configuration: nothing to do (--overwrite "
                               "trains it afresh)", self.run_dir)
                return done
        found = self._found_in_run_dir()
        resumed = False
        try:
            self._claim_run_dir(resume=resume, overwrite=overwrite)
            state = None
            if resume and ckpt is not None:
                state = self._worker_checkpoint(ckpt) if self.workers else (
                    load_checkpoint(ckpt, map_location=self.device) if ckpt.exists() else None)
            resumed = state is not None
            if resumed:
                self.load_state_dict(state)
                self._checkpoint_step = self.step
                logger.info("resumed from %s at step %d", ckpt, self.step)
            elif resume:
                self._check_recorded_config()
            self._prepare_run_dir(overwrite=overwrite and not resumed)
        except BaseException:
            self._release_lock()
            raise
        self._mark = time.perf_counter()
        try:
            self._open_sinks(truncate_after_step=self.step if resumed else None)
            if not resumed and "meta_loss" not in self._scales:
                scale = self._initial_task_loss()
                if scale is not None:
                    self._scales["meta_loss"] = scale
            if not resumed or not self.learner.prepared:  # a run killed in prepare() continues it
                prep = self.learner.prepare()
                if prep:
                    self._emit({"step": 0, **{f"prepare_{k}": v for k, v in prep.items()}})
                self._snapshot()
            self._bar = tqdm(
                total=self.steps, initial=self.step, disable=not self.progress, dynamic_ncols=True,
                file=sys.stderr, desc="train", leave=False,
            )
            self.run(self.steps - self.step)
            self.check_finite()
            final = self.evaluate() if self.is_main else {}
            self._snapshot()
            self._tick()
            summary = {
                "step": self.step,
                "final": final,
                "wall_time_s": self.elapsed_s,
                "config": self.config,
            }
            self._emit({"step": self.step, **final})
            if self.run_dir is not None and self.is_main:
                write_text_atomic(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
                for sink in self._sinks or ():
                    if isinstance(sink, TensorBoardSink):
                        sink.write_figures(self.run_dir, self.step)
            return summary
        except BaseException:
            if not resumed and self.step == 0 and self._checkpoint_step is None:
                self._restore_run_dir(found)  # failed before its first step: leave the directory as found
            raise
        finally:
            self.close()

    def _found_in_run_dir(self) -> set[str] | None:
        """The names in the run directory before this run touched it (``None``: no directory)."""
        if self.run_dir is None or not self.is_main or not self.run_dir.is_dir():
            return None
        return set(os.listdir(self.run_dir))

    def _restore_run_dir(self, found: set[str] | None) -> None:
        """Remove what the trainer wrote (the run failed before its first step and before any
        checkpoint), the directory too when it made it and nothing else is left; a learner's
        resumable offline state (e.g. a search's progress) is kept. Only while holding the lock, so
        another writer's files are never touched."""
        if self.run_dir is None or not self.is_main or self._lock is None or not self._lock.held:
            return
        self._close_sinks()
        for name in sorted(set(os.listdir(self.run_dir)) - (found or set()) - {".lock"}):
            path = self.run_dir / name
            if name == "checkpoints":
                with contextlib.suppress(OSError):  # only while empty: a learner's resumable state is kept
                    path.rmdir()
            elif name in _TRAINER_FILES or (name.startswith(".") and name.endswith(".tmp")):
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        if found is None or ".lock" not in found:
            (self.run_dir / ".lock").unlink(missing_ok=True)
        if found is None:
            with contextlib.suppress(OSError):  # not empty: something else was put there meanwhile
                self.run_dir.rmdir()

    #: codes of the run-directory check, agreed over the ranks (the smallest wins)
    _RUN_DIR_OK, _RUN_DIR_HOLDS_RUN, _RUN_DIR_BUSY = 2, 1, 0

    def _claim_run_dir(self, *, resume: bool, overwrite: bool) -> None:
        """Rank 0 takes the run directory's lock and checks that it may start or continue here;
        every rank learns the outcome (one collective), so all stop together."""
        if resume and overwrite:
            raise ValueError("Expected at most one of `resume` (continue the run in run_dir) and `overwrite` "
                             "(discard it and start afresh), but got both.")
        error: BaseException | None = None
        code = self._RUN_DIR_OK
        if self.run_dir is not None and self.is_main:
            self._lock = RunDirLock(self.run_dir)
            try:
                self._lock.acquire()
                check_run_dir(self.run_dir, resume=resume, overwrite=overwrite)
            except RunDirectoryBusy as e:
                error, code = e, self._RUN_DIR_BUSY
            except RunDirectoryError as e:
                error, code = e, self._RUN_DIR_HOLDS_RUN
        agreed = self.collective.min_int(code) if self.collective.world_size > 1 else code
        if error is not None:
            raise error
        if agreed != self._RUN_DIR_OK:
            # rank 0 raises its own, more precise error: wait until it has left (the barrier then
            # fails with a DistributedError), so that its error is the one reported
            self.collective.cpu().barrier()
        if agreed == self._RUN_DIR_BUSY:
            raise RunDirectoryBusy(f"Rank 0 could not lock run directory {str(self.run_dir)!r}: another process "
                                   "is writing it.")
        if agreed == self._RUN_DIR_HOLDS_RUN:
            raise RunDirectoryError(f"Run directory {str(self.run_dir)!r} already holds a run (see rank 0's error); "
                                    "use --resume or --overwrite.")

    def _prepare_run_dir(self, *, overwrite: bool) -> None:
        """After the checks passed (lock held, configuration accepted): remove what a killed
        writer left (temp files), the old run when overwriting, and write ``config.yaml``."""
        if self.run_dir is not None and self.is_main:
            if overwrite:
                clear_run(self.run_dir)
            clean_stale_temp_files(self.run_dir)
            if self.run_config is not None:
                import yaml

                write_text_atomic(self.run_dir / "config.yaml", yaml.safe_dump(self.run_config, sort_keys=False))
            if self._lock is not None:
                self._lock.record_owner()
        if self.collective.world_size > 1:  # no worker writes before rank 0 has cleared the directory
            self.collective.min_int(0)

    def _check_recorded_config(self) -> None:
        """``resume`` without a checkpoint starts afresh; refuse it when the run directory records
        a finished (or diverged) run of another configuration, which that would replace."""
        if self.run_dir is None or self.config is None:
            return
        for name in ("summary.json", "diverged.json"):
            try:
                recorded = json.loads((self.run_dir / name).read_text()).get("config")
            except (OSError, ValueError, AttributeError):
                continue
            diff = _config_diff(recorded, self.config) if isinstance(recorded, dict) else ""
            if diff:
                raise ValueError(
                    f"Cannot resume: {str(self.run_dir / name)!r} records a run with a different configuration "
                    f"({diff}) and there is no checkpoint to continue. Use a new run directory, the original "
                    "settings, or --overwrite (overwrite=True) to replace that run."
                )

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _worker_checkpoint(self, ckpt: Path) -> StateDict | None:
        """This worker's checkpoint at the latest step every rank has (``last.pt`` or ``prev.pt``);
        ``None`` (a fresh start on every rank) when some rank has none."""
        candidates = {}
        for path in (ckpt, ckpt.with_name("prev.pt")):
            if path.exists():
                state = load_checkpoint(path, map_location=self.device)
                candidates[int(state["step"])] = state
        agreed = self.collective.min_int(max(candidates, default=-1))
        if agreed < 0:
            return None
        if agreed not in candidates:
            raise CheckpointError(
                f"Cannot resume rank {self.collective.rank}: the ranks' checkpoints agree on step {agreed}, "
                f"but {ckpt.parent} holds steps {sorted(candidates)}. Start a new run directory."
            )
        return candidates[agreed]

    def run(self, num_steps: int) -> None:
        """Run ``num_steps`` base steps with their logging, evaluation and checkpoint triggers.

        :meth:`fit` is the usual entry; calling ``run`` directly (benchmarks, notebooks) writes a
        fresh ``metrics.jsonl`` on first use; call :meth:`close` when done.
        """
        if self._mark is None:
            self._mark = time.perf_counter()
        if self._sinks is None:
            self._open_sinks(truncate_after_step=None)
        learner, loader, scheduler = self.learner, self.train_loader, self.scheduler
        for _ in range(num_steps):
            out = learner.step(next(loader))
            if scheduler is not None:
                scheduler.step()
            self.step += 1
            for k, v in out.items():
                s = self._sums.get(k)
                self._sums[k] = v if s is None else s + v
                self._counts[k] = self._counts.get(k, 0) + 1
            for key in _WATCHED:
                value = out.get(key)
                if value is not None:
                    self._watch(key, value)
            step = self.step
            log = self.log_every and step % self.log_every == 0
            evaluate = self.eval_every and step % self.eval_every == 0 and step != self.steps and self.is_main
            if log or evaluate:
                self.check_finite()
            record: dict[str, Any] | None = None
            if log:
                record = self._running_record()
            if evaluate:
                record = {**(record or {"step": step}), **self.evaluate()}
                self._snapshot()
            if record is not None:
                self._emit(record)
            if self.checkpoint_every and step % self.checkpoint_every == 0 and (self.is_main or self.workers):
                self._tick()  # account the time so far before the state is captured, so a resume keeps it
                self.save_checkpoint()
                self._write_artifacts()
            if self._bar is not None:
                self._bar.update(1)
            if stop_requested() is not None:
                self._stop_on_request()
        self._tick()

    def _stop_on_request(self) -> None:
        """A signal asked the run to stop (:func:`~adaloss.training.interrupt.graceful_stop`): write a
        checkpoint at this step when the run keeps them, then raise
        :class:`~adaloss.training.interrupt.Interrupted`."""
        signum = stop_requested()
        assert signum is not None
        self._tick()
        if self.checkpoint_every and (self.is_main or self.workers) and self._checkpoint_step != self.step:
            self.check_finite()
            self.save_checkpoint()
            self._write_artifacts()
        raise Interrupted(signum, step=self.step, checkpoint=self.checkpoint_path if self._checkpoint_step
                                    is not None else None, checkpoint_step=self._checkpoint_step)

    def evaluate(self) -> dict[str, float]:
        """Every metric on every evaluation split, as ``{"<split>_<metric>": value}``."""
        results: dict[str, float] = {}
        for split_name, split in self.eval_splits.items():
            finite: list[Tensor] = []

            def check_outputs(module: nn.Module, inputs: Any, output: Any) -> None:
                if isinstance(output, Tensor) and output.is_floating_point():
                    finite.append(torch.isfinite(output).all())

            handle = self.model.register_forward_hook(check_outputs)
            try:
                values = evaluate(self.model, split, self.metrics, batch_size=self.eval_batch_size, device=self.device)
            finally:
                handle.remove()
            if finite and not bool(torch.stack(finite).all()):
                raise TrainingDiverged(f"The model's outputs on the {split_name} split are non-finite at step "
                                       f"{self.step}{self._kept_checkpoint()}.")
            results.update({f"{split_name}_{k}": v for k, v in values.items()})
        return results

    # ------------------------------------------------------------------ divergence
    def _watch(self, key: str, value: Any) -> None:
        """Check the step's ``key`` scalar (finite, within the divergence limit) on its device."""
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watches[key] = _Watch(key, scale=self._scales.get(key), factor=self.divergence_factor,
                                                bound=self.divergence_bound)
        watch.update(value, self.step)

    def check_finite(self, *, weights: bool = False) -> None:
        """Raise :class:`TrainingDiverged` if a watched scalar of a step since the start (or resume)
        was non-finite or past the divergence limit, or (``weights``) a floating-point parameter or
        buffer of the model is non-finite.

        One host synchronisation; the trainer calls it at logging, evaluation and checkpoint
        steps and at the end.
        """
        watches = [w for w in self._watches.values() if w.ok is not None]
        if watches and not bool(torch.stack([w.ok.to(watches[0].ok.device) for w in watches]).all()):  # type: ignore[union-attr]
            bad = next(w for w in watches if not bool(w.ok))
            raise TrainingDiverged(bad.describe(self.step) + f"{self._kept_checkpoint()}.")
        if weights:
            tensors = {k: t for k, t in self.model.state_dict().items() if t.is_floating_point()}
            if tensors and not bool(torch.stack([torch.isfinite(t).all() for t in tensors.values()]).all()):
                bad_keys = [k for k, t in tensors.items() if not bool(torch.isfinite(t).all())]
                raise TrainingDiverged(f"Model parameters became non-finite by step {self.step} "
                                       f"({', '.join(bad_keys[:5])}{', ...' if len(bad_keys) > 5 else ''})"
                                       f"{self._kept_checkpoint()}.")

    def _initial_task_loss(self) -> float | None:
        """The task's plain loss (cross-entropy, MSE) of the untrained model on up to 1000 validation
        rows, in eval mode (no RNG, no BatchNorm update), at least 1: the scale of the meta-learners'
        ``meta_loss``, whose first value already follows one update."""
        split = self.eval_splits.get("valid")
        if split is None or len(split) == 0 or self.task == "embedding":
            return None
        from adaloss.learners.registry import default_method
        from adaloss.losses import create_loss

        loss_fn = create_loss(default_method(self.task), task=self.task)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                x, y = split.x[:1000].to(self.device), split.y[:1000].to(self.device)
                value = float(loss_fn(self.model(x), y))
        except (RuntimeError, ValueError, TypeError):  # an unusual model or target: the first value is the scale
            return None
        finally:
            self.model.train(was_training)
        return max(abs(value), 1.0) if math.isfinite(value) else None

    def _kept_checkpoint(self) -> str:
        if self.checkpoint_path is None:
            return ""
        if self._checkpoint_step is None:
            return "; no checkpoint was written"
        return f"; the last checkpoint ({self.checkpoint_path}, step {self._checkpoint_step}, finite) is kept"

    # ------------------------------------------------------------------ logging
    def _running_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"step": self.step}
        for k, v in self._sums.items():
            record[f"train_{k}"] = float(v) / self._counts[k]
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        self._sums, self._counts = {}, {}
        loss = record.get("train_loss")
        if loss is not None and not math.isfinite(loss):
            raise TrainingDiverged(f"Training loss became {loss} by step {self.step}{self._kept_checkpoint()}.")
        if self._bar is not None and loss is not None:
            self._bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        return record

    def _tick(self) -> None:
        """Add the wall time since the last mark to ``elapsed_s`` and move the mark to now."""
        now = time.perf_counter()
        if self._mark is not None:
            self.elapsed_s += now - self._mark
        self._mark = now

    def _write_artifacts(self) -> None:
        if self.run_dir is None or not self.is_main:
            return
        for name, state in self.learner.artifacts().items():
            save_checkpoint(state, self.run_dir / name)

    def _snapshot(self) -> None:
        if self.run_dir is None or not self.is_main:
            return
        self._write_artifacts()
        snap = self.learner.snapshot()
        if snap is None:
            return
        if self._snapshot_sink is None:  # opened on the first snapshot: most learners never write one
            self._snapshot_sink = JsonlSink(
                self.run_dir / "snapshots.jsonl", truncate_after_step=self._truncate_after_step
            )
        self._snapshot_sink.write({"step": self.step, **snap})

    def _emit(self, record: dict[str, Any]) -> None:
        for sink in self._sinks or ():
            sink.write(record)

    def _open_sinks(self, *, truncate_after_step: int | None) -> None:
        self._truncate_after_step = truncate_after_step
        self._sinks = list(self.extra_sinks) if self.is_main else []
        if self.run_dir is not None and self.is_main:
            own: list[MetricSink] = []
            if "jsonl" in self.loggers:
                own.append(JsonlSink(self.run_dir / "metrics.jsonl", truncate_after_step=truncate_after_step))
            if "tensorboard" in self.loggers:
                purge = 0 if truncate_after_step is None else truncate_after_step + 1
                own.append(TensorBoardSink(self.run_dir / "tensorboard", purge_step=purge))
            self._sinks[:0] = own

    def close(self) -> None:
        """Close the progress bar and the metric sinks, and release the run directory's lock."""
        self._mark = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        try:
            self._close_sinks()
        finally:
            self._release_lock()

    def _close_sinks(self) -> None:
        try:
            for sink in [*(self._sinks or ()), *([self._snapshot_sink] if self._snapshot_sink else [])]:
                sink.close()
        finally:
            self._sinks = None
            self._snapshot_sink = None


#: what the trainer itself writes into a run directory before the first step
_TRAINER_FILES = frozenset({"config.yaml", "metrics.jsonl", "snapshots.jsonl", "summary.json", "tensorboard"})

#: the step outputs watched for divergence: the training loss, and the meta-learners' task loss on
#: the meta batch (a learned loss can stay small while the model it trains explodes)
_WATCHED = ("loss", "meta_loss")


class _Watch:
    """One scalar of the learner's steps, checked on its device with no host synchronisation:
    ``ok`` is the AND over steps of "finite and |value| <= limit"; the first bad value and its
    step are kept. The limit is ``factor`` × ``scale`` (default: max(|first value|, 1)), at most
    ``bound``."""

    def __init__(self, name: str, *, scale: float | None, factor: float | None, bound: float | None) -> None:
        self.name, self.factor, self.bound = name, factor, bound
        self.scale: Tensor | None = None if scale is None else torch.tensor(float(scale))
        self.limit: Tensor | None = None
        self.ok: Tensor | None = None
        self.bad_value: Tensor | None = None
        self.bad_step: Tensor | None = None

    def update(self, value: Any, step: int) -> None:
        v = value.detach() if isinstance(value, Tensor) else torch.tensor(float(value))
        v = (v if v.dim() == 0 else v.sum()).float()
        if self.limit is None:
            if self.scale is None:  # a non-finite first value is flagged anyway: scale 1
                self.scale = torch.nan_to_num(v.abs(), nan=1.0, posinf=1.0).clamp_min(1.0)
            self.scale = self.scale.to(v.device)
            limit = torch.tensor(math.inf, device=v.device)
            if self.factor is not None:
                limit = self.scale * self.factor
            if self.bound is not None:
                limit = limit.clamp_max(self.bound)
            self.limit = limit
        ok = torch.isfinite(v) & (v.abs() <= self.limit)
        if self.ok is None:
            self.ok, self.bad_value = ok.clone(), v.clone()
            self.bad_step = torch.where(ok, 0, step)
        else:
            assert self.bad_value is not None and self.bad_step is not None
            newly_bad = self.ok & ~ok  # frozen once the flag is down
            self.bad_value = torch.where(newly_bad, v, self.bad_value)
            self.bad_step = torch.where(newly_bad, step, self.bad_step)
            self.ok.logical_and_(ok)

    def scale_value(self) -> float | None:
        return None if self.scale is None else float(self.scale)

    def describe(self, step: int) -> str:
        what = "Training loss" if self.name == "loss" else f"The task loss on the meta batch ({self.name})"
        bad, first = float(self.bad_value), int(self.bad_step)  # type: ignore[arg-type]
        if not math.isfinite(bad):
            return f"{what} became {bad} by step {step} (first non-finite at step {first})"
        terms = []
        if self.factor is not None and self.scale is not None:
            terms.append(f"divergence_factor={self.factor:g} × {float(self.scale):.4g}")
        if self.bound is not None:
            terms.append(f"divergence_bound={self.bound:g}")
        return (f"{what} diverged: {bad:.4g} at step {first}, past the divergence limit {float(self.limit):.4g} "  # type: ignore[arg-type]
                f"({', at most '.join(terms)})")


def _config_diff(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    keys = sorted(set(saved) | set(current))
    diffs = [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]
    return "; ".join(diffs)


