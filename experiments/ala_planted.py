"""ALA on a planted loss-metric mismatch with a known answer (the ladder's second rung).

Imbalanced Fashion-MNIST (classes 2, 4, 6 keep 5 % of their training and validation rows; the
test split stays balanced), an MLP, target metric the balanced error
(``experiments/configs/fmnist_imbalanced.yaml``). Cross-entropy serves it badly; class-weighted
cross-entropy is the known better loss (``ce_weighted``: weights ∝ 1 / class frequency, and its
square root). Rows, 5 seeds each:

* ``ce`` — cross-entropy;
* ``ce_weighted`` (power 1) and ``ce_weighted`` power ½ — the oracles;
* ``ala`` — the tied class-frequency family (Φ = τ, weights ∝ f_c^(−τ), τ ∈ [0, 1] starting at
  0 = CE) with the default preset's settings for it, learning τ online from the balanced error;
* ``ala`` ``family=class_weight`` — one log-weight per class (C decisions per episode);
* the default ``ala`` row with four workers pooling their episodes into one policy (the paper's
  setting; worker 0 is reported), and with an entropy bonus;
* the default ``ala`` row with the previous default's controller windows of K = 100 steps (30
  episodes per run; the default K = 50 gives 60);
* the default ``ala`` row starting from a warm-started policy (the paper's transfer claim used as
  a training strategy): three ALA runs with other seeds (100, 101, 102), each continuing the
  previous one's policy, then every evaluation seed starts from that policy and keeps training it.

The section reports the table, how much of the CE→oracle gap each ALA row closes, and what the
controller learned (τ, the minority/majority weight ratio, the policy's entropy).

    python experiments/ala_planted.py --data-dir ../shared/datasets
    python experiments/make_results.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = "fmnist_imbalanced"
#: the overrides of every class-frequency ALA row: the tied family, the reward on the whole validation split
FREQUENCY = ("method_args.ala.family=class_frequency", "method_args.ala.val_subset=all")
#: (label, method, overrides, out folder name)
ROWS = [
    ("ce", "ce", (), "ce"),
    ("ce_weighted (1/f)", "ce_weighted", (), "ce"),
    ("ce_weighted (1/√f)", "ce_weighted", ("method_args.ce_weighted.power=0.5",), "ce_sqrt"),
    ("ala (class_frequency)", "ala", FREQUENCY, "ala"),
    ("ala (class_weight)", "ala", ("method_args.ala.family=class_weight", "method_args.ala.val_subset=all"),
     "ala_class_weight"),
    # candidates for sample efficiency , each beside the default row
    ("ala (class_frequency, workers=4)", "ala", ("workers=4", *FREQUENCY), "ala_workers4"),
    ("ala (class_frequency, entropy_coef=0.01)", "ala", (*FREQUENCY, "method_args.ala.entropy_coef=0.01"), "ala_entropy"),
    # the previous default: windows of K = 100 steps, 30 episodes per run
    ("ala (class_frequency, K=100)", "ala", (*FREQUENCY, "method_args.ala.every=100"), "ala_K100"),
    ("ala (class_frequency, warm-started policy)", "ala", (*FREQUENCY, "method_args.ala.policy={warm_policy}"), "ala_warm"),
]
#: the warm-started row's policy: ALA runs with these seeds (none of them an evaluation seed), each
#: starting from the previous run's policy, so the policy has seen their episodes in turn
WARMUP_SEEDS = (100, 101, 102)


def warm_policy(runs: Path, data_dir: str, runtime: list[str]) -> tuple[Path, list[str]]:
    """Train the warm-up chain (finished runs reused); the last run's policy file and the commands."""
    from adaloss.training import load_config
    from adaloss.training.compare import compare

    policy: Path | None = None
    commands = []
    for i, seed in enumerate(WARMUP_SEEDS):
        overrides = [*FREQUENCY, *([f"method_args.ala.policy={policy}"] if policy else [])]
        cfg = load_config(HERE / "configs" / f"{CONFIG}.yaml", [*overrides, *runtime]).replace(data_dir=data_dir)
        folder = runs / "ala_warmup" / f"run{i}"
        compare(cfg, methods=("ala",), seeds=[seed], out_dir=folder)
        commands.append(f"adaloss compare -c experiments/configs/{CONFIG}.yaml --methods ala --seeds {seed} "
                        f"--data-dir {data_dir} --out {folder} {' '.join(overrides)}")
        policy = folder / "ala" / f"seed{seed}" / "policy.pt"
    assert policy is not None
    return policy, commands


