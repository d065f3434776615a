"""A policy for ALA trained over several short runs, to start later runs from (Huang et al., ICML
2019, Sec. 4: policies learned on some runs transfer to others)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from adaloss._validation import check_int
from adaloss.methods.ala.policy import POLICY_FILE, load_policy
from adaloss.training.config import ConfigError, TrainConfig
from adaloss.training.experiment import train

__all__ = ["PRETRAIN_SEEDS", "pretrain_policy"]

logger = logging.getLogger("adaloss")

#: the seeds of the pretraining runs when none are given: apart from the protocols' evaluation seeds (0–19)
PRETRAIN_SEEDS = 100


def _work_dir(base: TrainConfig, runs: int, seeds: Sequence[int], datasets: Sequence[str]) -> Path:
    ident = {k: v for k, v in base.identity().items() if k != "seed"}
    key = json.dumps({"config": ident, "runs": runs, "seeds": list(seeds), "datasets": list(datasets)},
                     sort_keys=True)
    return Path("runs") / "ala-pretrain" / hashlib.sha256(key.encode()).hexdigest()[:8]


def pretrain_policy(
    base: TrainConfig,
    *,
    runs: int,
    out: str | Path,
    seeds: Sequence[int] | None = None,
    datasets: Sequence[str] | None = None,
    work_dir: str | Path | None = None,
    on_run: Callable[[int, dict[str, Any]], None] | None = None,
) -> Path:
    """Train ALA's policy over ``runs`` short runs of ``base`` — run ``k`` starts from the policy
    run ``k − 1`` ended with, and keeps training it — and write the last one to ``out``
    (``method_args.policy`` of a later run starts from it).

    Each run has its own seed (``seeds``; default ``100, 101, …``, apart from the protocols'
    evaluation seeds) and, with ``datasets``, trains on them in turn (a policy meant to transfer to
    a dataset it did not see). The runs train into ``work_dir/run<k>`` (default
    ``runs/ala-pretrain/<hash of the settings>``): a pretraining killed part-way continues from its
    last checkpoint when called again, and finished runs are reused.

    Args:
        base: an ALA run (``method=ala`` or unset); its ``method_args`` are ALA's options, and a
            ``policy`` there is where the first run starts.
        runs: how many runs.
        out: the policy file to write.
        seeds: one seed per run.
        datasets: dataset names used in turn (default: ``base``'s).
        work_dir: where the runs train.
        on_run: called as ``on_run(k, summary)`` after each run.

    Raises:
        ConfigError: another method, ``train_policy`` off, or seeds that do not match ``runs``.
    """
    runs = check_int("runs", runs, minimum=1)
    if base.method not in (None, "ala"):
        raise ConfigError(f"Policy pretraining trains ALA's policy: `method` must be 'ala' (or unset), but got "
                          f"{base.method!r}.")
    if base.method_args.get("train_policy") is False:
        raise ConfigError("Policy pretraining trains the policy, but got method_args.train_policy=false.")
    seeds = list(seeds) if seeds is not None else [PRETRAIN_SEEDS + k for k in range(runs)]
    if len(seeds) != runs or len(set(seeds)) != runs:
        raise ConfigError(f"Expected {runs} distinct `seeds` (one per run), but got {seeds}.")
    datasets = list(datasets) if datasets else [base.dataset]
    folder = Path(work_dir) if work_dir is not None else _work_dir(base, runs, seeds, datasets)
    policy = base.method_args.get("policy")
    for k, seed in enumerate(seeds):
        args = {**base.method_args, **({"policy": str(policy)} if policy is not None else {})}
        cfg = base.replace(method="ala", seed=seed, dataset=datasets[k % len(datasets)],
                           run_dir=str(folder / f"run{k}"), method_args=args)
        logger.info("ALA policy pretraining: run %d/%d (seed %d, %s) -> %s", k + 1, runs, seed, cfg.dataset,
                    cfg.run_dir)
        summary = train(cfg, resume=True)
        policy = folder / f"run{k}" / POLICY_FILE
        if not policy.is_file():
            raise FileNotFoundError(f"The pretraining run {cfg.run_dir} wrote no {POLICY_FILE}.")
        if on_run is not None:
            on_run(k, summary)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.copyfile(policy, tmp)  # type: ignore[arg-type]
    tmp.replace(out)
    load_policy(out)  # it reads back
    return out
