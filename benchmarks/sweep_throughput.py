"""Runs per minute of a small ``compare`` sweep: in this process (``--executor local``) against Ray
with 1 and 2 workers (a local Ray started with that many CPUs, one thread per run), measured in one
invocation on this machine.

The sweep is ``--runs`` short trainings of the built-in digits MLP (cross-entropy, distinct seeds,
``--steps`` steps each); every configuration trains the same runs into a fresh folder. The local
figure includes no start-up; each Ray figure includes starting its local Ray (said separately as
``ray_start_s``), since that is what a user of a one-machine Ray pays. What limits the speed-up is
printed with the figures: on a machine whose cores are all in use by the workers, two runs at once
cannot beat one at a time by more than the cores allow, and each Ray worker process imports torch
and adaloss once before its first run.

    python benchmarks/sweep_throughput.py [--runs 8] [--steps 3000] > benchmarks/results/sweep_throughput_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch


def sweep(executor: object, out: Path, runs: int, steps: int) -> float:
    from adaloss.training import TrainConfig
    from adaloss.training.compare import compare

    cfg = TrainConfig(steps=steps, eval_every=steps, log_every=steps, threads=1, progress="off",
                      model_args={"hidden": [256, 256]})
    start = time.perf_counter()
    results = compare(cfg, methods=["ce"], seeds=list(range(runs)), out_dir=out, executor=executor)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - start
    assert len(results) == runs and not any(r.failed for r in results)
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--steps", type=int, default=3000)
    args = p.parse_args()
    torch.set_num_threads(1)
    from adaloss.executors import create_executor

    root = Path(tempfile.mkdtemp(prefix="sweep_throughput_"))
    figures: dict[str, dict[str, float]] = {}
    try:
        local = sweep(create_executor("local"), root / "local", args.runs, args.steps)
        figures["local"] = {"seconds": local, "runs_per_minute": 60 * args.runs / local}
        for workers in (1, 2):
            t0 = time.perf_counter()
            executor = create_executor("ray", num_cpus=workers)
            started = time.perf_counter() - t0
            try:
                seconds = sweep(executor, root / f"ray{workers}", args.runs, args.steps)
            finally:
                executor.close()
            total = started + seconds
            figures[f"ray_{workers}_workers"] = {"seconds": total, "ray_start_s": started,
                                                 "runs_per_minute": 60 * args.runs / total,
                                                 "over_local": local / total}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    limits = (f"{os.cpu_count()} CPU cores: Ray with 2 workers runs two trainings at once, one thread each; the "
              "speed-up over local is bounded by the cores and shrunk by Ray's start-up and each worker's first "
              "import of torch and adaloss, which short runs do not amortise")
    print(json.dumps({"benchmark": "sweep_throughput", "runs": args.runs, "steps": args.steps,
                      "cpu_count": os.cpu_count(), "torch": torch.__version__, "results": figures,
                      "limited_by": limits}, indent=1))


if __name__ == "__main__":
    main()
