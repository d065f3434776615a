"""How far healthy runs stay from the divergence limit: the default of ``divergence_factor``.

A run stops as diverged when a watched scalar of a step — the training loss, and the task loss on
the meta batch of meta-learners (``meta_loss``) — exceeds ``divergence_factor`` × its scale: for
``loss`` max(|first value|, 1), for ``meta_loss`` max(the untrained model's task loss, 1). This
script trains every method runnable on defaults on a classification, a regression and a
metric-learning protocol with ``log_every=1`` (every step's value is a record), and reports per
method the largest ratio |value| / scale over all steps, and the margin of the default factor.

    python experiments/divergence_margin.py --data-dir ../shared/datasets --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from adaloss.checkpoint import load_checkpoint
from adaloss.learners import methods_for
from adaloss.training import TrainConfig, read_jsonl, train
from adaloss.training.config import from_mapping

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "divergence_margin.json"

PROTOCOLS: dict[str, dict] = {
    "digits_mlp": {"dataset": "digits", "model": "mlp", "model_args": {"hidden": [256, 256]}, "steps": 1000},
    "california_housing_mlp": {"dataset": "california_housing", "model": "mlp_regressor", "steps": 1000},
    "digits_embedding": {"dataset": "digits", "model": "embedding", "task": "embedding", "steps": 1000,
                         "samples_per_class": 16, "batch_size": 64},
}
#: per-method options that keep the protocol short (the offline phases)
METHOD_ARGS = {"adalfl": {"init_steps": 250}, "ml3": {"init_steps": 250}}
SKIP = {"taylorglo"}


def measure(protocol: str, method: str, seeds: list[int], root: Path, data_dir: str | None, threads: int) -> dict:
    ratios = {"loss": 0.0, "meta_loss": 0.0}
    for seed in seeds:
        run = root / protocol / method / f"seed{seed}"
        cfg = from_mapping({**PROTOCOLS[protocol], "method": method, "seed": seed, "log_every": 1,
                            "checkpoint_every": PROTOCOLS[protocol]["steps"], "run_dir": str(run),
                            "method_args": METHOD_ARGS.get(method, {}), "data_dir": data_dir, "threads": threads,
                            "progress": "off", "divergence_factor": None})
        train(cfg, resume=True)
        scales = load_checkpoint(run / "checkpoints" / "last.pt").get("divergence_scales") or {}
        records = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("step", 0) > 0]
        for key in ratios:
            values = [r[f"train_{key}"] for r in records if r.get(f"train_{key}") is not None]
            scale = scales.get(key)
            if values and scale:
                ratios[key] = max(ratios[key], max(abs(v) for v in values) / scale)
    return ratios


def report(results: dict) -> str:
    factor = TrainConfig().divergence_factor
    lines = ["## divergence_margin", "",
             "Largest |value| / scale over every step of healthy runs (`log_every=1`, seeds 0–2), per protocol and "
             "method: `loss` is the training loss (scale: max(|first value|, 1)), `meta_loss` the meta-learners' task "
             "loss on the meta batch (scale: max(the untrained model's task loss, 1)). A run stops as diverged past "
             f"`divergence_factor` × scale; the default {factor:g} leaves the margin in the last column.", "",
             "Command: `python experiments/divergence_margin.py --data-dir ../shared/datasets --threads 1`", "",
             "| protocol | method | max loss ratio | max meta_loss ratio | margin of the default |",
             "|---|---|---|---|---|"]
    worst = 0.0
    for protocol, methods in results.items():
        for method, r in methods.items():
            top = max(r["loss"], r["meta_loss"])
            worst = max(worst, top)
            meta = f"{r['meta_loss']:.3g}" if r["meta_loss"] else "—"
            lines.append(f"| {protocol} | {method} | {r['loss']:.3g} | {meta} | {factor / top:.0f}× |")
    lines += ["", f"Largest ratio of any healthy step: {worst:.3g} (the default is {factor / worst:.0f}× above it). "
              f"Left out: {', '.join(sorted(SKIP))} (its CMA-ES search trains 1250 candidates per run).", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--root", default="runs/divergence_margin")
    ap.add_argument("--report", action="store_true", help="only write the section from the kept JSON")
    args = ap.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if not args.report:
        for protocol, spec in PROTOCOLS.items():
            task = spec.get("task", "regression" if "housing" in protocol else "classification")
            for method in methods_for(task, runnable_on_defaults=True):
                if method in SKIP or method in results.get(protocol, {}):
                    continue
                print(f"{protocol} {method}", flush=True)
                results.setdefault(protocol, {})[method] = measure(protocol, method, args.seeds, Path(args.root),
                                                                   args.data_dir, args.threads)
                RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    from make_results import write_section

    write_section("divergence_margin", report(results))
    assert all(math.isfinite(v) for m in results.values() for r in m.values() for v in r.values())


if __name__ == "__main__":
    main()
