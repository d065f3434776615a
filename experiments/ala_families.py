"""ALA's own loss families: how many pooled episodes they need to learn.

Two protocols. ``planted`` (``ala_planted.py``'s task: imbalanced Fashion-MNIST, target balanced
error, ``experiments/configs/fmnist_imbalanced.yaml``) with one of the paper's classification
families (``class_weight``: one log-weight per class; ``class_pair``: the C×C matrix,
log-probability form); the class-weighted cross-entropies are the oracles. ``metric``
(``experiments/configs/fmnist_metric.yaml``: retrieval Recall@1 on classes never trained on) with
the pair-distance bins (``bins``); pytorch-metric-learning's multi-similarity loss is the peer.
The family is given more episodes two ways:

* **workers** — ``workers=W`` training workers (threads of one process) share one policy and pool
  their episodes into each update, as torchrun ranks do; worker 0 is reported. Section
  ``ala_workers_<family>`` (``ala_workers_metric_bins``).
* **pretraining** — ``adaloss ala-pretrain``: a chain of N runs (seeds 100, 101, …, none an
  evaluation seed), each continuing the previous run's policy; every evaluation seed then starts from
  the chain's policy after N runs and keeps training it (one worker). One chain of the largest N
  serves every N (the policy after run N of it). The policy pretrained on Fashion-MNIST is also
  started on MNIST with the same setting, which it never saw (transfer). Section
  ``ala_pretrained_planted_<family>`` / ``ala_pretrained_metric``.

Every ALA row uses the controller settings under which the tied family learns in one run
(``--controller efficient``: windows of 50 steps, 60 episodes per 3000-step run, β = 0.3, policy lr
1e-2, normalized reward), the same with an entropy bonus on the policy (``--controller
efficient_entropy``, ``entropy_coef=0.1``; sections suffixed ``-efficient_entropy``) or the preset's
(``--controller preset``). "Gap closed" is (ALA − baseline) / (best reference − baseline).

    python experiments/ala_families.py --family class_weight --data-dir ../shared/datasets --threads 1
    python experiments/ala_families.py --protocol metric --family bins --data-dir ../shared/datasets --threads 1
    python experiments/make_results.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A task ALA's families are measured on: its config, fixed-loss baseline and references."""

    config: str
    baseline: str
    #: (label, method, overrides, folder): the known better losses (oracles) or the peers
    references: tuple[tuple[str, str, tuple[str, ...], str], ...]
    families: tuple[str, ...]
    what: str  # how the section introduces the task
    reference_kind: str
    pretrain: tuple[int, ...]
    workers: tuple[int, ...]


PROTOCOLS: dict[str, Protocol] = {
    "planted": Protocol(
        "fmnist_imbalanced", "ce",
        (("ce_weighted (1/f)", "ce_weighted", (), "ce"),
         ("ce_weighted (1/√f)", "ce_weighted", ("method_args.ce_weighted.power=0.5",), "ce_sqrt")),
        ("class_weight", "class_pair"),
        "classes {minority} keep {fraction:.0%} of their training and validation rows (test split balanced); "
        "MLP {model_args}, {steps} steps", "oracle", (4, 16), (1, 4, 8, 16)),
    "metric": Protocol(
        "fmnist_metric", "contrastive", (("multi_similarity", "multi_similarity", (), "multi_similarity"),),
        ("bins",),
        "Fashion-MNIST classes {train_classes} trained on, the other classes' test images retrieved; Conv-4 "
        "embedding, {steps} steps", "peer", (2, 4), (1, 4)),
}
CONTROLLERS: dict[str, tuple[str, ...]] = {
    "efficient": ("method_args.ala.every=50", "method_args.ala.smoothing_window=10", "method_args.ala.beta=0.3",
                  "method_args.ala.policy_lr=0.01", "method_args.ala.reward=normalized"),
    "preset": (),
}
#: the efficient controller with an entropy bonus on the policy (Williams & Peng, 1991), measured
#: against a policy that commits to one action too early
CONTROLLERS["efficient_entropy"] = (*CONTROLLERS["efficient"], "method_args.ala.entropy_coef=0.1")


def _overrides(args: argparse.Namespace) -> tuple[str, ...]:
    family = () if args.family == "bins" else (f"method_args.ala.family={args.family}",)
    return (*family, "method_args.ala.val_subset=all", *CONTROLLERS[args.controller])


