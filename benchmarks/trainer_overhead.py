"""Trainer steps/s against a minimal hand-written PyTorch loop, measured interleaved in one run.

Both loops train the same architecture on the same in-memory data with the same optimiser; the
trainer also does its JSONL logging every ``log_every`` steps. Rounds alternate which loop goes
first; the figure of merit is the median over rounds of (trainer time / hand-loop time).

    python benchmarks/trainer_overhead.py --dataset mnist --model lenet5 --data-dir ../shared/datasets

prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from adaloss.data import load_dataset
from adaloss.models import create_model
from adaloss.training import TrainConfig, build_trainer


def hand_loop(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
              g: torch.Generator, state: dict, steps: int, batch_size: int) -> None:
    for _ in range(steps):
        if state["pos"] + batch_size > len(x):
            state["perm"], state["pos"] = torch.randperm(len(x), generator=g), 0
        idx = state["perm"][state["pos"] : state["pos"] + batch_size]
        state["pos"] += batch_size
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--model", default="mlp")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps-per-round", type=int, default=200)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_dataset(args.dataset, data_dir=args.data_dir)
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = TrainConfig(dataset=args.dataset, model=args.model, batch_size=args.batch_size, lr=0.01,
                          steps=10**9, log_every=100, eval_every=0, run_dir=run_dir, progress="off")
        trainer = build_trainer(cfg, data=data)
        torch.manual_seed(0)
        model = create_model(args.model, data.input_shape, data.num_outputs)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        g = torch.Generator().manual_seed(0)
        state = {"perm": torch.randperm(len(data.train), generator=g), "pos": 0}
        x, y, n = data.train.x, data.train.y, args.steps_per_round

        def time_trainer() -> float:
            t = time.perf_counter()
            trainer.run(n)
            return time.perf_counter() - t

        def time_hand() -> float:
            t = time.perf_counter()
            hand_loop(model, opt, x, y, g, state, n, args.batch_size)
            return time.perf_counter() - t

        time_trainer(), time_hand()  # warm-up
        ratios, t_tr, t_hd = [], [], []
        for r in range(args.rounds):
            if r % 2 == 0:
                a, b = time_trainer(), time_hand()
            else:
                b, a = time_hand(), time_trainer()
            t_tr.append(a)
            t_hd.append(b)
            ratios.append(a / b)
        trainer.close()

    print(json.dumps({
        "benchmark": "trainer_overhead",
        "dataset": args.dataset,
        "model": args.model,
        "batch_size": args.batch_size,
        "steps_per_round": n,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "trainer_steps_per_s_median": n / statistics.median(t_tr),
        "hand_loop_steps_per_s_median": n / statistics.median(t_hd),
        "time_ratio_trainer_over_hand_median": statistics.median(ratios),
        "overhead_percent_median": 100 * (statistics.median(ratios) - 1),
        "time_ratios": [round(v, 4) for v in ratios],
    }, indent=2))


if __name__ == "__main__":
    main()
