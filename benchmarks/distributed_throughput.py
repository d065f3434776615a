"""Throughput of data-parallel training on N torchrun ranks against one process, and the
communication share of a step.

The same run (dataset, model, method, *global* batch) is trained for ``--steps`` steps by one
process and by ``--nproc`` ranks launched with torchrun (gloo on CPU), each process with
``--threads`` torch threads; training samples per second are measured after ``--warmup`` steps
(trainer only: no evaluation, logging or checkpoints), median over ``--repeats`` launches.
The communication share is the time the ranks spend inside all-reduce over the step time.

    python benchmarks/distributed_throughput.py [--method ce] [--model mlp] [--nproc 2] [--steps 200]

prints one JSON object. On a machine with fewer cores than ranks × threads the ranks compete
for cores, so the speed-up there measures the machine, not the method.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def worker(args: argparse.Namespace) -> None:
    """One process (or one rank): train, time the steps after the warm-up, print JSON on rank 0."""
    from adaloss.training import TrainConfig
    from adaloss.training.experiment import build_trainer

    cfg = TrainConfig(dataset=args.dataset, model=args.model, method=args.method, batch_size=args.batch_size,
                      steps=args.warmup + args.steps, threads=args.threads, progress="off", log_every=0,
                      method_args={"init_steps": 0} if args.method in ("adalfl", "ml3") else {},
                      run_dir=None, data_dir=args.data_dir)
    trainer = build_trainer(cfg)
    trainer.run_dir = None
    trainer.run(args.warmup)
    trainer.collective.barrier()
    comm0 = trainer.collective.seconds
    start = time.perf_counter()
    trainer.run(args.steps)
    trainer.collective.barrier()
    seconds = time.perf_counter() - start
    comm = trainer.collective.seconds - comm0
    if trainer.collective.is_main:
        print(json.dumps({"samples_per_s": args.steps * args.batch_size / seconds,
                          "step_ms": 1000 * seconds / args.steps, "comm_share": comm / seconds}))
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def launch(args: argparse.Namespace, nproc: int) -> dict[str, float]:
    common = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
              if k not in ("worker", "nproc", "repeats") and v is not None]
    script = os.path.abspath(__file__)
    if nproc == 1:
        cmd = [sys.executable, script, "--worker", *common]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               script, "--worker", *common]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--model", default="mlp")
    p.add_argument("--method", default="ce")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker", action="store_true")
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    one, many = [], []
    for _ in range(args.repeats):  # interleaved, so load drifts hit both alike
        one.append(launch(args, 1))
        many.append(launch(args, args.nproc))
    med = lambda runs, k: statistics.median(r[k] for r in runs)  # noqa: E731
    print(json.dumps({
        "config": {k: v for k, v in vars(args).items() if k != "worker"},
        "cpu_count": os.cpu_count(),
        "one_process": {"samples_per_s": med(one, "samples_per_s"), "step_ms": med(one, "step_ms")},
        f"{args.nproc}_ranks": {"samples_per_s": med(many, "samples_per_s"), "step_ms": med(many, "step_ms"),
                                 "comm_share": med(many, "comm_share")},
        "speedup": med(many, "samples_per_s") / med(one, "samples_per_s"),
    }, indent=2))


if __name__ == "__main__":
    main()
