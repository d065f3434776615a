"""How many pooled episodes ALA's controller needs at the reward noise a real run gives it: the
synthetic one-parameter task of ``adaloss.methods.ala.bandit.run_bandit`` played by W workers that
share one policy (threads of one process, ``ThreadGroup``: each worker its own φ, noise and action
samples; every update averages the workers' policy gradients and rewards, as ``workers=W`` and
torchrun ranks do), at the measured σ and the measured Δ of each family's action
(``experiments/results/ala_signal.json``; ``--signal TAG``: ``ala_signal-TAG.json``, e.g. the
metric-learning protocol's bins measured by ``ala_signal.py --config fmnist_metric --tag metric_K50``).

    # after ala_signal.py --tag K50 (the planted task) and --tag metric_K50 (the metric-learning bins)
    python experiments/ala_workers.py --signal K50 --seeds 6 --workers 1 4 8 16 32 64
    python experiments/ala_workers.py --signal metric_K50 --seeds 6 --workers 1 4 8 16 32 64

Writes ``experiments/results/ala_workers_bandit[-TAG].json`` and the section ``ala_workers_bandit[-TAG].md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: the measured actions: (key in the signal JSON, the family whose move it is)
ACTIONS = (("tau", "class_frequency (τ)"), ("oracle", "class_weight (all minority weights up)"),
           ("single", "class_weight (one minority weight up)"),
           ("pair_all", "class_pair (every minority–majority entry down)"),
           ("pair_single", "class_pair (one minority–majority entry down)"),
           ("bins_neg", "bins (every negative-pair bin below the margin up)"),
           ("bins_pos", "bins (every positive-pair bin up)"),
           ("bins_single", "bins (one negative-pair bin below the margin up)"))
#: the families whose actions ala_signal.py measures on their own protocols: (label, action-name prefix)
FAMILIES = (("class-pair family's", "pair_"), ("metric-learning bins'", "bins_"))
WORKERS = (1, 4, 16, 64, 128)
TASKS = ((0.0, 1.0), (1.0, 0.0))
#: a controller that has learned the direction stays within this of φ* over the second half (a random walk ≈ 0.5)
LEARNED = 0.15


def pooled_run(workers: int, *, delta: float, sigma: float, episodes: int, start: float, target: float, seed: int,
               beta: float, options: dict) -> list[float]:  # type: ignore[type-arg]
    """Worker 0's φ − φ* after each episode, W workers sharing one policy."""
    from adaloss.distributed.threads import ThreadCollective, ThreadGroup
    from adaloss.methods.ala import ALAController
    from adaloss.methods.ala.bandit import run_bandit

    group = ThreadGroup(workers, timeout_s=600)
    out: dict[int, list[float]] = {}
    errors: list[BaseException] = []

    def work(rank: int) -> None:
        def make(policy):  # type: ignore[no-untyped-def]
            controller = ALAController(policy, beta=beta, seed=seed, **options)
            controller.share(ThreadCollective(group, rank))  # rank 0's policy, own action samples
            return controller

        try:
            out[rank] = run_bandit(make, delta=delta, sigma=sigma, episodes=episodes, start=start, target=target,
                                   bounds=(0.0, 1.0), seed=seed * 1000 + rank)
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)
            group.abort()

    threads = [threading.Thread(target=work, args=(r,)) for r in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out[0]


def measure(signal: dict, *, seeds: int, beta: float, workers: tuple[int, ...]) -> list[dict]:  # type: ignore[type-arg]
    import time

    from adaloss.methods.ala.presets import ALA_PRESETS, FAMILY_DEFAULTS

    preset = {**ALA_PRESETS["default"], **FAMILY_DEFAULTS["FrequencyWeightLoss"]}
    options = {"lr": preset["policy_lr"], "reward": preset["reward"], "baseline_decay": preset["baseline_decay"]}
    sigma, episodes = signal["reward_sigma"], signal["windows"]
    rows = []
    for action, family in ACTIONS:
        if action not in signal["effects"]:
            continue
        delta = abs(signal["effects"][action]["delta"])
        for w in workers:
            t0 = time.perf_counter()
            distances = []
            for start, target in TASKS:
                for s in range(seeds):
                    r = pooled_run(w, delta=delta, sigma=sigma, episodes=episodes, start=start, target=target,
                                   seed=s, beta=beta, options=options)
                    distances.append(statistics.fmean(abs(v) for v in r[episodes // 2:]))
            rows.append({"action": action, "family": family, "snr": delta / sigma, "workers": w,
                         "pooled_episodes": w * episodes, "distance": statistics.fmean(distances),
                         "distance_sd": statistics.stdev(distances), "seconds": time.perf_counter() - t0})
            print(f"{action:7s} W={w:4d} {rows[-1]['distance']:.3f} ± {rows[-1]['distance_sd']:.3f}", file=sys.stderr)
    return rows


def report(res: dict, tag: str | None) -> str:  # type: ignore[type-arg]
    protocol = "planted" if res.get("config", "fmnist_imbalanced") == "fmnist_imbalanced" else f"`{res['config']}`"
    lines = [
        "## ALA's controller with pooled episodes, at the measured noise (`experiments/ala_workers.py`)"
        + (f" — `{tag}`" if tag else ""),
        "",
        f"The synthetic one-parameter task of `ala_bandit.md` (φ ∈ [0, 1] starts at one end, the better loss is at "
        f"the other, both ways, {res['seeds']} seeds each; β = {res['beta']}; {res['episodes']} controller steps = one "
        f"{protocol} run's windows) played by W workers sharing one policy (threads; each update averages the workers' "
        f"policy gradients and rewards, as `workers=W` and torchrun ranks do). Reward noise σ = {res['sigma']:.5f} "
        f"and each action's Δ measured on the {protocol} task (`{res.get('signal', 'ala_signal.json')}`); the default "
        "controller (normalized "
        "reward, policy_lr 1e-2). Figure: worker 0's |φ − φ*| averaged over the second half (mean ± sd over runs); "
        f"a random walk stays ≈ 0.5 away; **learned** = ≤ {LEARNED}.",
        "",
        "| action (family) | SNR of one episode | workers W | pooled episodes | distance to φ*, 2nd half | learned | "
        "seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(f"| {r['action']} ({r['family']}) | {r['snr']:.3f} | {r['workers']} | {r['pooled_episodes']} | "
                     f"{r['distance']:.3f} ± {r['distance_sd']:.3f} | {'yes' if r['distance'] <= LEARNED else 'no'} | "
                     f"{r['seconds']:.0f} |")
    first = {}
    for r in res["rows"]:
        if r["distance"] <= LEARNED and r["action"] not in first:
            first[r["action"]] = r["workers"]
    measured = list(dict.fromkeys(r["action"] for r in res["rows"]))
    most = max(r["workers"] for r in res["rows"])
    summary = "; ".join(f"`{a}`: W = {first[a]}" if a in first else f"`{a}`: not within W ≤ {most}"
                        for a in measured)
    missing = [label for label, prefix in FAMILIES if not any(a.startswith(prefix) for a in measured)]
    closing = f"Fewest workers that learn the direction in one run's controller steps: {summary}."
    if missing:
        closing += (f" The {' and the '.join(missing)} own Δ are not measured in "
                    f"`{res.get('signal', 'ala_signal.json')}` (`ala_signal.py` on their protocols)")
        closing += ("; `single` — one class's weight — is the nearest measured stand-in for one entry of Φ."
                    if "single" in measured else ".")
    lines += ["", closing, "", "Generated by:", "", "```", res.get("command", "python experiments/ala_workers.py"),
              "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=12)
    p.add_argument("--beta", type=float, default=0.3)
    p.add_argument("--workers", type=int, nargs="+", default=list(WORKERS))
    p.add_argument("--signal", default=None, metavar="TAG",
                   help="read ala_signal-TAG.json (ala_signal.py --tag) and write ala_workers_bandit-TAG")
    p.add_argument("--report", action="store_true", help="rewrite the section from the saved JSON only")
    args = p.parse_args(argv)
    suffix = f"-{args.signal}" if args.signal else ""
    signal_path = HERE / "results" / f"ala_signal{suffix}.json"
    result = HERE / "results" / f"ala_workers_bandit{suffix}.json"
    sys.path.insert(0, str(HERE))
    from make_results import write_section

    if not args.report:
        import torch

        torch.set_num_threads(1)
        signal = json.loads(signal_path.read_text())
        rows = measure(signal, seeds=args.seeds, beta=args.beta, workers=tuple(args.workers))
        command = "python experiments/ala_workers.py " + " ".join(argv if argv is not None else sys.argv[1:])
        result.write_text(json.dumps({"config": signal.get("config", "fmnist_imbalanced"),
                                      "sigma": signal["reward_sigma"], "episodes": signal["windows"],
                                      "seeds": args.seeds, "beta": args.beta, "rows": rows,
                                      "signal": signal_path.name, "command": command.rstrip()}, indent=1) + "\n")
    write_section("ala_workers_bandit" + suffix, report(json.loads(result.read_text()), args.signal))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
