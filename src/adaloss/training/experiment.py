"""From a :class:`TrainConfig` to a finished run directory."""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import torch

from adaloss._rng import GLOBAL_RNG_LOCK
from adaloss.data import DatasetSplits, TaskOptionError, load_dataset, split_for_task
from adaloss.data.arrays import as_splits
from adaloss.data.loader import BatchLoader, ClassBalancedLoader
from adaloss.data.noise import add_label_noise
from adaloss.data.own import OWN_FORMATS, load_own
from adaloss.distributed import (
    Collective,
    DistributedError,
    ThreadCollective,
    ThreadGroup,
    init_distributed,
    launched_by_torchrun,
)
from adaloss.learners import create_learner
from adaloss.learners.base import RunOptimizer
from adaloss.learners.registry import default_method, takes_target_metric
from adaloss.metrics import create_metric
from adaloss.models import create_model
from adaloss.training.config import ConfigError, TrainConfig
from adaloss.training.evaluation import DEFAULT_METRICS
from adaloss.training.optim import create_optimizer, create_scheduler
from adaloss.training.rundir import check_run_dir, finished_run
from adaloss.training.seed import seed_everything
from adaloss.training.trainer import Trainer
from adaloss.typing import Device, Task

__all__ = ["build_trainer", "check_device", "default_run_dir", "load_data", "resolve_method", "task_splits", "train"]

logger = logging.getLogger("adaloss")


def data_name(config: TrainConfig) -> str:
    """The dataset's name in default folder names: ``dataset``, or for your own data
    ``<csv|npz>-<file stem>`` (``csv-flowers``), so that runs on different files do not meet."""
    if config.dataset in OWN_FORMATS and config.data_path:
        return f"{config.dataset}-{Path(config.data_path).stem}"
    return config.dataset


def default_run_dir(config: TrainConfig) -> Path:
    """``runs/<dataset>-<model>-<method>-seed<k>`` under the working directory (own data:
    ``runs/<csv|npz>-<file stem>-…``); ``method`` unset reads ``default``."""
    return Path("runs") / f"{data_name(config)}-{config.model}-{config.method or 'default'}-seed{config.seed}"


def resolve_method(config: TrainConfig, task: Task) -> TrainConfig:
    """``config`` with ``method`` set: as given, or the task's plain loss when unset
    (:func:`~adaloss.learners.default_method`: ``ce``, ``mse`` or ``contrastive``)."""
    return config if config.method is not None else config.replace(method=default_method(task))


def load_data(config: TrainConfig, *, data: object = None, seed: int | None = None) -> DatasetSplits:
    """The dataset's own splits for ``config`` (the task's split follows in :func:`task_splits`).

    ``data`` given in Python (a ``DatasetSplits``, arrays, tensors, a dict or a torch
    ``Dataset``) is converted by :func:`~adaloss.data.arrays.as_splits`; else ``dataset=csv``/``npz``
    reads ``data_path`` (:func:`~adaloss.data.own.load_own`); else the registered dataset is
    loaded from ``data_dir``. ``seed`` (default: the config's) picks the validation split;
    ``task``, when set, decides how given or read targets are taken (else it is inferred).
    """
    seed = config.seed if seed is None else seed
    if data is not None:
        return as_splits(data, task=config.task, valid_fraction=config.valid_fraction, seed=seed)
    if config.dataset in OWN_FORMATS:
        return load_own(config.dataset, config.data_path, target=config.target, test_path=config.test_path,
                        task=config.task, valid_fraction=config.valid_fraction, seed=seed)
    return load_dataset(config.dataset, data_dir=config.data_dir, download=config.download,
                        valid_fraction=config.valid_fraction, seed=seed)