def _command(config: str, method: str, seeds: str, folder: Path, data_dir: str, overrides: tuple[str, ...],
             runtime: list[str]) -> str:
    return (f"adaloss compare -c experiments/configs/{config}.yaml --methods {method} --seeds {seeds} "
            f"--data-dir {data_dir} --out {folder} {' '.join((*overrides, *runtime))}").rstrip()


def _phi_line(results: list[Any], minority: list[int]) -> str:
    """Worker 0's learned Φ at the end: the minority/majority class-weight ratio (class_weight) or
    the mean off-diagonal entry of the minority classes' rows against the others' (class_pair)."""
    from adaloss.training.sinks import read_jsonl

    ratios = []
    for r in results:
        snaps = read_jsonl(r.run_dir / "snapshots.jsonl")
        if not snaps:
            continue
        last = snaps[-1]
        if "weights" in last:
            w = last["weights"]
            major = [x for c, x in enumerate(w) if c not in minority]
            ratios.append(statistics.fmean(w[c] for c in minority) / statistics.fmean(major))
    if not ratios:
        return ""
    return (f"minority/majority class-weight ratio {statistics.fmean(ratios):.2f} (per seed "
            f"{', '.join(f'{x:.2f}' for x in ratios)}; 1 = cross-entropy)")


#: the measured actions of each family (``ala_signal.py``): its broadest move first, one entry last
FAMILY_ACTIONS: dict[str, tuple[str, ...]] = {"class_weight": ("oracle", "single"),
                                              "class_pair": ("pair_all", "pair_single"),
                                              "bins": ("bins_neg", "bins_pos", "bins_single")}
#: the signal measured at the ``efficient`` controller, per protocol (``ala_signal.py --tag``)
SIGNAL_TAGS: dict[str, str] = {"planted": "K50", "metric": "metric_K50"}


