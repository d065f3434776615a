"""Per-step time and peak memory of AdaLFL's online step against a plain cross-entropy step.

Batch 128 of MNIST-shaped random inputs (1×28×28, 10 classes), SGD lr 0.01, meta batch from a
separate stream, Adam 1e-3 on φ. Times are measured interleaved in one process (rounds alternate
which goes first; median over rounds). Peak memory is measured in a fresh subprocess per
configuration as the growth of peak RSS over the RSS after set-up (CPU), or as
``torch.cuda.max_memory_allocated`` on a GPU.

    python benchmarks/step_cost.py [--models mlp lenet5] [--rounds 7] [--steps 20] [--device cpu]

prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import torch

from adaloss.learners import FixedLossLearner, TrainContext
from adaloss.learners.adalfl import AdaLFLLearner
from adaloss.models import create_model


def stream(device: torch.device, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1024, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (1024,), generator=g).to(device)
    i = 0
    while True:
        idx = torch.arange(i, i + 128) % 1024
        i += 128
        yield x[idx], y[idx]


def make(kind: str, model_name: str, device: torch.device):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = create_model(model_name, (1, 28, 28), 10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    learner = FixedLossLearner(torch.nn.CrossEntropyLoss()) if kind == "ce" else AdaLFLLearner(init_steps=0)
    train, meta = stream(device, 1), stream(device, 2)
    learner.bind(TrainContext(model=model, optimizer=opt, scheduler=None, task="classification",
                              meta_batches=meta, train_batches=train, device=device))
    return learner, train


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(learner, batches, steps: int, device: torch.device) -> float:  # type: ignore[no-untyped-def]
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        learner.step(next(batches))
    sync(device)
    return (time.perf_counter() - t) / steps


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def memory_child(kind: str, model_name: str, device_name: str, steps: int) -> None:
    device = torch.device(device_name)
    learner, batches = make(kind, model_name, device)
    next(batches)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_bytes()
    for _ in range(steps):
        learner.step(next(batches))
    sync(device)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak_bytes": peak - base}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["mlp", "lenet5"])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--memory-child", nargs=3, metavar=("KIND", "MODEL", "STEPS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        kind, model_name, steps = args.memory_child
        memory_child(kind, model_name, args.device, int(steps))
        return
    device = torch.device(args.device)
    results = {}
    for model_name in args.models:
        ce, ce_batches = make("ce", model_name, device)
        ada, ada_batches = make("adalfl", model_name, device)
        timed(ce, ce_batches, 3, device), timed(ada, ada_batches, 3, device)  # warm-up
        t_ce, t_ada, ratios = [], [], []
        for r in range(args.rounds):
            if r % 2 == 0:
                a, b = timed(ce, ce_batches, args.steps, device), timed(ada, ada_batches, args.steps, device)
            else:
                b, a = timed(ada, ada_batches, args.steps, device), timed(ce, ce_batches, args.steps, device)
            t_ce.append(a)
            t_ada.append(b)
            ratios.append(b / a)
        mem = {}
        for kind in ("ce", "adalfl"):
            cmd = [sys.executable, __file__, "--device", args.device, "--memory-child", kind, model_name, "10"]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            mem[kind] = json.loads(out.strip().splitlines()[-1])["peak_bytes"]
        results[model_name] = {
            "ce_step_ms_median": 1000 * statistics.median(t_ce),
            "adalfl_step_ms_median": 1000 * statistics.median(t_ada),
            "time_ratio_median": statistics.median(ratios),
            "time_ratios": [round(v, 3) for v in ratios],
            "ce_peak_mem_mib": mem["ce"] / 2**20,
            "adalfl_peak_mem_mib": mem["adalfl"] / 2**20,
            "memory_ratio": mem["adalfl"] / max(mem["ce"], 1),
        }
    print(json.dumps({
        "benchmark": "step_cost", "device": str(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "batch_size": 128, "rounds": args.rounds, "steps_per_round": args.steps,
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