def task_splits(config: TrainConfig, data: DatasetSplits) -> DatasetSplits:
    """The splits of the config's ``task`` from the dataset's own splits ``data``:
    :func:`~adaloss.data.split_for_task` with the config keys of the same names (``task``,
    ``train_classes``, ``embedding_dim``, ``minority_classes``, ``minority_fraction``, ``seed``),
    then the label noise of ``label_noise`` (:func:`~adaloss.data.noise.add_label_noise`).

    Raises a :class:`ConfigError` naming the key, what is allowed and what was received.
    """
    try:
        data = split_for_task(data, task=config.task, train_classes=config.train_classes,
                              embedding_dim=config.embedding_dim, minority_classes=config.minority_classes,
                              minority_fraction=config.minority_fraction, seed=config.seed)
    except TaskOptionError as e:
        if e.key == "task":  # the message already names the key and the dataset
            raise ConfigError(str(e)) from None
        raise ConfigError(f"Invalid config key `{e.key}` for dataset {data.name!r}: {e}") from None
    if config.label_noise is None:
        return data
    try:
        return add_label_noise(data, rate=config.label_noise, kind=config.label_noise_type or "symmetric",
                               valid=config.label_noise_valid is not False, seed=config.seed)
    except ValueError as e:
        raise ConfigError(f"Invalid config key `label_noise` for dataset {data.name!r}: {e}") from None


def _target_metric(config: TrainConfig, task: Task) -> tuple[dict[str, Any], list[str]]:
    """The method's options with the config key ``metric`` added for methods that target a
    metric (e.g. ``ala``), and the evaluation metrics with that target included.

    Raises a :class:`ConfigError` naming ``metric``, the metrics for the task and the value
    received when the metric does not fit the task — before anything is trained.
    """
    method_args = dict(config.method_args)
    method = config.method
    assert method is not None, "resolve_method() first"
    target = config.metric
    if target is not None:
        try:
            create_metric(target, task=task)
        except ValueError as e:
            raise ConfigError(f"Invalid config key `metric`: {e}") from None
        if takes_target_metric(method):
            given = method_args.get("metric")
            if given is not None and given != target:
                raise ConfigError(f"The target metric is set twice: `metric`={target!r} and "
                                  f"`method_args.metric`={given!r}; set only `metric`.")
            method_args["metric"] = target
    elif takes_target_metric(method):
        target = method_args.get("metric")
    metrics = list(config.metrics) or list(DEFAULT_METRICS[task])
    if target is not None and target not in metrics:
        metrics.append(target)
    return method_args, metrics


def check_device(device: torch.device) -> None:
    """Refuse a device this machine's torch cannot use, naming the config key ``device``.

    Raises:
        ConfigError: CUDA on a build without it or with no visible GPU, a GPU index past the
            last one, or MPS where it is not available.
    """
    if device.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise ConfigError(f"Expected `device` to be a device this torch can use, but got "
                              f"device={str(device)!r} and "
                              f"torch {torch.__version__} is built without CUDA; use device=cpu, or install a CUDA "
                              "build of torch.")
        count = torch.cuda.device_count()
        if count == 0:
            raise ConfigError(f"Expected `device` to be a device this machine has, but got device={str(device)!r} and "
                              "no CUDA GPU is visible (check CUDA_VISIBLE_DEVICES and the driver); use device=cpu.")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"Expected `device` to be one of {[f'cuda:{i}' for i in range(count)]} (or cpu), but got "
                              f"device={str(device)!r}.")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"Expected `device` to be a device this machine has, but got device={str(device)!r} and MPS "
                          "is not available here; use device=cpu.")


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(
        s in text for s in ("out of memory", "not enough memory", "can't allocate memory", "cannot allocate memory"))


def _create_model(config: TrainConfig, data: DatasetSplits, device: torch.device) -> torch.nn.Module:
    """The config's model on ``device``; a model too large for memory is a :class:`ConfigError`
    naming ``model`` and ``model_args`` instead of the allocator's traceback."""
    try:
        return create_model(config.model, data.input_shape, data.num_outputs, **config.model_args).to(device)
    except (RuntimeError, MemoryError) as e:
        if not _is_out_of_memory(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"Expected `model` and `model_args` to describe a model that fits in memory on {device}, but "
            f"model={config.model!r} with model_args={config.model_args!r} ran out of memory while it was built "
            f"({type(e).__name__}: {first[:300]}). Choose smaller `model_args` (e.g. narrower `hidden` layers) or "
            "another `model`."
        ) from None


