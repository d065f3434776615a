"""What a user would pick instead of AdaLFL, at equal compute: learning-rate-free and schedule-free
optimisers, hypergradient descent, a tuned learning rate — and, under label noise, tuned and robust
losses.

Two protocols, each a section per config:

* ``tuning_free`` (``mnist_logistic``, ``mnist_mlp``, ``mnist_lenet5``, ``california_housing``): the
  task's plain loss at the protocol's LR (``ce``/``mse``), the same with the LR picked on validation
  from a 5-point grid (``ce_tuned``/``mse_tuned``), AdaLFL (the paper's method, k = 1), its
  recommended amortised setting (``meta_every=8, init_steps=1000``), AdaLFL with a learned LR, and
  the plain loss trained with ``hd_sgd``, ``schedulefree_sgd``, ``prodigy`` and ``dadapt_sgd``
  (their recommended settings, ``adaloss.learners.peers.OptimizerPeerLearner``).
* ``label_noise`` (``mnist_mlp``, ``mnist_lenet5`` with 40 % symmetric noise on the training and
  validation labels, ``label_noise=0.4``): CE, ``ce_tuned``, label smoothing with ε picked on
  validation (``label_smoothing_tuned``), GCE, SCE, amortised AdaLFL, and amortised AdaLFL whose
  meta-objective sees a clean validation split (``label_noise_valid=false``: assumes a trusted set
  of 10 % of the training size exists; every other row picks and meta-learns on noisy labels).

    python experiments/tuning_free.py --config mnist_mlp --data-dir ../shared/datasets [--rows ...] [--seeds ...]
    python experiments/tuning_free.py --protocol label_noise --config mnist_mlp --data-dir ../shared/datasets
    python experiments/tuning_free.py --config mnist_mlp --report     # section and figure from finished runs

Runs train into ``runs/<protocol>/<config>/<row>`` one (row, seed) at a time, seed by seed, so a
partial protocol has whole seeds; every finished run's final metrics and wall time are kept in
``experiments/results/<protocol>_<config>.json`` (``runs/`` does not outlive a checkout) and a later
session trains only what the JSON lacks. On the MNIST configs, the rows the AdaLFL variants protocol
already measured under the same configuration and seeds (``ce``, the LR grid, ``adalfl``,
``learned_lr``, the amortised setting) are read from ``adalfl_variants_<config>.json``, not retrained.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_results import write_section  # noqa: E402

SEEDS = (0, 1, 2, 3, 4)
PEERS = ("hd_sgd", "schedulefree_sgd", "prodigy", "dadapt_sgd")
#: the amortised AdaLFL setting the AdaLFL-cost measurements recommend (``adalfl_meta_every_<config>``)
AMORTISED = {"meta_every": 8, "init_steps": 1000}
#: label smoothing's ε grid of ``label_smoothing_tuned``
SMOOTHING_GRID = (0.05, 0.1, 0.2, 0.4)
NOISE = {"label_noise": 0.4}
PROTOCOLS = {"tuning_free": ("mnist_logistic", "mnist_mlp", "mnist_lenet5", "california_housing"),
             "label_noise": ("mnist_mlp", "mnist_lenet5")}
REGRESSION = ("california_housing",)
#: row of this protocol -> folder of the AdaLFL variants protocol holding the same runs
FROM_VARIANTS = {"adalfl": "adalfl", "learned_lr": "learned_lr", "adalfl_amortised": "k8_init1000"}


def lr_grid(config: str, lr: float) -> tuple[float, ...]:
    """Five LRs around the protocol's: ×0.3 … ×30 (the AdaLFL variants protocol's grid), or ×0.1 … ×10
    with momentum 0.9 (California housing), whose effective step is already ten times the LR."""
    factors = (0.1, 0.3, 1.0, 3.0, 10.0) if config in REGRESSION else (0.3, 1.0, 3.0, 10.0, 30.0)
    return tuple(round(lr * f, 10) for f in factors)


def plain(config: str) -> str:
    return "mse" if config in REGRESSION else "ce"


def rows(protocol: str, config: str, lr: float) -> dict[str, tuple[str, dict[str, Any], dict[str, Any]]]:
    """Row folder -> (method, method options, config changes), in table order; a tuned row is its grid's folders."""
    base = plain(config)
    grid = {f"{base}_lr{g}": (base, {}, {"lr": g}) for g in lr_grid(config, lr) if g != lr}
    out: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {base: (base, {}, {}), **grid}
    if protocol == "tuning_free":
        out.update({
            "adalfl": ("adalfl", {}, {}),
            "adalfl_amortised": ("adalfl", dict(AMORTISED), {}),
            "learned_lr": ("adalfl", {"learn_lr": "global"}, {}),
            **{peer: (peer, {}, {}) for peer in PEERS},
        })
    else:
        out.update({
            **{f"ls{e}": ("label_smoothing", {"smoothing": e}, {}) for e in SMOOTHING_GRID},
            "gce": ("gce", {}, {}),
            "sce": ("sce", {}, {}),
            "adalfl_amortised": ("adalfl", dict(AMORTISED), {}),
            "adalfl_amortised_clean": ("adalfl", dict(AMORTISED), {"label_noise_valid": False}),
        })
    return out


