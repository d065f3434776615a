"""TaylorGLO in a plain PyTorch training loop, on your own model and DataLoaders.

``adaloss.TaylorGLO(fitness).search()`` evolves the 8 parameters of a Taylor-polynomial loss with
CMA-ES; ``adaloss.TrainingFitness`` scores a candidate loss by the validation error of a fresh
model after a short training on your loaders. The loss it returns is then used like any loss. The
data is scikit-learn's bundled digits (8x8 images, 10 classes; no download), split into train /
validation / test tensors; the same model is also trained with plain cross-entropy for comparison.

    python examples/taylorglo_plain_loop.py            # a small search and 300 steps, ~20 s on a CPU
    python examples/taylorglo_plain_loop.py --popsize 25 --generations 50 --partial-steps 500   # the paper's budget
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import adaloss
from adaloss.data.batches import cycle  # re-iterates a DataLoader every epoch (itertools.cycle replays epoch 1)


def digits_tensors(seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train / valid / test ``(x, y)`` tensors of the digits data (60 / 20 / 20 %, stratified)."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, stratify=y, random_state=seed)
    x_valid, x_test, y_valid, y_test = train_test_split(x_rest, y_rest, test_size=0.5, stratify=y_rest,
                                                        random_state=seed)
    return {"train": (x_train, y_train), "valid": (x_valid, y_valid), "test": (x_test, y_test)}


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
    model.train()
    return correct / len(loader.dataset)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps with the found loss (default 300)")
    parser.add_argument("--popsize", type=int, default=8, help="CMA-ES population (default 8; the paper's 25)")
    parser.add_argument("--generations", type=int, default=6, help="CMA-ES generations (default 6; the paper's 50)")
    parser.add_argument("--partial-steps", type=int, default=100,
                        help="steps of each candidate's partial training (default 100; the paper's 500)")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small models run fastest on one thread

    data = digits_tensors(args.seed)
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    train_loader = DataLoader(TensorDataset(*data["train"]), batch_size=args.batch_size, shuffle=True, generator=g)
    valid_loader = DataLoader(TensorDataset(*data["valid"]), batch_size=512)
    test_loader = DataLoader(TensorDataset(*data["test"]), batch_size=512)
    make_optimizer = functools.partial(torch.optim.SGD, lr=args.lr, momentum=0.9)

    # --8<-- [start:taylorglo]
    fitness = adaloss.TrainingFitness(make_model, make_optimizer, train_loader, valid_loader,
                                      steps=args.partial_steps)        # validation error after a short training
    search = adaloss.TaylorGLO(fitness, popsize=args.popsize, generations=args.generations, seed=args.seed)
    loss = search.search()                                             # the best TaylorLoss found, θ frozen
    model = make_model()
    optimizer = make_optimizer(model.parameters())
    for step, (x, y) in zip(range(args.steps), cycle(train_loader)):
        optimizer.zero_grad()
        loss(model(x), y).backward()
        optimizer.step()
    # --8<-- [end:taylorglo]
    found = accuracy(model, test_loader)

    torch.manual_seed(args.seed)  # the same initialisation, trained with cross-entropy
    ce_model = make_model()
    optimizer = make_optimizer(ce_model.parameters())
    for step, (x, y) in zip(range(args.steps), cycle(train_loader)):
        optimizer.zero_grad()
        F.cross_entropy(ce_model(x), y).backward()
        optimizer.step()
    ce = accuracy(ce_model, test_loader)

    summary = search.summary()
    assert summary is not None
    print(f"digits, TaylorGLO search: popsize {args.popsize}, {args.generations} generations, "
          f"{args.partial_steps} partial steps; best validation error {summary['best_fitness']:.4f} "
          f"({summary['failures']} failed candidates)")
    print(f"  theta = {[round(v, 3) for v in loss.theta.tolist()]}")
    print(f"  TaylorGLO loss, {args.steps} steps: test accuracy {found:.4f}")
    print(f"  cross-entropy,  {args.steps} steps: test accuracy {ce:.4f}")
    return {"taylorglo": {"test_accuracy": found, **summary, "theta": loss.theta.tolist()},
            "ce": {"test_accuracy": ce}}


if __name__ == "__main__":
    main()