def make_loaders(
    config: TrainConfig, data: DatasetSplits, *, seed: int, device: Device = "cpu",
    return_index: bool = False,
) -> tuple[BatchLoader | ClassBalancedLoader, BatchLoader | None]:
    """A run's training loader (class-balanced when ``samples_per_class`` is set) and the
    validation stream handed to meta-learners (``None`` without a validation split), seeded
    ``seed`` and ``seed + 1``. ``return_index``: batches carry their row indices (a learner's
    ``needs_index``)."""
    batch_size = config.batch_size
    if batch_size > len(data.train) and config.samples_per_class is None:
        logger.warning("batch_size=%d is larger than the training split (%d rows): using batches of %d",
                       batch_size, len(data.train), len(data.train))
        batch_size = len(data.train)
    train_loader: BatchLoader | ClassBalancedLoader
    if config.samples_per_class is not None:
        if return_index:
            raise ConfigError(f"method {config.method!r} needs each batch's row indices, which the class-balanced "
                              "sampler (`samples_per_class`) does not give; leave `samples_per_class` unset.")
        train_loader = ClassBalancedLoader(data.train, batch_size=config.batch_size,
                                           samples_per_class=config.samples_per_class, seed=seed,
                                           augment=data.augment, device=device)
    else:
        train_loader = BatchLoader(data.train, batch_size=batch_size, seed=seed, augment=data.augment,
                                   device=device, return_index=return_index)
    meta_loader = None
    if len(data.valid) > 0:
        meta_loader = BatchLoader(
            data.valid, batch_size=min(batch_size, len(data.valid)), seed=seed + 1, device=device
        )
    return train_loader, meta_loader


def build_trainer(config: TrainConfig, *, data: object = None,
                  collective: Collective | None = None) -> Trainer:
    """Seed, load data, build model, learner, optimiser and schedule, and wire the trainer.

    Args:
        config: the run.
        data: already-loaded splits to reuse (what :func:`load_data` gives for ``config``), or
            data in any form :func:`load_data` takes; ``None``: :func:`load_data` loads it. The
            task's split by class, if any, is applied here (:func:`task_splits`).
        collective: this worker's member of a :class:`~adaloss.distributed.ThreadGroup`
            (``None``: torchrun's process group, or one process).
    """
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    check_device(device)
    if launched_by_torchrun() and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per rank
    if collective is None:
        collective = init_distributed(backend=config.dist_backend, timeout_s=config.dist_timeout_s, device=device)
    data = task_splits(config, load_data(config, data=data))
    config = resolve_method(config, data.task)
    method_args, eval_metrics = _target_metric(config, data.task)
    with GLOBAL_RNG_LOCK:  # workers in threads share the global RNG: seed and build one at a time
        seed_everything(config.seed, deterministic=config.deterministic)
        model = _create_model(config, data, device)
        learner = create_learner(config.method or "", task=data.task, **method_args)
        seed = config.seed
        if collective.world_size > 1 and not learner.data_parallel:
            # independent workers (ALA): each its own initialisation, data order and RNG streams
            seed = config.seed + 1000 * collective.rank  # apart from the seeds of other runs
            seed_everything(seed, deterministic=config.deterministic)
            model = _create_model(config, data, device)
        elif isinstance(collective, ThreadCollective):
            raise ConfigError(f"`workers` applies to methods whose workers share what they learn (ala); method "
                              f"{config.method!r} trains one model (run it under torchrun for data parallelism).")
    optimizer = learner.create_optimizer(list(model.parameters()), RunOptimizer(
        lr=config.lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=config.weight_decay,
        steps=config.steps))
    if optimizer is not None and config.optimizer != "sgd":
        raise ConfigError(f"method {config.method!r} trains with its own optimiser and reads the run's lr, momentum, "
                          f"nesterov and weight_decay as SGD settings; leave `optimizer` at 'sgd', but got "
                          f"optimizer={config.optimizer!r}.")
    if optimizer is None:
        optimizer = create_optimizer(
            model.parameters(), config.optimizer, lr=config.lr, momentum=config.momentum,
            nesterov=config.nesterov, weight_decay=config.weight_decay, betas=config.betas,
        )
    scheduler = create_scheduler(optimizer, milestones=config.milestones, gamma=config.lr_gamma)
    train_loader, meta_loader = make_loaders(config, data, seed=seed, device=device,
                                             return_index=learner.needs_index)
    run_dir = Path(config.run_dir) if config.run_dir is not None else default_run_dir(config)
    progress = sys.stderr.isatty() if config.progress == "auto" else config.progress == "on"
    return Trainer(
        model,
        learner,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=train_loader,
        meta_loader=meta_loader,
        task=data.task,
        steps=config.steps,
        eval_splits={"valid": data.valid, "test": data.test},
        metrics=eval_metrics,
        eval_every=config.eval_every,
        eval_batch_size=config.eval_batch_size,
        log_every=config.log_every,
        checkpoint_every=config.checkpoint_every,
        run_dir=run_dir,
        progress=progress,
        device=device,
        config=config.identity(),
        # a partial, not a lambda: picklable, for searches that train models in worker processes
        model_factory=functools.partial(
            create_model, config.model, data.input_shape, data.num_outputs, **config.model_args
        ),
        keep_checkpoints=config.keep_checkpoints,
        collective=collective,
        loggers=config.loggers,
        run_config=config.to_dict(),
        divergence_factor=config.divergence_factor,
        divergence_bound=config.divergence_bound,
    )