def _base(protocol: str, config: str, data_dir: str | None, threads: int) -> Any:
    from adaloss.training import load_config

    base = load_config(HERE / "configs" / f"{config}.yaml").replace(threads=threads, progress="off")
    if protocol == "label_noise":
        base = base.replace(**NOISE)
    return base.replace(data_dir=data_dir) if data_dir else base


def _store(protocol: str, config: str) -> Path:
    return HERE / "results" / f"{protocol}_{config}.json"


def _load(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    return json.loads(path.read_text()) if path.exists() else {}


def _variants(protocol: str, config: str, lr: float) -> dict[str, dict[str, dict[str, Any]]]:
    """The rows the AdaLFL variants protocol measured under this configuration (tuning_free, MNIST)."""
    if protocol != "tuning_free":
        return {}
    stored = _load(HERE / "results" / f"adalfl_variants_{config}.json")
    mapped = {row: stored[folder] for row, folder in FROM_VARIANTS.items() if folder in stored}
    for g in lr_grid(config, lr):
        name = "ce" if g == lr else f"ce_lr{g}"
        if name in stored:
            mapped[name] = stored[name]
    return mapped


def run(protocol: str, config: str, only: list[str] | None, seeds: list[int], data_dir: str | None,
        threads: int) -> None:
    from adaloss.training.compare import compare

    base = _base(protocol, config, data_dir, threads)
    root = Path("runs") / protocol / config
    done = {**_load(_store(protocol, config)), **_variants(protocol, config, base.lr)}
    table = rows(protocol, config, base.lr)
    grids = _grids(protocol, config, base.lr)
    wanted = None if not only else {f for r in only for f in (grids[r] if r in grids else [r])}
    unknown = sorted(set(only or ()) - set(table) - set(grids))
    if unknown:
        raise SystemExit(f"--rows: unknown row(s) {unknown}; rows: {[*table, *grids]}")
    for seed in seeds:
        for folder, (method, options, changes) in table.items():
            if wanted is not None and folder not in wanted:
                continue
            if str(seed) in done.get(folder, {}):
                continue
            cfg = base.replace(**changes, method_args={method: options})
            # this script's own folders: a run left by another configuration is replaced; finished seeds are in the JSON
            compare(cfg, methods=[method], seeds=[seed], out_dir=root / folder, overwrite=True)
            _collect(protocol, config)


def _commit() -> str:
    import subprocess

    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE)
    return out.stdout.strip() or "unknown"


