"""Methods × seeds on one task, with finished runs reused, summarised as mean ± std tables."""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from adaloss.data import DatasetSplits
from adaloss.executors import Executor, LocalExecutor, Resources, TaskFailed, create_executor
from adaloss.executors.base import ExecutorName, host_name
from adaloss.methods.base import TrainingDiverged
from adaloss.records import RunResult
from adaloss.training.config import TrainConfig
from adaloss.training.experiment import load_data, train
from adaloss.training.rundir import RunDirectoryError, finished_summary, write_text_atomic

__all__ = ["BASELINES", "RunResult", "compare", "compare_key", "format_markdown", "plan", "summarise", "welch_p_value",
           "write_csv"]

logger = logging.getLogger("adaloss")


def compare_key(base: TrainConfig) -> str:
    """A short hash of a comparison's full configuration: ``base``'s keys (seed aside) and the
    library defaults of every registered method — the default folder of ``adaloss compare`` ends
    with it, so that a changed key, or another adaloss's defaults, never meets earlier runs."""
    import hashlib

    from adaloss.learners.registry import METHODS, method_defaults

    ident = {k: v for k, v in base.identity().items() if k not in ("seed", "method", "method_defaults")}
    ident["method_defaults"] = {m: method_defaults(m) for m in sorted(METHODS)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:8]


def _run_config(base: TrainConfig, method: str, seed: int, out: Path) -> TrainConfig:
    return base.replace(method=method, seed=seed, run_dir=str(out / method / f"seed{seed}"),
                        method_args=base.method_args.get(method, {}))


@dataclass(frozen=True)
class _Planned:
    """One run of a comparison as its folder stands: its summary if it finished with this
    configuration, else the keys in which a run recorded there differs (empty: none)."""

    method: str
    seed: int
    config: TrainConfig
    summary: dict[str, Any] | None
    stale: str


def _survey(base: TrainConfig, methods: Sequence[str], seeds: Sequence[int], out: Path) -> list[_Planned]:
    runs = []
    for method in methods:
        for seed in seeds:
            cfg = _run_config(base, method, seed, out)
            summary = finished_summary(cfg.run_dir, cfg.identity())  # type: ignore[arg-type]
            stale = "" if summary is not None else _recorded_elsewise(Path(cfg.run_dir), cfg)  # type: ignore[arg-type]
            runs.append(_Planned(method, seed, cfg, summary, stale))
    return runs


def _plan_of(runs: Sequence[_Planned]) -> dict[str, list]:
    found: dict[str, list] = {"reuse": [], "train": [], "conflicts": []}
    for r in runs:
        if r.summary is not None:
            found["reuse"].append((r.method, r.seed))
        elif r.stale:
            found["conflicts"].append((r.method, r.seed, r.stale))
        else:
            found["train"].append((r.method, r.seed))
    return found


def plan(base: TrainConfig, *, methods: Sequence[str], seeds: Sequence[int], out_dir: str | Path) -> dict[str, list]:
    """What :func:`compare` would do: the ``(method, seed)`` runs it reuses (finished with this
    configuration), ``train`` (new, or resumed from a checkpoint) and ``conflicts``: run directories
    that hold a run of another configuration, as ``(method, seed, differing keys)``."""
    return _plan_of(_survey(base, methods, seeds, Path(out_dir)))


