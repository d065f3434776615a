"""ALA as a loss scheduler in a plain PyTorch training loop.

The model trains with ``ala.loss`` (a class-pair loss l_Φ, exactly cross-entropy at Φ = I) and the
user's own optimiser; ``ala.step(model, valid_data)`` after every optimiser step lets ALA's policy
move Φ every ``--every`` steps, rewarded by the change of the validation error. Data: scikit-learn's
bundled digits (no download). Prints the test accuracy and Φ's statistics at the end.

    python examples/ala_plain_loop.py                  # 400 steps, a few seconds on a CPU
    python examples/ala_plain_loop.py --steps 4000 --every 200
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import adaloss
from adaloss.data.batches import cycle
from adaloss.methods.ala import phi_statistics


def digits_tensors(seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train / valid / test ``(x, y)`` tensors of the digits data (60 / 20 / 20 %, stratified)."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, stratify=y, random_state=seed)
    x_valid, x_test, y_valid, y_test = train_test_split(x_rest, y_rest, test_size=0.5, stratify=y_rest,
                                                        random_state=seed)
    return {"train": (x_train, y_train), "valid": (x_valid, y_valid), "test": (x_test, y_test)}


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    acc = float((model(x).argmax(1) == y).float().mean())
    model.train()
    return acc


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="base training steps (default 400)")
    parser.add_argument("--every", type=int, default=None,
                        help="base steps K per controller step (default: steps // 20, at least 2)")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    every = max(args.steps // 20, 2) if args.every is None else args.every

    data = digits_tensors(args.seed)
    train_loader = DataLoader(TensorDataset(*data["train"]), batch_size=args.batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(args.seed))
    valid = data["valid"]  # one (x, y) batch: ALA evaluates its metric on the same examples every time
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

    # --8<-- [start:ala]
    ala = adaloss.ALA(adaloss.ClassPairLoss(10, form="log_prob"), metric="error", every=every,
                      smoothing_window=max(every // 5, 1), total_steps=args.steps, seed=args.seed)
    ala.start(model, valid)                        # evaluates the initial model, takes the first action
    for step, (x, y) in zip(range(args.steps), cycle(train_loader)):
        optimizer.zero_grad()
        ala.loss(model(x), y).backward()           # train with l_Φ
        optimizer.step()
        scalars = ala.step(model, valid)           # every K steps: reward, policy update, new Φ
    # --8<-- [end:ala]

    stats = phi_statistics(ala.loss)
    phi = ala.loss.parameter_vector()
    result = {"test_accuracy": accuracy(model, *data["test"]), "phi_stats": stats,
              "controller_steps": len(ala.metrics) - 1, "valid_errors": list(ala.metrics),
              "rewards": list(ala.controller.rewards), "last": scalars}
    print(f"digits, {args.steps} steps, K = {every}, SGD lr {args.lr} momentum 0.9, seed {args.seed}")
    print(f"  test accuracy {result['test_accuracy']:.4f}")
    print(f"  controller steps {result['controller_steps']}; smoothed validation error "
          f"{ala.metrics[0]:.4f} -> {ala.metrics[-1]:.4f}; rewards {sum(ala.controller.rewards):+.0f} in total")
    print(f"  Φ ({phi.numel()} parameters): " + ", ".join(f"{k} {v:+.3f}" for k, v in stats.items()))
    return result


if __name__ == "__main__":
    main()