def _collect(protocol: str, config: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Merge the finished runs under ``runs/`` into the JSON and return it."""
    base = _base(protocol, config, None, 1)
    stored = _load(_store(protocol, config))
    root = Path("runs") / protocol / config
    commit = None
    for folder, (method, _, _) in rows(protocol, config, base.lr).items():
        for seed in SEEDS:
            run_dir = root / folder / method / f"seed{seed}"
            found = [f for f in (run_dir / "summary.json", run_dir / "diverged.json") if f.exists()]
            if found and str(seed) not in stored.get(folder, {}):
                commit = commit or _commit()
                data = json.loads(found[0].read_text())
                record = {**data["final"], "wall_time_s": data["wall_time_s"], "report_commit": commit}
                if "diverged" in data:
                    record["diverged"] = data["diverged"]
                stored.setdefault(folder, {})[str(seed)] = record
    if stored:
        _store(protocol, config).write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
    return stored

#: rows of each protocol's table, in order; a ``*_tuned`` row is picked per seed from its grid on validation
TABLE = {"tuning_free": ("{base}", "{base}_tuned", "adalfl", "adalfl_amortised", "learned_lr", *PEERS),
         "label_noise": ("ce", "ce_tuned", "label_smoothing_tuned", "gce", "sce", "adalfl_amortised",
                         "adalfl_amortised_clean")}
#: the AdaLFL row the others are tested against
ADALFL_ROW = {"tuning_free": "adalfl", "label_noise": "adalfl_amortised"}


def _grids(protocol: str, config: str, lr: float) -> dict[str, dict[str, float]]:
    """Tuned row -> {folder: its grid value}."""
    base = plain(config)
    grids = {f"{base}_tuned": {(base if g == lr else f"{base}_lr{g}"): g for g in lr_grid(config, lr)}}
    if protocol == "label_noise":
        grids["label_smoothing_tuned"] = {f"ls{e}": e for e in SMOOTHING_GRID}
    return grids


def _step_costs(config: str) -> dict[str, float]:
    """Idle per-step cost ratios to the plain step (``benchmarks/results/peer_step_cost_cpu.json``)."""
    path = HERE.parent / "benchmarks" / "results" / "peer_step_cost_cpu.json"
    if not path.exists():
        return {}
    model = _base("tuning_free" if config in PROTOCOLS["tuning_free"] else "label_noise", config, None, 1).model
    entry = json.loads(path.read_text())["results"].get(model, {})
    return dict(entry.get("ratio_to_plain_median", {}))


def _adalfl_cost(config: str, options: dict[str, Any], steps: int) -> float | None:
    from adalfl_variants import _cost_model, run_cost

    from adaloss.learners.adalfl import AdaLFLLearner
    import inspect

    cost = _cost_model(_base("label_noise" if config in PROTOCOLS["label_noise"] else "tuning_free", config,
                             None, 1).model)
    if cost is None:
        return None
    init = int(options.get("init_steps", inspect.signature(AdaLFLLearner).parameters["init_steps"].default))
    return run_cost(steps, init, int(options.get("meta_every", 1)), cost) if not options.get("learn_lr") else None


def report(protocol: str, config: str) -> None:
    from adaloss.training.compare import welch_p_value

    base = _base(protocol, config, None, 1)
    stored = {**_collect(protocol, config), **_variants(protocol, config, base.lr)}
    if not stored:
        raise SystemExit(f"no finished runs for {protocol} {config}; nothing to report")
    metric = "mse" if config in REGRESSION else "error"
    scale = 1.0 if metric == "mse" else 100.0
    unit = "" if metric == "mse" else " (%)"
    table = rows(protocol, config, base.lr)
    grids = _grids(protocol, config, base.lr)
    finite = {f: {int(s): r for s, r in runs.items() if "diverged" not in r} for f, runs in stored.items()}
    results: dict[str, dict[int, dict[str, Any]]] = {}
    picks: dict[str, dict[int, float]] = {}
    for name in TABLE[protocol]:
        name = name.format(base=plain(config))
        if name in grids:
            results[name], picks[name] = {}, {}
            for seed in SEEDS:
                have = {f: finite.get(f, {}).get(seed) for f in grids[name]}
                if all(str(seed) in stored.get(f, {}) for f in grids[name]):  # the whole sweep ran
                    ok = {f: r for f, r in have.items() if r is not None}
                    best = min(ok, key=lambda f: ok[f][f"valid_{metric}"])  # chosen on validation only
                    results[name][seed], picks[name][seed] = ok[best], grids[name][best]
        else:
            results[name] = finite.get(name, {})
    walls = {f: [r["wall_time_s"] for r in runs.values()] for f, runs in stored.items()}
    plain_wall = statistics.mean(walls[plain(config)]) if walls.get(plain(config)) else None
    step_costs = _step_costs(config)

    def wall_of(name: str) -> float | None:
        folders = list(grids[name]) if name in grids else [name]
        if any(not walls.get(f) for f in folders):
            return None
        return sum(statistics.mean(walls[f]) for f in folders)

    def priced(name: str) -> float | None:
        """Total cost in plain runs, from idle step costs: the sweep for tuned rows."""
        if name in grids:
            return float(len(grids[name]))
        method, options, _ = table[name]
        if method == "adalfl":
            return _adalfl_cost(config, options, base.steps)
        key = "label_smoothing" if name.startswith("ls") else method
        return step_costs.get(key, 1.0 if method == plain(config) else None)

    def fmt(values: list[float], digits: int) -> str:
        if not values:
            return "—"
        if len(values) < 2:
            return f"{values[0]:.{digits}f}"
        return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

    def test(name: str) -> list[float]:
        return [scale * r[f"test_{metric}"] for r in results.get(name, {}).values()]

    def p(name: str, against: str) -> str:
        value = welch_p_value(test(name), test(against)) if name != against else None
        return "—" if value is None else f"{value:.3g}"

    tuned = f"{plain(config)}_tuned"
    adalfl = ADALFL_ROW[protocol]
    digits = 4 if metric == "mse" else 2
    lines = [
        f"## {'Tuning-free peers' if protocol == 'tuning_free' else 'Label noise'}: {config} "
        "(`experiments/tuning_free.py`)",
        "",
        _preamble(protocol, config, base, picks),
        "",
        f"| row | seeds | test {metric}{unit} | p vs {tuned} | p vs {adalfl} | wall of one run (s) | "
        "total cost (plain runs, idle step costs) | total cost (plain runs, wall) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    points = []
    for name in results:
        if not results[name] and not any(str(s) in stored.get(f, {}) for f in grids.get(name, [name]) for s in SEEDS):
            continue
        diverged = sum(1 for f in grids.get(name, [name]) for r in stored.get(f, {}).values() if "diverged" in r)
        one = statistics.mean(walls[name]) if walls.get(name) else (
            statistics.mean(walls[plain(config)]) if name in grids and walls.get(plain(config)) else None)
        total_wall = wall_of(name)
        ratio = total_wall / plain_wall if total_wall is not None and plain_wall else None
        cost = priced(name)
        label = name + (f" ({diverged} diverged)" if diverged else "")
        lines.append(f"| {label} | {len(results[name])} | {fmt(test(name), digits)} | {p(name, tuned)} | "
                     f"{p(name, adalfl)} | {'—' if one is None else f'{one:.1f}'} | "
                     f"{'—' if cost is None else f'{cost:.2f}'} | {'—' if ratio is None else f'{ratio:.2f}'} |")
        if test(name) and (cost if cost is not None else ratio) is not None:
            points.append((name, cost if cost is not None else ratio, test(name)))
    figure = _figure(protocol, config, points, f"test {metric}{unit}")
    lines += ["", f"Test {metric} against total cost, the Pareto front marked: `{figure}`"]
    if protocol == "label_noise":
        lines += _loss_figures(config)
    lines += ["",
              "Generated by:", "", "```",
              f"python experiments/tuning_free.py --protocol {protocol} --config {config} --data-dir ../shared/datasets",
              "python benchmarks/peer_step_cost.py > benchmarks/results/peer_step_cost_cpu.json",
              f"python experiments/tuning_free.py --protocol {protocol} --config {config} --report", "```", ""]
    write_section(f"{protocol}_{config}", "\n".join(lines))


def _loss_figures(config: str) -> list[str]:
    """The learned loss's evolution (seed 0) of the AdaLFL rows under label noise, and how to read it."""
    from adaloss.plotting import plot_run

    out = []
    for row in ("adalfl_amortised", "adalfl_amortised_clean"):
        run_dir = Path("runs") / "label_noise" / config / row / "adalfl" / "seed0"
        if not (run_dir / "snapshots.jsonl").is_file():
            continue
        folder = HERE / "figures" / f"label_noise_{config}" / row
        written = plot_run(run_dir, out_dir=folder)
        for path in written:
            if Path(path).name == "loss_evolution.png":
                out.append(f"Learned-loss evolution, `{row}` seed 0: `{Path(path).relative_to(HERE.parent)}`")
    if out:
        out.append("(A loss that learned robustness to the noise flattens for confidently wrong predictions — "
                   "their gradient small, as in GCE and SCE — where cross-entropy keeps growing.)")
    return [""] + out if out else []


def _preamble(protocol: str, config: str, base: Any, picks: dict[str, dict[int, float]]) -> str:
    picked = "; ".join(f"`{name}` picked {[pk.get(s) for s in SEEDS]}" for name, pk in picks.items())
    text = (f"Protocol `experiments/configs/{config}.yaml` ({base.steps} steps, {base.optimizer} lr {base.lr}"
            + (f", momentum {base.momentum}" if base.momentum else "") + f"), seeds {','.join(map(str, SEEDS))}; "
            "mean ± sample std over seeds; p: two-sided Welch t-test of the test metric. ")
    if protocol == "label_noise":
        text += ("**40 % symmetric label noise** on the training and validation labels (`label_noise=0.4`, seeded "
                 "by the run's seed; the test labels are clean); `adalfl_amortised_clean` meta-learns on a clean "
                 "validation split (`label_noise_valid=false`, assuming a trusted set of that size exists); every "
                 "other row, the tuned ones included, sees only noisy labels. ")
    text += (f"Tuned rows: the grid value with the lowest validation metric per seed ({picked}); their cost is "
             f"the whole sweep. `adalfl_amortised`: `meta_every={AMORTISED['meta_every']}, init_steps="
             f"{AMORTISED['init_steps']}`. **Total cost** in runs of the plain loss at the same length: from idle "
             "per-step costs (`benchmarks/peer_step_cost.py` for optimisers and losses, one thread; "
             "`benchmarks/step_cost.py`'s cost model for AdaLFL, two threads, MNIST models only; one idle interleaved "
             "run each), and from the measured wall times of the runs (made two at a time at one thread each on two "
             "cores, so indicative). The figure uses the idle cost, and the wall ratio where there is none. ")
    if protocol == "tuning_free" and config in PROTOCOLS["tuning_free"][:3]:
        text += ("The plain loss, its LR grid and the AdaLFL rows are the AdaLFL variants protocol's runs of the "
                 "same configuration and seeds (`adalfl_variants_<config>.json`).")
    return text


def _figure(protocol: str, config: str, points: list[tuple[str, float, list[float]]], ylabel: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rel = Path("experiments") / "figures" / f"{protocol}_{config}.png"
    path = HERE.parent / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    means = [(name, cost, statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for name, cost, v in points]
    front = [m for m in means if not any(o[1] <= m[1] and o[2] <= m[2] and (o[1], o[2]) != (m[1], m[2])
                                         for o in means)]
    for name, cost, mean, std in means:
        on = any(name == f[0] for f in front)
        ax.errorbar(cost, mean, yerr=std, fmt="o" if on else "s", color="C3" if on else "C0", capsize=3)
        ax.annotate(name, (cost, mean), textcoords="offset points", xytext=(5, 4), fontsize=8)
    front.sort(key=lambda m: m[1])
    ax.step([m[1] for m in front], [m[2] for m in front], where="post", color="C3", alpha=0.5,
            label="Pareto front (lower cost, lower metric)")
    ax.set_xscale("log")
    ax.set_xlabel("total cost (runs of the plain loss)")
    ax.set_ylabel(f"{ylabel}, mean ± std over seeds")
    ax.set_title(f"{protocol.replace('_', ' ')}: {config}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(rel)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="tuning_free", choices=sorted(PROTOCOLS))
    ap.add_argument("--config", default="mnist_logistic")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", nargs="+", default=None, help="train only these rows (a tuned row: its grid)")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), choices=SEEDS)
    ap.add_argument("--report", action="store_true", help="only write the section from finished runs")
    args = ap.parse_args()
    if args.config not in PROTOCOLS[args.protocol]:
        ap.error(f"--config for --protocol {args.protocol} is one of {list(PROTOCOLS[args.protocol])}, "
                 f"but got {args.config!r}")
    if not args.report:
        run(args.protocol, args.config, args.rows, args.seeds, args.data_dir, args.threads)
    report(args.protocol, args.config)


if __name__ == "__main__":
    main()
