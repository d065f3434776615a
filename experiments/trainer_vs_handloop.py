"""The trainer against a minimal hand-written PyTorch loop on the paper's MNIST protocol.

Both train LeNet-5 with SGD lr 0.01, batch 128, for 10,000 steps on the 90% training split of
MNIST and report the test error; the hand-written loop shares no code with adaloss (its own
IDX reading, LeNet-5, split and DataLoader).

    python experiments/trainer_vs_handloop.py --data-dir ../shared/datasets --seeds 0 1 2

writes experiments/results/trainer_vs_handloop.{json,md}.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from adaloss.training import load_config, train

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "configs" / "mnist_lenet5.yaml"


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class LeNet5(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10),
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hand_written(data_dir: Path, seed: int, steps: int) -> dict[str, float]:
    t0 = time.perf_counter()
    root = data_dir / "mnist"
    def images(name: str) -> torch.Tensor:
        return (torch.from_numpy(read_idx(root / name).astype(np.float32) / 255.0) - 0.1307).div(0.3081).unsqueeze(1)
    x, y = images("train-images-idx3-ubyte.gz"), torch.from_numpy(read_idx(root / "train-labels-idx1-ubyte.gz").astype(np.int64))
    xt, yt = images("t10k-images-idx3-ubyte.gz"), torch.from_numpy(read_idx(root / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    keep, _ = train_test_split(np.arange(len(y)), test_size=0.1, stratify=y.numpy(), random_state=seed)
    torch.manual_seed(seed)
    model = LeNet5()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = DataLoader(TensorDataset(x[keep], y[keep]), batch_size=128, shuffle=True, drop_last=True)
    step = 0
    while step < steps:
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            step += 1
            if step == steps:
                break
    model.eval()
    with torch.no_grad():
        wrong = sum(int((model(xt[i : i + 1000]).argmax(1) != yt[i : i + 1000]).sum()) for i in range(0, len(yt), 1000))
    return {"test_error": wrong / len(yt), "wall_time_s": time.perf_counter() - t0}


def with_trainer(data_dir: Path, seed: int, steps: int, out: Path) -> dict[str, float]:
    cfg = load_config(CONFIG, [f"seed={seed}", f"steps={steps}", f"data_dir={data_dir}",
                               f"run_dir={out / f'trainer-seed{seed}'}", "progress=off"])
    t0 = time.perf_counter()
    summary = train(cfg, resume=True)
    return {"test_error": summary["final"]["test_error"], "wall_time_s": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--runs", type=Path, default=Path("runs/trainer_vs_handloop"))
    args = p.parse_args()
    rows: dict[str, list[dict[str, float]]] = {"adaloss trainer": [], "hand-written loop": []}
    for seed in args.seeds:
        rows["adaloss trainer"].append(with_trainer(args.data_dir, seed, args.steps, args.runs))
        rows["hand-written loop"].append(hand_written(args.data_dir, seed, args.steps))
        print(seed, {k: v[-1] for k, v in rows.items()}, flush=True)

    def ms(vals: list[float]) -> tuple[float, float]:
        return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)

    lines = [
        "## Trainer vs a hand-written loop (MNIST, LeNet-5)",
        "",
        f"SGD lr 0.01, batch 128, {args.steps} steps, test error over seeds {args.seeds} (mean ± std), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads.",
        "",
        "| loop | test error (%) | wall time per run (s) |",
        "|---|---|---|",
    ]
    for name, runs in rows.items():
        e, es = ms([100 * r["test_error"] for r in runs])
        w, ws = ms([r["wall_time_s"] for r in runs])
        lines.append(f"| {name} | {e:.2f} ± {es:.2f} | {w:.0f} ± {ws:.0f} |")
    lines += ["", f"Command: `python experiments/trainer_vs_handloop.py --data-dir DATA --seeds {' '.join(map(str, args.seeds))}`", ""]
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "trainer_vs_handloop.json").write_text(json.dumps({"steps": args.steps, "seeds": args.seeds, "runs": rows}, indent=2) + "\n")
    (out / "trainer_vs_handloop.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
