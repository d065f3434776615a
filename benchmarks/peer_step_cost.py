"""Per-step time of the peers of the learned losses against a plain cross-entropy (or MSE) SGD step:
the optimisers that need no learning-rate tuning (``hd_sgd``, ``schedulefree_sgd``, ``prodigy``,
``dadapt_sgd``, built as ``method=<name>`` builds them) and the robust and smoothed losses (``gce``,
``sce``, ``label_smoothing``) with SGD.

Models as the protocols train them: ``logistic``, ``mlp`` and ``lenet5`` on MNIST-shaped random
batches (1×28×28, 10 classes) and ``mlp_regressor`` on California-housing-shaped ones (8 features),
batch 128, SGD lr 0.01 (momentum 0.9 and Nesterov for the regressor, as its protocol). Times are
measured interleaved in one process, one thread by default (the protocols' runs use one): each
round times every configuration for ``--steps`` steps, in an order that rotates between rounds;
the ratio to the plain step is taken per round and the median over rounds reported. The total cost
of a run in plain-run units is this ratio (the same number of steps). A peer whose package is not
installed is reported as skipped, with the reason.

    python benchmarks/peer_step_cost.py [--rounds 11] [--steps 30] [--threads 1] > benchmarks/results/peer_step_cost_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch

from adaloss.learners.base import RunOptimizer
from adaloss.learners.peers import PEER_OPTIMIZERS
from adaloss.losses import create_loss
from adaloss.models import create_model

MODELS = {"logistic": ((1, 28, 28), 10), "mlp": ((1, 28, 28), 10), "lenet5": ((1, 28, 28), 10),
          "mlp_regressor": ((8,), 1)}
LOSSES = ("gce", "sce", "label_smoothing")


def configurations(model_name: str) -> dict[str, Callable[[], Callable[[], None]]]:
    """Name -> a builder of one step function (a fresh model, optimiser and batch stream)."""
    shape, outputs = MODELS[model_name]
    regression = outputs == 1
    run = RunOptimizer(lr=0.01, momentum=0.9 if regression else 0.0, nesterov=regression,
                       weight_decay=5e-4 if regression else 0.0, steps=10_000)
    plain = "mse" if regression else "ce"

    def build(loss_name: str, optimizer: str | None) -> Callable[[], None]:
        torch.manual_seed(0)
        model = create_model(model_name, input_shape=shape, num_outputs=outputs)
        loss = create_loss(loss_name, task="regression" if regression else "classification")
        params = list(model.parameters())
        if optimizer is None:
            opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=run.lr, momentum=run.momentum,
                                                         nesterov=run.nesterov, weight_decay=run.weight_decay)
        else:
            opt = PEER_OPTIMIZERS[optimizer]()(params, run)  # the method's recipe at its defaults
            if hasattr(opt, "train"):
                opt.train()
        g = torch.Generator().manual_seed(1)
        batches = [(torch.randn(128, *shape, generator=g),
                    torch.randn(128, 1, generator=g) if regression else torch.randint(0, outputs, (128,), generator=g))
                   for _ in range(8)]
        it = iter(range(10**9))

        def step() -> None:
            x, y = batches[next(it) % len(batches)]
            opt.zero_grad(set_to_none=True)
            loss(model(x), y).backward()
            opt.step()

        return step

    out: dict[str, Callable[[], Callable[[], None]]] = {plain: lambda: build(plain, None)}
    for name in PEER_OPTIMIZERS:
        out[name] = lambda name=name: build(plain, name)  # type: ignore[misc]
    if not regression:
        for name in LOSSES:
            out[name] = lambda name=name: build(name, None)  # type: ignore[misc]
    return out


def measure(model_name: str, rounds: int, steps: int) -> dict[str, object]:
    steps_of: dict[str, Callable[[], None]] = {}
    skipped: dict[str, str] = {}
    for name, builder in configurations(model_name).items():
        try:
            with contextlib.redirect_stdout(sys.stderr):  # Prodigy prints its weight-decay mode
                steps_of[name] = builder()
        except ImportError as e:
            skipped[name] = str(e)
    for step in steps_of.values():  # warm-up
        for _ in range(3):
            step()
    names = list(steps_of)
    plain = names[0]
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            for _ in range(steps):
                steps_of[name]()
            times[name].append((time.perf_counter() - start) / steps)
    ratios = {n: statistics.median(t / b for t, b in zip(times[n], times[plain])) for n in names}
    return {"plain": plain, "step_ms_median": {n: 1e3 * statistics.median(times[n]) for n in names},
            "ratio_to_plain_median": ratios, "skipped": skipped}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = {m: measure(m, args.rounds, args.steps) for m in args.models}
    print(json.dumps({"benchmark": "peer_step_cost", "device": "cpu", "threads": args.threads,
                      "torch": torch.__version__, "batch_size": 128, "rounds": args.rounds,
                      "steps_per_round": args.steps, "results": results}, indent=1))


if __name__ == "__main__":
    main()
