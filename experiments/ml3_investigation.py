"""Why ML3 reaches ~23 % test error on MNIST logistic regression (CE: 7.9 %): evidence per seed.

Runs (or reuses) ``ce``, ``ml3`` (250 offline unrolls, the default) and ``ml3`` with 2500 offline
unrolls (AdaLFL's initialisation length) on the MNIST logistic protocol, 5 seeds, then reads each
ML3 run's learned loss (the snapshot after the offline fit; ML3 keeps it frozen) and its logged
gradient-norm ratio ‖∇θ M_φ‖ / ‖∇θ CE‖, and writes ``experiments/results/ml3_logistic_investigation.md``
and a figure of the learned losses.

    python experiments/ml3_investigation.py --data-dir ../shared/datasets [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_results import write_section  # noqa: E402

SEEDS = (0, 1, 2, 3, 4)


#: where the learned loss's shape is read: near a fresh model's predictions (1/C = 0.1), half-way, confident
PROBES = (0.1, 0.5, 0.9)


def loss_shape(snapshot: dict[str, Any]) -> dict[str, float]:
    """The slope in p of ``ℓ(1, p) − ℓ(0, p)`` at :data:`PROBES` (central differences on the snapshot grid).

    Under softmax only this difference is identified: adding ``c·p`` to both branches adds
    ``c·Σ_j p_j = c`` to the loss and changes no gradient, so each branch's own slope means
    nothing. Cross-entropy's difference is ``−log p`` (``ℓ(0, ·) = 0``), slope ``−1/p``: −10, −2,
    −1.1 at the probes. A loss that keeps pushing the true class up has a negative slope everywhere.
    """
    p, l1, l0 = snapshot["p"], snapshot["loss_target1"], snapshot["loss_target0"]
    diff = [a - b for a, b in zip(l1, l0)]
    out = {}
    for q in PROBES:
        i = min(range(1, len(p) - 1), key=lambda k: abs(p[k] - q))
        out[f"slope_at_{q}"] = (diff[i + 1] - diff[i - 1]) / (p[i + 1] - p[i - 1])
    out["steep_ratio"] = out["slope_at_0.1"] / out["slope_at_0.9"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from adaloss.training import load_config, read_jsonl
    from adaloss.training.compare import compare

    base = load_config(HERE / "configs" / "mnist_logistic.yaml").replace(threads=args.threads, progress="off")
    if args.data_dir:
        base = base.replace(data_dir=args.data_dir)
    out = Path("runs/compare/mnist-logistic")
    results = list(compare(base, methods=["ce", "ml3"], seeds=SEEDS, out_dir=out))
    long_init = list(compare(base.replace(method_args={"ml3": {"init_steps": 2500}}), methods=["ml3"], seeds=SEEDS,
                             out_dir=Path(f"{out}-ml3init2500")))
    rows, curves = [], {}
    for label, runs in (("ml3", [r for r in results if r.method == "ml3"]), ("ml3 init2500", long_init)):
        for r in sorted(runs, key=lambda r: r.seed):
            snaps = read_jsonl(Path(r.run_dir) / "snapshots.jsonl")
            fitted = snaps[0]  # written after the offline fit; ML3's loss stays as it is
            records = read_jsonl(Path(r.run_dir) / "metrics.jsonl")
            ratios = [rec["train_grad_norm_ratio"] for rec in records if "train_grad_norm_ratio" in rec]
            rows.append({"variant": label, "seed": r.seed, "test_error": 100 * r.final["test_error"],
                         "grad_ratio_median": statistics.median(ratios) if ratios else float("nan"),
                         **loss_shape(fitted)})
            curves[(label, r.seed)] = fitted
    ce = [100 * r.final["test_error"] for r in results if r.method == "ce"]

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for (label, seed), snap in curves.items():
        if label != "ml3":
            continue
        err = next(r["test_error"] for r in rows if r["variant"] == label and r["seed"] == seed)
        axes[0].plot(snap["p"], snap["loss_target1"], label=f"seed {seed} ({err:.1f} %)")
        axes[1].plot(snap["p"], snap["loss_target0"], label=f"seed {seed}")
    axes[0].set_title("ML3 learned loss, target 1 (true class)")
    axes[1].set_title("target 0 (other classes)")
    for ax in axes:
        ax.set_xlabel("predicted probability p")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ℓ(y, p)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    figure = HERE / "figures" / "mnist_logistic" / "ml3_learned_losses.png"
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=120)

    def cell(v: float) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    keys = ["variant", "seed", "test_error", "grad_ratio_median", "slope_at_0.1", "slope_at_0.5", "slope_at_0.9",
            "steep_ratio"]
    table = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    table += ["| " + " | ".join(cell(r[k]) for k in keys) + " |" for r in rows]

    ml3 = [r for r in rows if r["variant"] == "ml3"]
    def mean(rs: list[dict[str, Any]], k: str) -> float:
        return statistics.mean(r[k] for r in rs) if rs else float("nan")

    long_rows = [r for r in rows if r["variant"] == "ml3 init2500"]
    reversed_seeds = [r["seed"] for r in ml3 if r["slope_at_0.9"] >= 0]
    flat = [r for r in ml3 if r["slope_at_0.9"] < 0]
    ce_ratio = 0.9 / 0.1
    lines = [
        "## ML3 on MNIST logistic regression: why ~23 % (`experiments/ml3_investigation.py`)",
        "",
        f"CE test error {statistics.mean(ce):.2f} ± {statistics.stdev(ce):.2f} % (5 seeds); ML3 (250 offline unrolls, "
        f"the default) {mean(ml3, 'test_error'):.2f} ± {statistics.stdev(r['test_error'] for r in ml3):.2f} %. "
        "Per ML3 run: the learned loss after the offline fit (frozen for training), read as the slope in p "
        "of ℓ(1, p) − ℓ(0, p) — under softmax only this difference matters (adding c·p to both branches "
        "changes no gradient); cross-entropy's slope is −1/p: −10, −2, −1.1 at p = 0.1, 0.5, 0.9 — and the "
        "median gradient-norm ratio ‖∇θ M_φ‖ / ‖∇θ CE‖ over training. `steep_ratio` = slope at 0.1 / slope "
        f"at 0.9 (CE: {ce_ratio:.1f}; negative: the loss pushes back above p = 0.5).",
        "",
        *table,
        "",
        f"Every learned loss is steep where a freshly initialised model predicts (p ≈ 1/C = 0.1: slope "
        f"{min(r['slope_at_0.1'] for r in ml3):.0f} to {max(r['slope_at_0.1'] for r in ml3):.0f}) and weak or "
        f"reversed where training goes: seeds {reversed_seeds} push back on confident correct predictions "
        f"(slope ≥ 0 at p = 0.9); the others are "
        f"{min((r['steep_ratio'] for r in flat), default=float('nan')):.0f}–"
        f"{max((r['steep_ratio'] for r in flat), default=float('nan')):.0f}× flatter at 0.9 than at 0.1 "
        f"(CE: {ce_ratio:.0f}×). With 2500 offline unrolls the loss gets steeper near chance (slope "
        f"{min(r['slope_at_0.1'] for r in long_rows):.0f} to {max(r['slope_at_0.1'] for r in long_rows):.0f}, "
        f"gradient-norm ratio {mean(long_rows, 'grad_ratio_median'):.1f}) and the error does not improve "
        f"({mean(long_rows, 'test_error'):.1f} %).",
        "",
        "Finding: the method, not a defect. ML3's offline objective is the improvement of one step taken "
        "from a fresh model, so it only ever sees near-chance predictions; it shapes the loss there (large "
        f"first steps) and leaves the confident regime unconstrained, and ML3 then trains {base.steps} steps with "
        "that frozen loss — the short-horizon bias the AdaLFL paper describes. The same loss network and "
        "meta-gradient adapted online (AdaLFL) beat CE on this protocol (section `adalfl_mnist_logistic`); "
        "the meta-gradient itself is checked against a float64 create_graph reference in the tests.",
        "",
        f"Figure: `experiments/figures/mnist_logistic/ml3_learned_losses.png`. Runs: `{out}` and "
        f"`{out}-ml3init2500`.",
        "",
        "Generated by:",
        "",
        "```",
        "python experiments/ml3_investigation.py --data-dir ../shared/datasets --threads 1",
        "```",
        "",
    ]
    text = "\n".join(lines)
    write_section("ml3_logistic_investigation", text)


if __name__ == "__main__":
    main()
