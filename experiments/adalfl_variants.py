"""AdaLFL variants against cross-entropy on one protocol: the learned learning rate (``learn_lr``),
the fast mode (``meta_gradient=forward_difference``), and a fair baseline — cross-entropy with its
learning rate tuned on the validation split (``ce_tuned``: a grid of LRs at the same step budget,
the LR with the best validation error picked per seed, its test error reported).

    python experiments/adalfl_variants.py --data-dir ../shared/datasets --config mnist_logistic \\
        [--variants ce ce_tuned adalfl learned_lr fast] [--threads 1]
    python experiments/adalfl_variants.py --config mnist_logistic --report   # section only, from finished runs

Each variant trains into its own folder ``runs/variants/<config>/<variant>`` (so variants, or
``--seeds`` subsets, can run in separate processes at once); ``--report`` writes
``experiments/results/adalfl_variants_<config>.md``. Every finished run's final metrics are also kept
in ``experiments/results/adalfl_variants_<config>.json`` (per variant and seed, with the commit checked
out when the report was written): ``runs/`` does not outlive a checkout, and one protocol (≈ 6 core-hours on the MNIST
MLP) does not fit one session, so a later session runs only the (variant, seed) pairs the JSON lacks
and the report merges both. The ``ce_tuned`` grid's entry at the protocol's own LR is the ``ce`` run
(the same configuration), not a second copy of it.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_results import write_section  # noqa: E402

SEEDS = (0, 1, 2, 3, 4)
#: the cross-entropy LR grid of ``ce_tuned`` (around the protocol's 0.01)
LR_GRID = (0.003, 0.01, 0.03, 0.1, 0.3)
#: the amortised meta-update intervals measured (``meta_every``; k = 1 is the ``adalfl`` row)
META_EVERY = (2, 4, 8, 16)
#: the offline-initialisation budgets measured with ``meta_every=INIT_SWEEP_K`` (2500, the paper's, is ``k8``)
INIT_STEPS = (0, 250, 1000)
INIT_SWEEP_K = 8
#: variant -> (method, method_args)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "ce": ("ce", {}),
    "adalfl": ("adalfl", {}),
    "learned_lr": ("adalfl", {"learn_lr": "global"}),
    "fast": ("adalfl", {"meta_gradient": "forward_difference"}),
    **{f"k{k}": ("adalfl", {"meta_every": k}) for k in META_EVERY},
    **{f"k{INIT_SWEEP_K}_init{n}": ("adalfl", {"meta_every": INIT_SWEEP_K, "init_steps": n}) for n in INIT_STEPS},
}
#: the variants of the amortisation section (``adalfl_meta_every_<config>``), in table order
AMORTISED = ("adalfl", *(f"k{k}" for k in META_EVERY), *(f"k{INIT_SWEEP_K}_init{n}" for n in INIT_STEPS))


def _base(config: str, data_dir: str | None, threads: int) -> Any:
    from adaloss.training import load_config

    base = load_config(HERE / "configs" / f"{config}.yaml").replace(threads=threads, progress="off")
    return base.replace(data_dir=data_dir) if data_dir else base


def _store(config: str) -> Path:
    return HERE / "results" / f"adalfl_variants_{config}.json"


def _stored(config: str) -> dict[str, dict[str, dict[str, Any]]]:
    """``{folder: {seed: final metrics}}`` kept from earlier sessions' runs."""
    path = _store(config)
    return json.loads(path.read_text()) if path.exists() else {}


def _jobs(variants: list[str], base_lr: float) -> list[tuple[str, str, float | None]]:
    """(folder, method, lr or None) per run group; the grid's base-LR entry is the ``ce`` folder."""
    jobs = []
    for name in variants:
        if name == "ce_tuned":
            if "ce" not in variants and base_lr in LR_GRID:  # its base-LR entry
                jobs.append(("ce", "ce", None))
            jobs += [(f"ce_lr{lr}", "ce", lr) for lr in LR_GRID if lr != base_lr]
        else:
            jobs.append((name, VARIANTS[name][0], None))
    return jobs


def run(config: str, variants: list[str], seeds: list[int], data_dir: str | None, threads: int) -> None:
    from adaloss.training.compare import compare

    base = _base(config, data_dir, threads)
    root = Path("runs/variants") / config
    stored = _stored(config)
    for folder, method, lr in _jobs(variants, base.lr):
        todo = [s for s in seeds if str(s) not in stored.get(folder, {})]
        if not todo:
            continue
        cfg = base.replace(lr=lr) if lr is not None else base.replace(method_args={method: VARIANTS[folder][1]})
        # this script's own folders: a run left by another configuration (e.g. other library defaults) is
        # replaced; the finished seeds are kept in the JSON
        compare(cfg, methods=[method], seeds=todo, out_dir=root / folder, overwrite=True)


