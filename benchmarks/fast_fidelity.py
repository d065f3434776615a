"""The fast mode's fidelity over the steps of a real run: how close ``meta_gradient=
"forward_difference"`` comes to the exact meta-gradient while AdaLFL trains on MNIST.

One AdaLFL run with the MNIST protocol's settings (SGD lr 0.01, batch 128, meta batches from the
validation split, Adam 1e-3 on φ) after an offline initialisation; every ``--every`` steps both
meta-gradients (∇φ, and ∇ρ with ``--learn-lr``) are computed from the same state and the same
batches, the exact one is applied (so the run is the exact method's), and their cosine similarity
and relative error ‖fast − exact‖ / ‖exact‖ are recorded. The MLP and LeNet-5 have no dropout or
BatchNorm, so both calls see the same forward. Prints one JSON object.

    python benchmarks/fast_fidelity.py --data-dir ../shared/datasets [--model mlp] [--steps 2000] [--every 20]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics

import torch

from adaloss import AdaLFL
from adaloss.data import BatchLoader, load_dataset
from adaloss.models import create_model
from step_cost import fast_vs_exact_step


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--model", default="mlp", choices=["mlp", "lenet5", "logistic"])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--every", type=int, default=20)
    p.add_argument("--init-steps", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_dataset("mnist", data_dir=args.data_dir, seed=args.seed)
    factory = functools.partial(create_model, args.model, data.input_shape, data.num_outputs)
    model = factory()
    adalfl = AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.01))
    train = BatchLoader(data.train, batch_size=128, seed=args.seed)
    valid = BatchLoader(data.valid, batch_size=128, seed=args.seed + 1)
    adalfl.initialize(factory, train, valid, steps=args.init_steps)
    records = []
    for step in range(1, args.steps + 1):
        batch, meta_batch = next(train), next(valid)
        if step % args.every:
            adalfl.step(batch, meta_batch)
            continue
        cosine, relative_error = fast_vs_exact_step(adalfl, batch, meta_batch)
        records.append({"step": step, "cosine": cosine, "relative_error": relative_error})
    half = len(records) // 2
    print(json.dumps({
        "benchmark": "fast_fidelity", "dataset": "mnist", "model": args.model, "steps": args.steps,
        "every": args.every, "init_steps": args.init_steps, "seed": args.seed, "torch": torch.__version__,
        "cosine": _summary([r["cosine"] for r in records]),
        "relative_error": _summary([r["relative_error"] for r in records]),
        "relative_error_first_half_median": statistics.median(r["relative_error"] for r in records[:half]),
        "relative_error_second_half_median": statistics.median(r["relative_error"] for r in records[half:]),
        "records": records,
    }, indent=1))


if __name__ == "__main__":
    main()
