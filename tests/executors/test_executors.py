"""Executors for independent trainings: ``compare`` and TaylorGLO's CMA-ES through a local Ray
(2 CPUs) and submitit's local executor give the same numbers as in this process, a task killed
mid-run resumes from its checkpoint to the same result, and bad input is refused before anything runs."""

from __future__ import annotations

import csv
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from adaloss.cli import main
from adaloss.executors import ExecutorError, LocalExecutor, TaskFailed, create_executor
from adaloss.methods.search import cma_search
from adaloss.training import TrainConfig
from adaloss.training.compare import compare

TINY = {"steps": 60, "eval_every": 30, "log_every": 30, "checkpoint_every": 20, "threads": 1, "progress": "off",
        "model_args": {"hidden": [16]}}


def fitness(x: np.ndarray, seed: int) -> float:
    """A noisy sphere: deterministic for its seed."""
    rng = np.random.default_rng(seed)
    return float(np.sum((x - 0.5) ** 2) + 0.01 * rng.standard_normal())


def _square(x: int) -> int:
    return x * x


def _scaled(shared: int, x: int) -> int:
    return shared * x


def _fails(x: int) -> int:
    raise RuntimeError(f"task {x} fails")


def _rows(path: Path) -> dict[tuple[str, str], tuple[str, str]]:
    with path.open() as f:
        return {(r["method"], r["seed"]): (r["valid_error"], r["test_error"]) for r in csv.DictReader(f)}


# ---------------------------------------------------------------------------- in this process, and bad input
def test_the_local_executor_runs_in_order_and_errors_propagate() -> None:
    seen: list[tuple[int, int]] = []
    ex = LocalExecutor()
    assert ex.map(_square, [1, 2, 3], on_done=lambda i, r: seen.append((i, r))) == [1, 4, 9]
    assert seen == [(0, 1), (1, 4), (2, 9)]
    assert ex.map(_scaled, [1, 2], shared=10) == [10, 20]
    with pytest.raises(RuntimeError, match="task 1 fails"):
        ex.map(_fails, [1])


def test_create_executor_names_what_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"`executor` to be one of \['local', 'ray', 'slurm'\], but got 'dask'"):
        create_executor("dask")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\['address'\] apply to the ray or slurm executor"):
        create_executor("local", address="h:1")
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['partition'\] for executor='ray'"):
        create_executor("ray", partition="gpu")
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ExecutorError, match=r"executor='ray' needs the package 'ray'.*\.\[ray\]"):
        create_executor("ray")
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(ExecutorError, match=r"executor='slurm' needs the package 'submitit'.*\.\[slurm\]"):
        create_executor("slurm")


def test_the_cli_refuses_bad_executor_input_before_anything_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    base = ["compare", "--methods", "ce", "--seeds", "0", "--out", str(out), "steps=5"]
    assert main([*base, "--executor", "ray", "--ray-address", "127.0.0.1:1"]) == 2
    assert "Cannot reach the Ray cluster at address='127.0.0.1:1'" in capsys.readouterr().err
    assert main([*base, "--slurm-partition", "gpu"]) == 2
    assert "--slurm-partition apply to --executor slurm, but got --executor local" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "submitit", None)
    assert main([*base, "--executor", "slurm", "--slurm-partition", "gpu"]) == 2
    assert "needs the package 'submitit'" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def local_ray():  # type: ignore[no-untyped-def]
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


