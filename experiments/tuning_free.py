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
    for seed in seeds:
        for folder, (method, options, changes) in table.items():
            if only and not any(folder == r or folder.startswith(f"{r}_lr") or (r == "label_smoothing_tuned"
                                                                              and folder.startswith("ls"))
                                for r in only):
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
    _collect(args.protocol, args.config)


if __name__ == "__main__":
    main()