def _budget_line(family: str, protocol: str, episodes: int, one_worker_s: float | None) -> str:
    """What the measured signal says the family needs: for each of its measured moves, the pooled
    episodes (``≈ 47 σ²/Δ²``, a lower bound) and the workers that many takes at ``episodes`` a run;
    priced in one-worker runs (``one_worker_s``: the median wall time of one)."""
    tag = SIGNAL_TAGS[protocol]
    path = HERE / "results" / f"ala_signal-{tag}.json"
    if not path.is_file():
        return ""
    signal = json.loads(path.read_text())
    parts = []
    for action in FAMILY_ACTIONS[family]:
        effect = signal["effects"].get(action)
        if effect is None:
            continue
        need = effect["episodes_needed"]
        workers = need / episodes
        cost = f", ≈ {workers * one_worker_s / 3600:.2f} core-hours a run" if one_worker_s else ""
        parts.append(f"`{action}` ≈ {need:.0f} episodes = W ≈ {workers:.0f}{cost}")
    if not parts:
        return ""
    return (f"- **Budget from the measured signal** (`ala_signal-{tag}.md`, σ {signal['reward_sigma']:.4f}; "
            f"{episodes} episodes per worker-run; a run of W workers costs W one-worker runs of compute, priced at "
            "the median wall time of the one-worker runs (`workers=1`, the pretrained section's \"from scratch\" "
            "row) on the shared machine, an upper bound): "
            + "; ".join(parts) + ".")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="planted")
    p.add_argument("--family", required=True, choices=sorted({f for pr in PROTOCOLS.values() for f in pr.families}),
                   help="the loss family (planted: class_weight, class_pair; metric: bins)")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--workers", type=int, nargs="*", default=None,
                   help="worker counts (default: planted 1 4 8 16, metric 1 4; empty: no workers rows)")
    p.add_argument("--pretrain", type=int, nargs="*", default=None, metavar="N",
                   help="pretraining budgets in runs (default: planted 4 16, metric 2 4; empty: none)")
    p.add_argument("--transfer", default="mnist", help="dataset the pretrained policy is started on unseen ('': none)")
    p.add_argument("--controller", choices=sorted(CONTROLLERS), default="efficient")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--runs", default=None, help="default: runs/ala_families (planted), runs/ala_families_metric")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    args = p.parse_args(argv)
    proto = PROTOCOLS[args.protocol]
    if args.family not in proto.families:
        p.error(f"--family: the {args.protocol} protocol's families are {list(proto.families)}, "
                f"but got {args.family!r}")
    workers = proto.workers if args.workers is None else tuple(args.workers)
    budgets = proto.pretrain if args.pretrain is None else tuple(args.pretrain)
    config = proto.config
    sys.path.insert(0, str(HERE))
    from adaloss.methods.ala.presets import ALA_PRESETS
    from adaloss.training import load_config
    from adaloss.training.compare import compare, format_markdown, summarise, welch_p_value
    from adaloss.training.pretrain import POLICY_FILE, pretrain_policy
    from ala_protocol import controller_summary
    from make_results import write_section

    seeds = [int(s) for s in args.seeds.split(",")]
    runtime = [*args.overrides, *([f"threads={args.threads}"] if args.threads else [])]
    runs = Path(args.runs or ("runs/ala_families" if args.protocol == "planted" else "runs/ala_families_metric"))
    ala = _overrides(args)
    cfg0 = load_config(HERE / "configs" / f"{config}.yaml", list(args.overrides))
    minority = list(cfg0.minority_classes or [])
    key = f"test_{cfg0.metric}"
    higher = (cfg0.metric or "").startswith(("recall", "nmi", "aucpr", "accuracy"))
    base = proto.baseline

    def rows_of(label: str, method: str, overrides: tuple[str, ...], folder: Path,
                dataset: str | None = None) -> tuple[list[Any], str]:
        cfg = load_config(HERE / "configs" / f"{config}.yaml", [*overrides, *runtime]).replace(data_dir=args.data_dir)
        if dataset is not None:
            cfg = cfg.replace(dataset=dataset)
            overrides = (f"dataset={dataset}", *overrides)
        print(f"{label}: {method} x {seeds} -> {folder}", file=sys.stderr)
        results = [dataclasses.replace(r, method=label)
                   for r in compare(cfg, methods=(method,), seeds=seeds, out_dir=folder)]
        return results, _command(config, method, args.seeds, folder, args.data_dir, overrides, runtime)

    def section(title: str, blocks: list[tuple[str, str, tuple[str, ...], Path]], intro: str,
                extra_commands: list[str], record: dict[str, Any], dataset: str | None = None,
                budget: bool = False) -> str:
        table, values, commands, notes = [], {}, [*extra_commands], []
        for label, method, overrides, folder in blocks:
            results, command = rows_of(label, method, overrides, folder, dataset)
            table += results
            values[label] = [r.final[key] for r in results if r.final.get(key) is not None]
            commands.append(command)
            record[label] = {str(r.seed): {**r.final, "wall_time_s": r.wall_time_s, "run_dir": str(r.run_dir)}
                             for r in results}
            if method == "ala":
                notes.append((label, results))
        b = statistics.fmean(values[base])
        refs = [label for label, *_ in proto.references]
        best = (max if higher else min)(refs, key=lambda lbl: statistics.fmean(values[lbl]))
        ref = statistics.fmean(values[best])
        lines = [title, "", intro, "", format_markdown(summarise(table, baseline=base, test_key=key)), ""]
        for label, results in notes:
            v = values[label]
            m = statistics.fmean(v)
            pv = welch_p_value(v, values[base])
            shown_p = "n/a" if pv is None else f"{pv:.3g}"
            closed = (m - b) / (ref - b) if ref != b else float("nan")
            wall = statistics.median(r.wall_time_s for r in results)
            phi = _phi_line(results, minority)
            lines.append(f"- **{label}**: {key} {m:.4f} vs {base} {b:.4f} (p = {shown_p}), best {proto.reference_kind} "
                         f"`{best}` {ref:.4f}: closes **{closed:.0%}** of the {base}→{proto.reference_kind} gap; "
                         f"median wall time of a run {wall:.0f} s. " + (f"Learned Φ: {phi}. " if phi else "")
                         + controller_summary(results, label))
        if budget:  # priced by the one-worker runs (the workers=1 row, also the pretrained section's "from scratch")
            one = [json.loads(f.read_text())["wall_time_s"]
                   for f in sorted((workers_row(1)[3] / "ala").glob("seed*/summary.json"))]
            line = _budget_line(args.family, args.protocol, episodes, statistics.median(one) if one else None)
            lines += [line] if line else []
        lines += ["", "Generated by (finished runs are reused):", "", "```", *commands,
                  "python experiments/ala_families.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "```", ""]
        return "\n".join(lines)

    def fixed_rows(where: Path) -> list[tuple[str, str, tuple[str, ...], Path]]:
        return [(base, base, (), where / base), *((lbl, m, o, where / f) for lbl, m, o, f in proto.references)]

    base_rows = fixed_rows(runs)
    setting = (f"ALA `family={args.family}`, controller `{args.controller}` "
               f"({', '.join(o.removeprefix('method_args.ala.') for o in CONTROLLERS[args.controller]) or 'the preset'}"
               f"), reward on the whole validation split")
    every = next((int(o.split("=", 1)[1]) for o in CONTROLLERS[args.controller]
                  if o.startswith("method_args.ala.every=")), ALA_PRESETS["default"]["every"])
    episodes = cfg0.steps // every
    suffix = "" if args.controller == "efficient" else f"-{args.controller}"  # the other controllers' sections
    what = proto.what.format(minority=minority, fraction=cfg0.minority_fraction or 0.0, model_args=cfg0.model_args,
                             steps=cfg0.steps, train_classes=cfg0.train_classes)
    common = (f"`experiments/configs/{config}.yaml`: {what}. "
              f"{setting}. Seeds {args.seeds}; mean ± sample std; p: Welch t-test against `{base}`. The workers of "
              "a run are threads sharing this machine's 2 cores with one torch thread each, and other jobs ran beside "
              "them: wall times are each run's own, not a timing.")

    def workers_row(w: int) -> tuple[str, str, tuple[str, ...], Path]:
        return (f"ala ({args.family}, workers={w})", "ala", (f"workers={w}", *ala),
                runs / args.family / args.controller / f"workers{w}")

    record: dict[str, Any] = {}
    if workers:
        blocks = [*base_rows, *(workers_row(w) for w in workers)]
        text = section(f"## ALA's `{args.family}` family with pooled episodes: workers sharing one policy "
                       "(`experiments/ala_families.py`)", blocks,
                       common + f" Each update averages the W workers' policy gradients (W × {episodes} episodes "
                       "per run); worker 0 is reported.", [],
                       record.setdefault("workers", {}), budget=args.controller == "efficient")
        write_section(f"ala_workers_{args.family if args.protocol == 'planted' else 'metric_bins'}{suffix}", text)

    if budgets:
        chain = runs / args.family / args.controller / "pretrain"
        cfg = load_config(HERE / "configs" / f"{config}.yaml",
                          [*(o.replace("method_args.ala.", "method_args.") for o in ala), "method=ala",
                           *runtime]).replace(data_dir=args.data_dir)
        longest = max(budgets)
        pretrain_policy(cfg, runs=longest, out=chain / "policy.pt", work_dir=chain / "chain")
        chain_cmd = (f"adaloss ala-pretrain -c experiments/configs/{config}.yaml --runs {longest} --out "
                     f"{chain / 'policy.pt'} --work-dir {chain / 'chain'} --data-dir {args.data_dir} method=ala "
                     + " ".join((*(o.replace("method_args.ala.", "method_args.") for o in ala), *runtime)))

        def pretrained(dataset: str | None) -> list[tuple[str, str, tuple[str, ...], Path]]:
            where = dataset or "fmnist"
            if dataset is None:  # the workers section's folders: the same runs
                label, method, overrides, folder = workers_row(1)
                rows = [*base_rows, (f"ala ({args.family}, from scratch)", method, overrides, folder)]
            else:
                rows = [*fixed_rows(runs / where), (f"ala ({args.family}, from scratch)", "ala", ala,
                                                    runs / args.family / args.controller / where / "scratch")]
            for n in budgets:
                policy = chain / "chain" / f"run{n - 1}" / POLICY_FILE
                rows.append((f"ala ({args.family}, pretrained N={n})", "ala",
                             (*ala, f"method_args.ala.policy={policy}"),
                             runs / args.family / args.controller / where / f"pretrained{n}"))
            return rows

        parts = [section(f"## ALA's `{args.family}` family from a pretrained policy: the {args.protocol} task "
                         "(`experiments/ala_families.py`)", pretrained(None),
                         common + f" Pretraining: one chain of {longest} runs (seeds 100…{99 + longest}), N runs × "
                         f"{episodes} episodes; each evaluation seed starts from the chain's policy after N runs, with "
                         "one worker, and keeps training it.", [chain_cmd], record.setdefault("pretrained", {}))]
        if args.transfer:
            parts.append(section(f"### Transfer: the Fashion-MNIST policy on `{args.transfer}`",
                                 pretrained(args.transfer),
                                 f"The same rows on `dataset={args.transfer}` (the same split of classes), a dataset "
                                 "the pretraining never saw.", [],
                                 record.setdefault(f"transfer_{args.transfer}", {}), dataset=args.transfer))
        write_section(f"ala_pretrained_{args.protocol}" + (f"_{args.family}" if args.protocol == "planted" else "")
                      + suffix, "\n".join(parts))
    out = HERE / "results" / f"ala_families_{args.protocol}_{args.family}_{args.controller}.json"
    old = json.loads(out.read_text()) if out.is_file() else {}
    out.write_text(json.dumps({**old, **record}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