def _kill_when_checkpointed(run_dir: Path, process_marker: str, killed: list[int]) -> threading.Thread:
    """Kill (SIGKILL) the worker process running the task once the run has its first checkpoint."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (run_dir / "checkpoints" / "last.pt").exists():
            time.sleep(0.05)
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if process_marker in cmdline:
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_compare_through_ray_gives_the_local_numbers(tmp_path: Path, local_ray) -> None:  # type: ignore[no-untyped-def]
    from adaloss.cli import main as cli

    common = ["compare", "--methods", "ce,focal", "--seeds", "0,1", "steps=40", "eval_every=20", "threads=1",
              "model_args.hidden=[16]"]
    assert cli([*common, "--out", str(tmp_path / "local")]) == 0
    assert cli([*common, "--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    assert (tmp_path / "ray" / "summary.csv").read_text() != ""
    assert _rows(tmp_path / "ray" / "runs.csv") == _rows(tmp_path / "local" / "runs.csv")
    with (tmp_path / "ray" / "summary.csv").open() as a, (tmp_path / "local" / "summary.csv").open() as b:
        strip = {"wall_time_s_mean", "wall_time_s_std"}
        assert [{k: v for k, v in r.items() if k not in strip} for r in csv.DictReader(a)] == \
            [{k: v for k, v in r.items() if k not in strip} for r in csv.DictReader(b)]
    with (tmp_path / "ray" / "runs.csv").open() as f:
        assert all(r["host"] for r in csv.DictReader(f))


@pytest.mark.slow
def test_a_ray_task_killed_mid_run_resumes_to_the_uninterrupted_result(tmp_path: Path, local_ray) -> None:  # type: ignore[no-untyped-def]
    cfg = TrainConfig(**{**TINY, "steps": 400, "checkpoint_every": 50})  # type: ignore[arg-type]
    plain = compare(cfg, methods=["ce"], seeds=[0], out_dir=tmp_path / "local")
    killed: list[int] = []
    watcher = _kill_when_checkpointed(tmp_path / "ray" / "ce" / "seed0", "ray::call", killed)
    executor = create_executor("ray", max_retries=2)
    resumed = compare(cfg, methods=["ce"], seeds=[0], out_dir=tmp_path / "ray", executor=executor)
    watcher.join(timeout=5)
    assert killed, "the task finished before it could be killed"
    assert resumed[0].failed is None and resumed[0].final == plain[0].final
    events = (tmp_path / "ray" / "ce" / "seed0" / "metrics.jsonl").read_text()
    assert events.count('"step": 400') == 1


@pytest.mark.slow
def test_a_taylorglo_search_through_ray_equals_one_worker(local_ray) -> None:  # type: ignore[no-untyped-def]
    local_ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    kw = {"sigma": 1.0, "popsize": 6, "generations": 3, "seed": 4}
    one = cma_search(fitness, np.zeros(5), workers=1, **kw)
    remote = cma_search(fitness, np.zeros(5), executor=create_executor("ray"), **kw)
    assert remote.fitness == one.fitness and remote.history == one.history
    np.testing.assert_array_equal(remote.x, one.x)


@pytest.mark.slow
def test_a_task_that_raises_is_reported_as_failed_not_retried(tmp_path: Path, local_ray) -> None:  # type: ignore[no-untyped-def]
    local_ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    out = create_executor("ray").map(_fails, [7])
    assert isinstance(out[0], TaskFailed) and "task 7 fails" in out[0].error and out[0].attempts == 1
    cfg = TrainConfig(**TINY).replace(method_args={"learned_loss": {"path": str(tmp_path / "missing.pt")}})  # type: ignore[arg-type]
    results = compare(cfg, methods=["ce", "learned_loss"], seeds=[0], out_dir=tmp_path / "cmp",
                      executor=create_executor("ray"))
    assert results[0].failed is None and results[1].failed is not None and "missing.pt" in results[1].failed


# ---------------------------------------------------------------------------- submitit's local executor
@pytest.mark.slow
def test_compare_through_submitit_gives_the_local_numbers_and_resumes_a_killed_job(tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    cfg = TrainConfig(**{**TINY, "steps": 300, "checkpoint_every": 50})  # type: ignore[arg-type]
    plain = compare(cfg, methods=["ce"], seeds=[0, 1], out_dir=tmp_path / "local")
    killed: list[int] = []
    watcher = _kill_when_checkpointed(tmp_path / "slurm" / "ce" / "seed0", "submitit", killed)
    executor = create_executor("slurm", cluster="local", folder=str(tmp_path / "submitit"))
    jobs = compare(cfg, methods=["ce"], seeds=[0, 1], out_dir=tmp_path / "slurm", executor=executor)
    watcher.join(timeout=5)
    assert killed, "the job finished before it could be killed"
    assert [r.final for r in jobs] == [r.final for r in plain] and not any(r.failed for r in jobs)


@pytest.mark.slow
def test_a_taylorglo_search_through_submitit_equals_one_worker(tmp_path: Path) -> None:
    cloudpickle = pytest.importorskip("cloudpickle")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    kw = {"sigma": 1.0, "popsize": 4, "generations": 2, "seed": 4}
    one = cma_search(fitness, np.zeros(5), workers=1, **kw)
    remote = cma_search(fitness, np.zeros(5), executor=create_executor("slurm", cluster="local",
                                                                        folder=str(tmp_path / "s")), **kw)
    assert remote.fitness == one.fitness and remote.history == one.history


@pytest.mark.slow
def test_the_taylorglo_method_searches_on_an_executor_as_in_one_process(tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    from adaloss.training import train

    args = {"popsize": 3, "generations": 1, "partial_steps": 5, "workers": 1}
    cfg = TrainConfig(**{**TINY, "steps": 10, "checkpoint_every": 0}).replace(method="taylorglo")  # type: ignore[arg-type]
    here = train(cfg.replace(run_dir=str(tmp_path / "here"), method_args=args))
    args = {**args, "workers": None, "executor": "slurm",
            "executor_options": {"cluster": "local", "folder": str(tmp_path / "jobs")}}
    there = train(cfg.replace(run_dir=str(tmp_path / "there"), method_args=args))
    assert there["final"] == here["final"]
    assert (tmp_path / "jobs").is_dir()
