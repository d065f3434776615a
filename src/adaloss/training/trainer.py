"""The step loop shared by every method: data, learner step, schedule, evaluation and logging
triggers, and the state a checkpoint holds.

One concern — the loop and its resumable state; what it drives has its own module: the run
directory (:mod:`.rundir`), the divergence monitor (:mod:`.divergence`), the metric sinks
(:mod:`.sinks`) and evaluation (:mod:`.evaluation`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
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
from adaloss.data.loader import BatchLoader, ClassBalancedLoader
from adaloss.data.types import TensorSplit
from adaloss.distributed import Collective, LocalCollective, ShardedBatches
from adaloss.learners.base import Learner, TrainContext, TrainingDiverged
from adaloss.metrics import create_metric
from adaloss.optim import eval_weights, final_weights, train_weights
from adaloss.training.divergence import DivergenceMonitor, initial_task_loss, non_finite_parameters
from adaloss.training.evaluation import DEFAULT_METRICS, evaluate
from adaloss.training.interrupt import Interrupted, stop_requested
from adaloss.training.rundir import RunDirectory, config_diff, finished_run, write_text_atomic
from adaloss.training.seed import get_rng_state, set_rng_state
from adaloss.training.sinks import LOGGERS, MetricSink, RunLog, tensorboard_available
from adaloss.typing import Device, StateDict, Task

__all__ = ["TrainingDiverged", "Trainer", "evaluate"]

logger = logging.getLogger("adaloss")

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
        self.divergence = DivergenceMonitor(factor=divergence_factor, bound=divergence_bound)
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
        self.run_config = dict(run_config) if run_config is not None else None
        self.step = 0
        self.elapsed_s = 0.0
        self._mark: float | None = None
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}
        self.log = RunLog(self.run_dir, loggers=self.loggers, extra=self.extra_sinks, writer=self.is_main)
        self._bar: Any = None
        self._directory = RunDirectory(self.run_dir, collective=self.collective, writer=self.is_main)
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
            "divergence_scales": self.divergence.state_dict(),
        }

    def load_state_dict(self, state: StateDict) -> None:
        """Restore :meth:`state_dict`; refuses a checkpoint taken under a different configuration."""
        if self.config is not None and state.get("config") is not None:
            saved = json.loads(state["config"])
            diff = config_diff(saved, self.config)
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
        self.divergence.load_state_dict(state.get("divergence_scales"))

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
            done = finished_run(self.run_dir, self.config)
            if done is not None:
                return done
        resumed = False
        directory = self._directory
        try:
            directory.claim(resume=resume, overwrite=overwrite)
            state = None
            if resume and ckpt is not None:
                state = self._worker_checkpoint(ckpt) if self.workers else (
                    load_checkpoint(ckpt, map_location=self.device) if ckpt.exists() else None)
            resumed = state is not None
            if state is not None:
                self.load_state_dict(state)
                self._checkpoint_step = self.step
                logger.info("resumed from %s at step %d", ckpt, self.step)
            elif resume:
                directory.refuse_another_recorded_run(self.config)
            directory.prepare(overwrite=overwrite and not resumed, run_config=self.run_config)
        except BaseException:
            directory.release()
            raise
        self._mark = time.perf_counter()
        try:
            self.log.open(truncate_after_step=self.step if resumed else None)
            if not resumed and "meta_loss" not in self.divergence.scales:
                scale = initial_task_loss(self.model, self.eval_splits.get("valid"), self.task, device=self.device)
                if scale is not None:
                    self.divergence.scales["meta_loss"] = scale
            train_weights(self.optimizer)  # a schedule-free optimiser starts in eval mode
            if not resumed or not self.learner.prepared:  # a run killed in prepare() continues it
                prep = self.learner.prepare()
                if prep:
                    self.log.write({"step": 0, **{f"prepare_{k}": v for k, v in prep.items()}})
                self._snapshot()
            self._bar = tqdm(
                total=self.steps, initial=self.step, disable=not self.progress, dynamic_ncols=True,
                file=sys.stderr, desc="train", leave=False,
            )
            self.run(self.steps - self.step)
            self.check_finite()
            final = self.evaluate() if self.is_main else {}
            final_weights(self.optimizer)  # the model keeps the weights it was evaluated at
            self._snapshot()
            self._tick()
            summary = {
                "step": self.step,
                "final": final,
                "wall_time_s": self.elapsed_s,
                "host": socket.gethostname(),
                "config": self.config,
            }
            self.log.write({"step": self.step, **final})
            if self.run_dir is not None and self.is_main:
                write_text_atomic(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
                self.log.write_figures(self.step)
            return summary
        except BaseException:
            if not resumed and self.step == 0 and self._checkpoint_step is None:
                self.log.close()
                directory.restore()  # failed before its first step: leave the directory as found
            raise
        finally:
            self.close()

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
        if not self.log.opened:
            self.log.open(truncate_after_step=None)
        train_weights(self.optimizer)
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
            self.divergence.observe(out, self.step)
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
                self.log.write(record)
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
            self.save_checkpoint()  # checks for divergence first
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
                with eval_weights(self.optimizer):
                    values = evaluate(self.model, split, self.metrics, batch_size=self.eval_batch_size,
                                      device=self.device)
            finally:
                handle.remove()
            if finite and not bool(torch.stack(finite).all()):
                raise TrainingDiverged(f"The model's outputs on the {split_name} split are non-finite at step "
                                       f"{self.step}{self._kept_checkpoint()}.")
            results.update({f"{split_name}_{k}": v for k, v in values.items()})
        return results

    # ------------------------------------------------------------------ divergence
    def check_finite(self, *, weights: bool = False) -> None:
        """Raise :class:`TrainingDiverged` if a watched scalar of a step since the start (or resume)
        was non-finite or past the divergence limit (:class:`~adaloss.training.divergence.DivergenceMonitor`),
        or (``weights``) a floating-point parameter or buffer of the model is non-finite.

        One host synchronisation; the trainer calls it at logging, evaluation and checkpoint
        steps and at the end.
        """
        problem = self.divergence.check(self.step)
        if problem is not None:
            raise TrainingDiverged(f"{problem}{self._kept_checkpoint()}.")
        if weights:
            bad = non_finite_parameters(self.model)
            if bad:
                raise TrainingDiverged(f"Model parameters became non-finite by step {self.step} ({', '.join(bad[:5])}"
                                       f"{', ...' if len(bad) > 5 else ''}){self._kept_checkpoint()}.")

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
        self.log.snapshot({"step": self.step, **snap})

    def close(self) -> None:
        """Close the progress bar and the metric sinks, and release the run directory's lock."""
        self._mark = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        try:
            self.log.close()
        finally:
            self._directory.release()
