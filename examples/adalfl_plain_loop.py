"""AdaLFL in a plain PyTorch training loop, on your own tensors.

``adalfl.step(batch, meta_batch)`` replaces ``loss.backward(); optimizer.step()``; everything
else (data, model, optimiser, LR schedule) stays the user's. The data here is scikit-learn's
bundled digits (8x8 images, 10 classes; no download), split into train / validation / test
tensors; the validation batches feed AdaLFL's meta-objective. The same model is also trained with
plain cross-entropy, the same way, for comparison.

    python examples/adalfl_plain_loop.py               # ~300 steps, a few seconds on a CPU
    python examples/adalfl_plain_loop.py --steps 2000 --init-steps 250
"""

from __future__ import annotations

import argparse
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


def train(method: str, data: dict, *, steps: int, init_steps: int, lr: float, batch_size: int,
          seed: int) -> dict[str, float]:
    """Train one model with ``method`` (``"adalfl"`` or ``"ce"``); its test accuracy and timings."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(TensorDataset(*data["train"]), batch_size=batch_size, shuffle=True, generator=g)
    valid_loader = DataLoader(TensorDataset(*data["valid"]), batch_size=batch_size, shuffle=True, generator=g)
    test_loader = DataLoader(TensorDataset(*data["test"]), batch_size=512)

    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    result: dict[str, float] = {}
    if method == "adalfl":
        # --8<-- [start:adalfl]
        adalfl = adaloss.AdaLFL(model, optimizer)               # the learned loss M_φ and its meta-optimiser
        init = adalfl.initialize(make_model, train_loader, valid_loader, steps=init_steps)  # offline (Alg. 1)
        meta_batches = cycle(valid_loader)
        for step, batch in zip(range(steps), cycle(train_loader)):
            stats = adalfl.step(batch, next(meta_batches))      # instead of loss.backward(); optimizer.step()
            scheduler.step()
        # --8<-- [end:adalfl]
        result.update(init_meta_loss=init.get("meta_loss", float("nan")), meta_loss=float(stats["meta_loss"]),
                      skipped_meta_steps=float(adalfl.skipped_meta_steps))
    else:
        for step, (x, y) in zip(range(steps), cycle(train_loader)):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            scheduler.step()
    result["test_accuracy"] = accuracy(model, test_loader)
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="base training steps (default 300)")
    parser.add_argument("--init-steps", type=int, default=None,
                        help="AdaLFL's offline initialisation steps (default: steps // 3)")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small models run fastest on one thread
    init_steps = args.steps // 3 if args.init_steps is None else args.init_steps

    data = digits_tensors(args.seed)
    results = {}
    for method in ("adalfl", "ce"):
        results[method] = train(method, data, steps=args.steps, init_steps=init_steps, lr=args.lr,
                                batch_size=args.batch_size, seed=args.seed)
    a = results["adalfl"]
    print(f"digits, {args.steps} steps, SGD lr {args.lr} momentum 0.9, cosine schedule, seed {args.seed}")
    print(f"  AdaLFL ({init_steps} init steps): test accuracy {a['test_accuracy']:.4f}  "
          f"(last meta-loss {a['meta_loss']:.4f}, skipped meta-steps {int(a['skipped_meta_steps'])})")
    print(f"  cross-entropy:                 test accuracy {results['ce']['test_accuracy']:.4f}")
    return results


if __name__ == "__main__":
    main()