def _final_weights(run_dir: Path) -> dict | None:  # type: ignore[type-arg]
    snaps = run_dir / "snapshots.jsonl"
    if not snaps.is_file():
        return None
    last = json.loads(snaps.read_text().strip().splitlines()[-1])
    return last if "weights" in last else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--runs", default="runs/compare/fmnist_imbalanced")
    p.add_argument("--rows", nargs="+", default=None, metavar="LABEL",
                   help="only these rows (their labels as in the table; `ce` is always run)")
    p.add_argument("--tag", default=None,
                   help="write the section to ala_planted-TAG (e.g. an independent replicate on other seeds)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from adaloss.training import load_config
    from adaloss.training.compare import format_markdown, summarise, welch_p_value
    from ala_protocol import controller_summary
    from make_results import write_section

    seeds = [int(s) for s in args.seeds.split(",")]
    runtime = [f"threads={args.threads}"] if args.threads else []
    cfg0 = load_config(HERE / "configs" / f"{CONFIG}.yaml", [])
    minority = list(cfg0.minority_classes or [])
    key = f"test_{cfg0.metric}"
    table, values, commands, learned = [], {}, [], {}
    warm: Path | None = None
    rows_run = [r for r in ROWS if args.rows is None or r[0] == "ce" or r[0] in args.rows]
    if args.rows is not None and len(rows_run) != len(set(args.rows) | {"ce"}):
        p.error(f"--rows: expected labels among {[r[0] for r in ROWS]}, but got {args.rows}")
    for label, method, overrides, out in rows_run:
        from adaloss.training.compare import compare

        if any("{warm_policy}" in o for o in overrides):
            if warm is None:
                warm, warm_commands = warm_policy(Path(args.runs), args.data_dir, runtime)
                commands += warm_commands
            overrides = tuple(o.format(warm_policy=warm) for o in overrides)

        cfg = load_config(HERE / "configs" / f"{CONFIG}.yaml", [*overrides, *runtime]).replace(data_dir=args.data_dir)
        folder = Path(args.runs) / out
        print(f"{label}: {method} x {seeds} -> {folder}", file=sys.stderr)
        results = [dataclasses.replace(r, method=label)  # one table row per label
                   for r in compare(cfg, methods=(method,), seeds=seeds, out_dir=folder)]
        table += results
        values[label] = [r.final[key] for r in results if r.final.get(key) is not None]
        commands.append(f"adaloss compare -c experiments/configs/{CONFIG}.yaml --methods {method} --seeds {args.seeds} "
                        f"--data-dir {args.data_dir} --out {folder} {' '.join(overrides)}".rstrip())
        if method == "ala":
            rows = []
            for r in results:
                w = _final_weights(r.run_dir)
                if w is None:
                    continue
                weights = w["weights"]
                major = [x for c, x in enumerate(weights) if c not in minority]
                ratio = statistics.fmean(weights[c] for c in minority) / statistics.fmean(major)
                rows.append((w.get("tau"), ratio))
            learned[label] = (rows, controller_summary(results, label))
    ce = statistics.fmean(values["ce"])
    oracle_label = min((lbl for lbl in values if lbl.startswith("ce_weighted")), key=lambda lbl: statistics.fmean(values[lbl]))
    oracle = statistics.fmean(values[oracle_label])
    lines = [
        "## ALA on a planted mismatch: imbalanced Fashion-MNIST, target balanced error (`experiments/ala_planted.py`)"
        + (f" — `{args.tag}`" if args.tag else ""),
        "",
        f"`experiments/configs/{CONFIG}.yaml`: classes {minority} keep {cfg0.minority_fraction:.0%} of their training "
        f"and validation rows (test split balanced, so test error = test balanced error); MLP {cfg0.model_args}, "
        f"{cfg0.steps} steps, SGD lr {cfg0.lr} momentum {cfg0.momentum}. Seeds {args.seeds}; mean ± sample std; "
        "p: Welch t-test against `ce`. Wall times are each run's own, one thread per run, with other jobs "
        "sharing the 2-core machine: not a timing.",
        "",
        format_markdown(summarise(table, baseline="ce")),
        "",
    ]
    for label in values:
        if not label.startswith("ala") or not values[label]:
            continue
        m = statistics.fmean(values[label])
        pv = welch_p_value(values[label], values["ce"])
        closed = (ce - m) / (ce - oracle) if ce != oracle else float("nan")
        rows, ctl = learned.get(label, ([], ""))
        taus = [t for t, _ in rows if t is not None]
        ratios = [r for _, r in rows]
        lines.append(
            f"- **{label}**: {key} {m:.4f} vs ce {ce:.4f} (p = {pv:.3g}) and the best oracle `{oracle_label}` "
            f"{oracle:.4f}: closes **{closed:.0%}** of the CE→oracle gap. "
            + (f"Final τ per seed: {', '.join(f'{t:.2f}' for t in taus)}. " if taus else "")
            + (f"Minority/majority class-weight ratio at the end: {statistics.fmean(ratios):.2f} "
               f"(per seed {', '.join(f'{r:.2f}' for r in ratios)}; 1 = cross-entropy). " if ratios else "")
            + ctl)
    lines += ["", "Generated by (each row one compare; finished runs are reused):", "", "```", *commands,
              f"python experiments/ala_planted.py --data-dir {args.data_dir} --seeds {args.seeds}"
              + (f" --threads {args.threads}" if args.threads else "")
              + (" --rows " + " ".join(shlex.quote(r) for r in args.rows) if args.rows else "")
              + (f" --tag {args.tag}" if args.tag else ""),
              "```", ""]
    write_section("ala_planted" + (f"-{args.tag}" if args.tag else ""), "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
