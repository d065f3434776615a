"""The training loop, its configuration, checkpoints, seeding and the comparison harness."""

from __future__ import annotations

from adaloss.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from adaloss.records import RunResult, read_jsonl
from adaloss.training.compare import compare, format_markdown, summarise, write_csv
from adaloss.training.config import ConfigError, TrainConfig, load_config, parse_overrides
from adaloss.training.evaluation import evaluate
from adaloss.training.experiment import build_trainer, default_run_dir, train
from adaloss.training.optim import create_optimizer, create_scheduler
from adaloss.training.pretrain import pretrain_policy
from adaloss.training.rundir import RunDirectoryBusy, RunDirectoryError
from adaloss.training.seed import get_rng_state, seed_everything, set_rng_state
from adaloss.training.sinks import JsonlSink, MetricSink, TensorBoardSink
from adaloss.training.trainer import Trainer, TrainingDiverged

__all__ = [
    "CheckpointError",
    "ConfigError",
    "JsonlSink",
    "MetricSink",
    "RunDirectoryBusy",
    "RunDirectoryError",
    "RunResult",
    "TensorBoardSink",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "build_trainer",
    "compare",
    "create_optimizer",
    "create_scheduler",
    "default_run_dir",
    "evaluate",
    "format_markdown",
    "get_rng_state",
    "load_checkpoint",
    "load_config",
    "parse_overrides",
    "pretrain_policy",
    "read_jsonl",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
    "summarise",
    "train",
    "write_csv",
]