def compare(
    base: TrainConfig,
    *,
    methods: Sequence[str],
    seeds: Sequence[int],
    out_dir: str | Path,
    on_result: Callable[[RunResult], None] | None = None,
    data: object = None,
    overwrite: bool = False,
    on_plan: Callable[[dict[str, list]], None] | None = None,
    executor: Executor | ExecutorName | None = None,
) -> list[RunResult]:
    """Train every method with every seed on ``base``'s task; reuse runs already finished.

    ``base.method_args`` is keyed by method name here (``{"adalfl": {"init_steps": 250}}``):
    each method gets its own options. A run is reused when
    ``<out_dir>/<method>/seed<k>/summary.json`` exists and its recorded configuration (the
    library's method defaults included) equals the one wanted; a run killed part-way resumes
    from its checkpoint. A run directory that holds a run of another configuration is never
    replaced unless ``overwrite``: a :class:`~adaloss.training.rundir.RunDirectoryError` naming
    the runs and the keys that differ is raised before anything is trained. A run that diverges
    (:class:`~adaloss.learners.TrainingDiverged`) does not stop the comparison: it is recorded in
    ``diverged.json`` beside its checkpoints (and reused like a finished run), reported with its
    cause, counted per method and left out of the means.

    ``data``: your own data instead of ``base``'s dataset, in any form ``adaloss.train`` takes
    (:func:`~adaloss.training.experiment.load_data`); arrays, tensors and datasets get each seed's own
    validation split, a ``DatasetSplits`` is used as it is.
    A finished run is recognised by its configuration only, so give other data another
    ``out_dir``. ``on_plan`` receives :func:`plan`'s answer before anything is trained (the folder
    is read once for both).

    ``executor``: where the runs train — ``"local"`` (default: one after another in this process),
    ``"ray"`` or ``"slurm"`` (:func:`~adaloss.executors.create_executor` with its defaults), or an
    :class:`~adaloss.executors.Executor`. Each run is one task declaring ``threads`` CPUs and a GPU
    for ``device=cuda``; it writes into the same run directory (with remote executors, on a shared
    file system), keeps its lock, identity and resume rules, and a task whose worker dies is
    retried, resuming from its last checkpoint. A run that still fails comes back with ``failed``
    set (left out of the means) instead of stopping the comparison; with the local executor an
    error stops it, as a killed process would. ``on_result`` is called for each run as it ends (reused
    runs first); the list returned is in the order of ``methods`` × ``seeds``.
    """
    if not methods:
        raise ValueError("Expected `methods` to name at least one method, but got an empty list.")
    if not seeds:
        raise ValueError("Expected `seeds` to list at least one seed, but got an empty list.")
    from adaloss.learners import METHODS

    stray = sorted(k for k, v in base.method_args.items() if k not in METHODS or not isinstance(v, dict))
    if stray:
        raise ValueError(
            "In a comparison `method_args` is keyed by method (e.g. method_args.adalfl.init_steps=250); "
            f"expected method names {sorted(METHODS)} with mapping values, but got {stray}."
        )
    out = Path(out_dir)
    runs = _survey(base, methods, seeds, out)
    found = _plan_of(runs)
    if on_plan is not None:
        on_plan(found)
    conflicts = found["conflicts"]
    if conflicts and not overwrite:
        listed = "; ".join(f"{out / m / f'seed{k}'} ({keys})" for m, k, keys in conflicts[:5])
        raise RunDirectoryError(
            f"{len(conflicts)} run director{'ies hold runs' if len(conflicts) > 1 else 'y holds a run'} of another "
            f"configuration, which this comparison would replace: {listed}{' ...' if len(conflicts) > 5 else ''}. "
            "Choose another output folder (the default one is keyed by the configuration), or replace them with "
            "--overwrite (overwrite=True)."
        )
    runner = create_executor(executor)
    todo = [r for r in runs if r.summary is None]
    local = isinstance(runner, LocalExecutor)
    data_cache: dict[int, DatasetSplits] = {}

    def task(r: _Planned) -> tuple[TrainConfig, object]:
        if not local:  # loaded by the task, where it runs (your own arrays travel with it)
            return _shared_paths(r.config), data
        if r.seed not in data_cache:
            data_cache[r.seed] = load_data(r.config, data=data, seed=r.seed)
        return r.config, data_cache[r.seed]

    results: dict[tuple[str, int], RunResult] = {}
    for r in runs:
        if r.summary is not None:
            reused = RunResult(r.method, r.seed, r.summary["final"], float(r.summary["wall_time_s"]),
                               Path(r.config.run_dir or ""), True, r.summary.get("diverged"),
                               host=r.summary.get("host"))
            results[(r.method, r.seed)] = reused
            if on_result is not None:
                on_result(reused)
    bar = tqdm(total=len(todo), disable=not _shows_progress(base) or not todo, desc="runs", unit="run",
               dynamic_ncols=True, file=sys.stderr, leave=False)

    def done(i: int, outcome: dict[str, Any] | TaskFailed) -> None:
        r = todo[i]
        run_dir = Path(r.config.run_dir or "")
        if isinstance(outcome, TaskFailed):
            result = RunResult(r.method, r.seed, {}, 0.0, run_dir, False, failed=outcome.error)
            logger.warning("%s seed %d failed after %d attempt(s): %s", r.method, r.seed, outcome.attempts,
                           outcome.error)
        else:
            result = RunResult(r.method, r.seed, outcome["final"], float(outcome["wall_time_s"]), run_dir, False,
                               outcome.get("diverged"), host=outcome.get("host"))
        results[(r.method, r.seed)] = result
        bar.update(1)
        if on_result is not None:
            on_result(result)

    try:
        if todo:
            resources = Resources(cpus=base.threads or 1, gpus=1 if str(base.device).startswith("cuda") else 0)
            runner.map(_train_task, [task(r) for r in todo], resources=resources, on_done=done)
    finally:
        bar.close()
        if executor is None or isinstance(executor, str):
            runner.close()
    return [results[(r.method, r.seed)] for r in runs if (r.method, r.seed) in results]


