"""Time of the embedding metrics on N random D-dimensional embeddings with L labels.

Recall@{1,2,4,8} from one blocked neighbour search (``recall_at_k`` with several ks), each
registered ``recall@k`` metric on its own (each searches again), and NMI (k-means with k = L,
3 restarts, then NMI). Random embeddings are the worst case for k-means (no cluster structure: it
runs until its tolerance or ``max_iter``). Best of ``--repeats`` wall-clock times per item.

    python benchmarks/metrics_speed.py [--n 10000] [--dim 128] [--labels 100] [--repeats 3] [--device cpu]

prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

from adaloss.metrics import create_metric, kmeans, nmi, recall_at_k


def best_time(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        value = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, args.dim, generator=g).to(device)
    labels = torch.randint(0, args.labels, (args.n,), generator=g).to(device)

    out: dict[str, object] = {
        "n": args.n, "dim": args.dim, "labels": args.labels, "device": str(device),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
    }
    t, r = best_time(lambda: recall_at_k(x, labels, [1, 2, 4, 8]), args.repeats, device)
    out["recall_at_1_2_4_8_one_search_s"] = round(t, 4)
    out["recall_values"] = [round(v, 4) for v in r.tolist()]  # type: ignore[union-attr]
    for k in (1, 2, 4, 8):
        metric = create_metric(f"recall@{k}", task="embedding")
        metric.update(x, labels)
        t, _ = best_time(metric.compute, args.repeats, device)
        out[f"recall@{k}_metric_s"] = round(t, 4)
    t, v = best_time(lambda: nmi(x, labels), args.repeats, device)
    out["nmi_s"] = round(t, 4)
    out["nmi_value"] = round(float(v), 4)  # type: ignore[arg-type]
    out["kmeans_n_iter_best_restart"] = kmeans(x, args.labels, seed=0).n_iter
    if device.type == "cuda":
        out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