def _finals(folder: Path, method: str, stored: dict[str, dict[str, Any]], commit: str) -> dict[int, dict[str, Any]]:
    out = {int(seed): final for seed, final in stored.items()}
    for seed in SEEDS:
        summary = folder / method / f"seed{seed}" / "summary.json"
        if summary.exists():
            data = json.loads(summary.read_text())
            out[seed] = {**data["final"], "wall_time_s": data["wall_time_s"], "report_commit": commit}
    return {s: out[s] for s in sorted(out) if s in SEEDS}


def _commit() -> str:
    import subprocess

    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE)
    return done.stdout.strip() or "unknown"


def _edge(picked: dict[int, float]) -> str:
    """A warning when validation picked an end of the grid: the tuned baseline could do better beyond it."""
    ends = [lr for lr in picked.values() if lr in (LR_GRID[0], LR_GRID[-1])]
    if not ends:
        return ""
    return (f"; an end of the grid was picked for {len(ends)} of {len(picked)} seeds ({sorted(set(ends))}), so "
            "cross-entropy might do better still beyond it")


def report(config: str) -> None:
    from adaloss.training.compare import welch_p_value

    root = Path("runs/variants") / config
    stored = _stored(config)
    base_lr = _base(config, None, 1).lr
    folders = {name: method for name, (method, _) in VARIANTS.items()}
    folders.update({f"ce_lr{lr}": "ce" for lr in LR_GRID if lr != base_lr})
    commit = _commit()
    finals = {f: _finals(root / f, m, stored.get(f, {}), commit) for f, m in folders.items()}
    kept = {f: {str(s): r for s, r in rows.items()} for f, rows in finals.items() if rows}
    if not kept:
        raise SystemExit(f"no finished runs for {config} under {root} or in {_store(config)}; nothing to report")
    _store(config).write_text(json.dumps(kept, indent=1, sort_keys=True) + "\n")
    rows: dict[str, dict[int, dict[str, Any]]] = {name: finals[name] for name in VARIANTS}
    grid = {lr: finals["ce" if lr == base_lr else f"ce_lr{lr}"] for lr in LR_GRID}
    tuned: dict[int, dict[str, Any]] = {}
    picked: dict[int, float] = {}
    for seed in SEEDS:
        have = {lr: g[seed] for lr, g in grid.items() if seed in g}
        if len(have) == len(LR_GRID):
            lr = min(have, key=lambda k: have[k]["valid_error"])  # chosen on validation only
            picked[seed], tuned[seed] = lr, have[lr]
    rows["ce_tuned"] = tuned

    def stats(name: str, key: str) -> str:
        values = [100 * r[key] for r in rows[name].values()]
        if len(values) < 2:
            return "—"
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"

    def p(name: str, against: str) -> str:
        a = [r["test_error"] for r in rows[name].values()]
        b = [r["test_error"] for r in rows[against].values()]
        value = welch_p_value(a, b) if name != against else None
        return "—" if value is None else f"{value:.3g}"

    lines = [
        f"## AdaLFL variants and a tuned-LR baseline: {config} (`experiments/adalfl_variants.py`)",
        "",
        f"Protocol `experiments/configs/{config}.yaml`, seeds {','.join(map(str, SEEDS))}; mean ± sample std over "
        "seeds; p: two-sided Welch t-test of the test error. `ce_tuned`: cross-entropy at each LR of "
        f"{list(LR_GRID)} (same steps), the LR with the lowest validation error picked per seed "
        f"(picked: {[picked.get(s) for s in SEEDS]}){_edge(picked)}. `learned_lr`: AdaLFL with `learn_lr=global`; "
        "`fast`: AdaLFL with `meta_gradient=forward_difference`.",
        "",
        "| variant | seeds | valid_error (%) | test_error (%) | wall time (s) | p vs ce | p vs ce_tuned | p vs adalfl |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("ce", "ce_tuned", "adalfl", "learned_lr", "fast"):
        if not rows[name]:
            continue
        times = [r["wall_time_s"] for r in rows[name].values()]
        wall = f"{statistics.mean(times):.1f}" if times else "—"
        lines.append(f"| {name} | {len(rows[name])} | {stats(name, 'valid_error')} | {stats(name, 'test_error')} | "
                     f"{wall} | {p(name, 'ce')} | {p(name, 'ce_tuned')} | {p(name, 'adalfl')} |")
    lines += ["", "Generated by:", "", "```",
              f"python experiments/adalfl_variants.py --data-dir ../shared/datasets --config {config} --threads 1",
              f"python experiments/adalfl_variants.py --config {config} --report", "```", ""]
    write_section(f"adalfl_variants_{config}", "\n".join(lines))
    if any(rows[name] for name in AMORTISED[1:]):
        _report_amortised(config, rows, stats, p)


def _cost_model(model: str) -> dict[str, float] | None:
    """Step costs in CE steps (``benchmarks/results/step_cost_cpu.json``, one idle interleaved run)."""
    path = HERE.parent / "benchmarks" / "results" / "step_cost_cpu.json"
    if not path.exists():
        return None
    entry = json.loads(path.read_text())["results"].get(model, {})
    return entry.get("cost_model")


def run_cost(steps: int, init_steps: int, meta_every: int, cost: dict[str, float]) -> float:
    """One AdaLFL run's cost in CE runs of the same length: ``init_steps`` unrolls of Alg. 1, then
    ``steps`` online steps of which every ``meta_every``-th is a meta step and the rest plain steps."""
    meta = -(-steps // meta_every)
    return (init_steps * cost["init_unroll"] + meta * cost["meta_step"] + (steps - meta) * cost["plain_step"]) / steps


def _report_amortised(config: str, rows: dict[str, dict[int, dict[str, Any]]], stats: Any, p: Any) -> None:
    """The section ``adalfl_meta_every_<config>``: test error against k = 1 and ``ce_tuned``, and what
    each run costs end to end (offline initialisation included) in CE runs."""
    base = _base(config, None, 1)
    cost = _cost_model(base.model)
    from adaloss.learners.adalfl import AdaLFLLearner

    init_default = int(inspect.signature(AdaLFLLearner).parameters["init_steps"].default)
    ce_wall = [r["wall_time_s"] for r in rows["ce"].values()]

    def settings(name: str) -> tuple[int, int]:
        args = VARIANTS[name][1]
        return int(args.get("meta_every", 1)), int(args.get("init_steps", init_default))

    lines = [
        f"## AdaLFL with amortised meta-updates: {config} (`experiments/adalfl_variants.py`)",
        "",
        f"Protocol `experiments/configs/{config}.yaml` ({base.steps} steps), seeds {','.join(map(str, SEEDS))}; "
        "mean ± sample std over seeds; p: two-sided Welch t-test of the test error. `k`: `meta_every` (φ updated on "
        "every k-th step, plain steps with the current learned loss between); `init`: the offline initialisation's "
        "unrolls (Alg. 1). **cost**: one run end to end (initialisation + training) in cross-entropy runs of the "
        "same length, from the per-step costs that `benchmarks/step_cost.py` measured in one idle interleaved run "
        + (f"(CE steps: init unroll {cost['init_unroll']:.2f}, meta step {cost['meta_step']:.2f}, plain step "
           f"{cost['plain_step']:.2f})" if cost else "(not measured for this model)")
        + "; `ce_tuned` costs its 5-run sweep. **wall ratio**: mean wall time of a run over the mean of the `ce` "
        "runs (runs made two at a time at one thread each, so indicative; the k = 1 row's runs predate the "
        "leaner exact step, see its commit in the JSON).",
        "",
        "| variant | k | init | seeds | test_error (%) | p vs k=1 | p vs ce_tuned | cost (CE runs) | wall (s) | "
        "wall ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("ce", "ce_tuned"):
        if rows[name] and ce_wall:
            sweep = len(LR_GRID) if name == "ce_tuned" else 1
            lines.append(f"| {name} | — | — | {len(rows[name])} | {stats(name, 'test_error')} | {p(name, 'adalfl')} | "
                         f"{p(name, 'ce_tuned')} | {sweep} | {sweep * statistics.mean(ce_wall):.1f} | {sweep:.2f} |")
    for name in AMORTISED:
        if not rows[name]:
            continue
        k, init = settings(name)
        times = [r["wall_time_s"] for r in rows[name].values()]
        run = f"{run_cost(base.steps, init, k, cost):.2f}" if cost else "—"
        ratio = f"{statistics.mean(times) / statistics.mean(ce_wall):.2f}" if ce_wall else "—"
        lines.append(f"| {name} | {k} | {init} | {len(rows[name])} | {stats(name, 'test_error')} | {p(name, 'adalfl')} | "
                     f"{p(name, 'ce_tuned')} | {run} | {statistics.mean(times):.1f} | {ratio} |")
    lines += ["", "Generated by:", "", "```",
              "python benchmarks/step_cost.py > benchmarks/results/step_cost_cpu.json",
              f"python experiments/adalfl_variants.py --data-dir ../shared/datasets --config {config} --threads 1 "
              f"--variants {' '.join(AMORTISED[1:])}",
              f"python experiments/adalfl_variants.py --config {config} --report", "```", ""]
    write_section(f"adalfl_meta_every_{config}", "\n".join(lines))



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="mnist_logistic")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", nargs="+", default=["ce", "ce_tuned", "adalfl", "learned_lr", "fast"],
                    choices=["ce", "ce_tuned", *VARIANTS], help="the k<K> and k8_init<N> rows are the amortised "
                    "meta-updates (meta_every=K) and the offline-initialisation budgets (init_steps=N)")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), choices=SEEDS,
                    help="train only these seeds (to split one protocol over processes or sessions)")
    ap.add_argument("--report", action="store_true", help="only write the section from finished runs")
    args = ap.parse_args()
    if not args.report:
        run(args.config, args.variants, args.seeds, args.data_dir, args.threads)
    report(args.config)


if __name__ == "__main__":
    main()