def _shows_progress(base: TrainConfig) -> bool:
    return sys.stderr.isatty() if base.progress == "auto" else base.progress == "on"


def _shared_paths(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its run directory and data folder absolute: a task elsewhere reads and writes
    the same places on a shared file system."""
    changes: dict[str, Any] = {"run_dir": str(Path(cfg.run_dir).resolve())} if cfg.run_dir else {}
    if cfg.data_dir is not None:
        changes["data_dir"] = str(Path(cfg.data_dir).expanduser().resolve())
    return cfg.replace(**changes) if changes else cfg


def _train_task(task: tuple[TrainConfig, object]) -> dict[str, Any]:
    """One run of a comparison, where an executor runs it: continued from its checkpoint if its
    directory holds this configuration's run, replaced if it holds another's (the comparison has
    refused that unless asked to overwrite), recorded as diverged if it diverges."""
    cfg, data = task
    run_dir = Path(cfg.run_dir)  # type: ignore[arg-type]
    stale = _recorded_elsewise(run_dir, cfg)
    if stale:
        logger.warning("%s seed %d: replacing the run in %s, recorded with another configuration (%s), as asked "
                       "(overwrite)", cfg.method, cfg.seed, run_dir, stale)
    logger.info("training %s seed %d -> %s", cfg.method, cfg.seed, run_dir)
    start = time.perf_counter()
    try:
        summary = train(cfg, resume=not stale, overwrite=bool(stale), data=data)
    except TrainingDiverged as e:
        summary = {"config": cfg.identity(), "diverged": str(e), "final": {},
                   "wall_time_s": time.perf_counter() - start, "host": host_name()}
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / _DIVERGED, json.dumps(summary, indent=2))  # a kill leaves none or all
        logger.warning("%s seed %d diverged: %s", cfg.method, cfg.seed, e)
    return {"final": summary["final"], "wall_time_s": summary["wall_time_s"], "diverged": summary.get("diverged"),
            "host": summary.get("host", host_name())}


_DIVERGED = "diverged.json"


def _recorded_elsewise(run_dir: Path, cfg: TrainConfig) -> str:
    """The configuration keys in which the run recorded in ``run_dir`` (its summary, divergence
    record or checkpoint) differs from ``cfg``; empty when it does not, or holds no run."""
    from adaloss.checkpoint import CheckpointError, load_checkpoint

    wanted = cfg.identity()
    recorded: list[Any] = []
    for name in ("summary.json", _DIVERGED):
        try:
            recorded.append(json.loads((run_dir / name).read_text()).get("config"))
        except (OSError, ValueError, AttributeError):
            continue
    for ckpt in (run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "rank0" / "last.pt"):
        if ckpt.is_file():
            try:
                text = load_checkpoint(ckpt).get("config")
            except CheckpointError:
                continue
            recorded.append(json.loads(text) if isinstance(text, str) else None)
    for config in recorded:
        if isinstance(config, dict) and config != wanted:
            keys = sorted(k for k in set(config) | set(wanted) if config.get(k) != wanted.get(k))
            return ", ".join(keys)
    return ""


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


#: Handcrafted losses a comparison is tested against, in order of preference.
BASELINES = ("ce", "mse", "label_smoothing", "focal")


def welch_p_value(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided Welch t-test p-value of equal means (unequal variances); ``None`` when undefined."""
    if len(a) < 2 or len(b) < 2:
        return None
    if statistics.variance(a) == 0.0 and statistics.variance(b) == 0.0:
        return None if statistics.fmean(a) == statistics.fmean(b) else 0.0
    from scipy import stats

    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def summarise(results: Sequence[RunResult], *, baseline: str | None = None,
              test_key: str | None = None) -> list[dict[str, Any]]:
    """One row per method: mean and sample std (n−1) over seeds of every final metric and wall time.

    ``seeds`` counts the runs that finished, ``diverged`` those that stopped early (left out of the
    metric means, kept in the wall time: their compute was spent), ``failed`` (present when some
    did) those whose task failed for good (left out of both). Each row also carries
    ``p_value``: the Welch t-test of its final test metric (``test_key``; default: the first
    ``test_*`` key) against ``baseline`` (default: the first of :data:`BASELINES` present, else the
    first method), over seeds. A ``test_key`` given is recorded as ``p_key`` (the table names it).
    """
    methods = list(dict.fromkeys(r.method for r in results))
    if baseline is None:
        baseline = next((m for m in BASELINES if m in methods), methods[0] if methods else None)
    elif baseline not in methods:
        raise ValueError(f"Expected `baseline` to be one of {methods}, but got {baseline!r}.")
    chosen = test_key
    if test_key is None:
        test_key = next((k for r in results for k in r.final if k.startswith("test_")), None)
    elif not any(test_key in r.final for r in results):
        raise ValueError(f"Expected `test_key` to be one of the runs' final metrics "
                         f"{sorted({k for r in results for k in r.final})}, but got {test_key!r}.")

    def values(method: str, key: str) -> list[float]:
        return [r.final[key] for r in results if r.method == method and r.final.get(key) is not None]

    rows = []
    for method in methods:
        runs = [r for r in results if r.method == method and r.failed is None]
        finished = [r for r in runs if r.diverged is None]
        row: dict[str, Any] = {"method": method, "seeds": len(finished), "diverged": len(runs) - len(finished)}
        failed = sum(1 for r in results if r.method == method and r.failed is not None)
        if failed:
            row["failed"] = failed
        for key in (finished[0].final if finished else {}):
            vals = values(method, key)
            if vals:
                row[f"{key}_mean"], row[f"{key}_std"] = _mean_std(vals)
        row["wall_time_s_mean"], row["wall_time_s_std"] = (
            _mean_std([r.wall_time_s for r in runs]) if runs else (math.nan, math.nan))
        row["baseline"] = baseline
        if chosen is not None:
            row["p_key"] = chosen
        row["p_value"] = (
            None if test_key is None or baseline is None or method == baseline
            else welch_p_value(values(method, test_key), values(baseline, test_key))
        )
        rows.append(row)
    return rows


def _metric_of(key: str) -> str:
    return key.split("_", 1)[1] if "_" in key else key


def format_markdown(rows: Sequence[dict[str, Any]], *, keys: Sequence[str] | None = None) -> str:
    """A markdown table of ``mean ± std`` per method; error rates are shown in percent."""
    if not rows:
        return ""
    if keys is None:
        keys = [k[: -len("_mean")] for k in rows[0] if k.endswith("_mean") and k != "wall_time_s_mean"]
    headers = ["method", "seeds"]
    for k in keys:
        headers.append(f"{k} (%)" if _metric_of(k) == "error" else k)
    headers.append("wall time (s)")
    baseline = rows[0].get("baseline")
    if baseline is not None:
        on = f", {rows[0]['p_key']}" if rows[0].get("p_key") else ""
        headers.append(f"p vs {baseline} (Welch{on})")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        diverged = (f" (+{row['diverged']} diverged)" if row.get("diverged") else "") + (
            f" (+{row['failed']} failed)" if row.get("failed") else "")
        cells = [str(row["method"]), str(row["seeds"]) + diverged]
        for k in keys:
            scale = 100.0 if _metric_of(k) == "error" else 1.0
            mean, std = row.get(f"{k}_mean"), row.get(f"{k}_std")
            cells.append("n/a" if mean is None or std is None
                         else f"{scale * mean:.{_digits(k)}f} ± {scale * std:.{_digits(k)}f}")
        cells.append("n/a" if math.isnan(row["wall_time_s_mean"])
                     else f"{row['wall_time_s_mean']:.1f} ± {row['wall_time_s_std']:.1f}")
        if baseline is not None:
            p = row.get("p_value")
            cells.append("—" if row["method"] == baseline else ("n/a" if p is None else f"{p:.3g}"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _digits(key: str) -> int:
    return 2 if _metric_of(key) == "error" else 4


def write_csv(results: Sequence[RunResult], rows: Sequence[dict[str, Any]], out_dir: str | Path) -> tuple[Path, Path]:
    """``runs.csv`` (one line per run) and ``summary.csv`` (one line per method) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs_path, summary_path = out / "runs.csv", out / "summary.csv"
    metric_keys = list(dict.fromkeys(k for r in results for k in r.final))
    with runs_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "seed", *metric_keys, "wall_time_s", "host", "run_dir", "diverged", "failed"])
        for r in results:
            w.writerow([r.method, r.seed, *[r.final.get(k) for k in metric_keys], f"{r.wall_time_s:.3f}",
                        r.host or "", str(r.run_dir), r.diverged or "", r.failed or ""])
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with summary_path.open("w", newline="") as f:
        dw = csv.DictWriter(f, fieldnames=fields)
        dw.writeheader()
        for row in rows:
            dw.writerow({k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in row.items()})
    return runs_path, summary_path