def train(config: TrainConfig, *, resume: bool = False, overwrite: bool = False,
          data: object = None) -> dict[str, Any]:
    """Run ``config`` to the end and return its summary (also in ``<run_dir>/summary.json``), with
    ``run_dir`` added. With ``resume``, a run directory that holds the finished run of this
    configuration is left as it is and its summary returned.

    The run holds the run directory's lock throughout (a second writer gets
    :class:`~adaloss.training.rundir.RunDirectoryBusy`). The resolved configuration is written
    to ``<run_dir>/config.yaml`` once the run directory and a resumed checkpoint are accepted.

    Args:
        config: the run.
        resume: continue from ``<run_dir>/checkpoints/last.pt`` if it exists (a fresh start,
            allowed in a directory that holds a run, if not).
        overwrite: start afresh in a run directory that holds a run, removing its files (without
            ``overwrite`` or ``resume`` such a directory is a
            :class:`~adaloss.training.rundir.RunDirectoryError`).
        data: your own data instead of ``config``'s dataset: a
            :class:`~adaloss.data.DatasetSplits` (used as it is), an ``(x, y)`` pair of arrays
            or tensors, a dict ``{"x", "y", "x_test", "y_test"}`` or a map-style torch
            ``Dataset`` of ``(x, y)`` pairs — split and standardised like the built-in tables
            (:func:`~adaloss.data.arrays.as_splits`). ``config.dataset`` then only names the run.
    """
    if config.method is None:  # the task's plain loss: the task is the config's, else the data's
        if config.task is None:
            data = load_data(config, data=data)
        config = resolve_method(config, config.task or task_splits(config, data).task)  # type: ignore[arg-type]
    run_dir = config.run_dir if config.run_dir is not None else default_run_dir(config)
    # fail fast, before data and model are built; the trainer checks again under the lock
    check_run_dir(run_dir, resume=resume, overwrite=overwrite, probe=True)
    if resume:
        done = finished_run(run_dir, config.identity())
        if done is not None:
            return {**done, "run_dir": str(run_dir)}
    data = load_data(config, data=data)  # already-loaded splits are used as they are
    if config.workers is not None and config.workers > 1:
        summary = _train_workers(config, resume=resume, overwrite=overwrite, data=data)
    else:
        summary = build_trainer(config, data=data).fit(resume=resume, overwrite=overwrite)
    return {**summary, "run_dir": str(run_dir)}


def _train_workers(config: TrainConfig, *, resume: bool, overwrite: bool, data: DatasetSplits) -> dict[str, Any]:
    """``workers`` independent trainings in this process, one thread each, sharing what the
    method pools (ALA's policy) through a :class:`~adaloss.distributed.ThreadGroup`: the same
    computation as that many torchrun ranks. Worker 0 evaluates, logs and writes the summary."""
    if launched_by_torchrun():
        raise ConfigError("`workers` runs several workers in one process; under torchrun every rank is already a "
                          f"worker. Leave `workers` unset, but got workers={config.workers}.")
    assert config.workers is not None
    group = ThreadGroup(config.workers, timeout_s=config.dist_timeout_s)
    results: list[Any] = [None] * config.workers

    def work(rank: int) -> None:
        try:
            trainer = build_trainer(config, data=data, collective=group.members[rank])
            results[rank] = trainer.fit(resume=resume, overwrite=overwrite)
        except BaseException as e:  # noqa: BLE001 - handed to the caller below
            results[rank] = e
            group.abort()

    threads = [threading.Thread(target=work, args=(r,), name=f"adaloss-worker{r}") for r in range(config.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # the first failure is the cause; the others' DistributedError only reports the abort
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise next((e for e in errors if not isinstance(e, DistributedError)), errors[0])
    return results[0]
