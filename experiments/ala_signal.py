"""ALA's learning signal, measured: how noisy is the reward, how large is a good action's effect,
and how many episodes does a REINFORCE controller need at that ratio?

On the planted-mismatch task (imbalanced Fashion-MNIST, an MLP, the target metric the balanced
error; see ``experiments/configs/fmnist_imbalanced.yaml``) a base model is trained with the loss
held fixed (Φ = 0: cross-entropy), and every ``K`` steps the ALA reward is computed exactly as
:class:`adaloss.ALA` computes it: the smoothed metric M over the window's last ``L`` steps
(Eq. 4, :func:`~adaloss.methods.ala.smoothed_metric`), reward ``r_t = M_{t−1} − M_t``.

* **Noise σ**: the spread of ``r_t`` at fixed Φ — per window, the std over seeds, then the root
  mean square over windows (training noise and the validation subset's sampling noise together;
  the trend common to all seeds is not noise, a reward baseline removes it).
* **Effect Δ**: at each measured window the run is branched — the same weights, optimiser state
  and batches — once with Φ unchanged and once after an action; Δ is the mean paired difference
  of the window's reward. Actions: ``oracle``, +β on every minority class's log-weight (the
  direction of the known better loss); ``single``, +β on one minority class only (the effect of
  one of the C per-parameter decisions a policy takes in each episode); ``tau``, the tied
  family's one parameter from 0 to β_τ (:class:`~adaloss.losses.FrequencyWeightLoss`). The C×C
  family (:class:`~adaloss.losses.ClassPairLoss`, log-probability form, symmetric, exactly CE at
  Φ = I): ``pair_all``, −β on every entry pairing a minority class with a majority class (each
  class's probability of the other pushed down, both ways); ``pair_single``, −β on one such entry.
* **Episodes**: a REINFORCE policy choosing between actions whose expected rewards differ by Δ,
  with reward noise σ, needs about ``n = 3 · 2 (z_.975 + z_.8)² σ² / Δ²`` ≈ ``47 σ² / Δ²``
  episodes (a two-sample comparison at 5 % level and 80 % power per pair of arms, three arms
  sampled evenly at the start) — a lower bound, since the policy-gradient estimate is noisier
  than the direct comparison.

    python experiments/ala_signal.py --data-dir ../shared/datasets
    python experiments/ala_signal.py --data-dir ../shared/datasets --report   # rewrite the section only
    # the controller settings ALA's families run with in ala_families.py, the class-pair actions too
    python experiments/ala_signal.py --data-dir ../shared/datasets --every 50 --beta 0.3 \
        --actions oracle,single,tau,pair_all,pair_single --tag K50

Writes ``experiments/results/ala_signal.json`` and the section ``ala_signal.md`` (with ``--tag T``:
``ala_signal-T.json`` and ``ala_signal-T.md``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ACTIONS = ("oracle", "single", "tau", "pair_all", "pair_single")


def result_path(tag: str | None) -> Path:
    return HERE / "results" / (f"ala_signal-{tag}.json" if tag else "ala_signal.json")


def _setup(data_dir: str, seed: int, cfg) -> tuple:  # type: ignore[no-untyped-def]
    from adaloss.data import load_dataset, subsample_classes
    from adaloss.models import create_model

    data = load_dataset(cfg.dataset, data_dir=data_dir, valid_fraction=cfg.valid_fraction, seed=seed)
    data = subsample_classes(data, classes=cfg.minority_classes, fraction=cfg.minority_fraction, seed=seed)
    torch.manual_seed(seed)
    model = create_model(cfg.model, tuple(data.train.x.shape[1:]), data.num_outputs, **cfg.model_args)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    return data, model, opt


def _window(model, opt, loss, data, batches: list[torch.Tensor], smoothing: int, gamma: float, metric) -> float:  # type: ignore[no-untyped-def]
    """Train one window on ``batches`` (row indices) with ``loss``; the smoothed metric M (Eq. 4)."""
    from adaloss.methods.ala import smoothed_metric
    from adaloss.metrics import evaluate_batches

    values = []
    for j, idx in enumerate(batches):
        model.train()
        opt.zero_grad()
        loss(model(data.train.x[idx]), data.train.y[idx]).backward()
        opt.step()
        if j >= len(batches) - smoothing:
            metric.reset()
            res = evaluate_batches(model, [(data.valid.x, data.valid.y)], [metric])
            values.append(float(res.values[metric.name]))
    return smoothed_metric(values, gamma)


def measure(args: argparse.Namespace) -> dict:  # type: ignore[type-arg]
    from adaloss.losses import ClassPairLoss, ClassWeightLoss, FrequencyWeightLoss
    from adaloss.metrics import create_metric
    from adaloss.training import load_config

    cfg = load_config(HERE / "configs" / f"{args.config}.yaml", [])
    torch.set_num_threads(args.threads)
    windows = (args.steps or cfg.steps) // args.every
    rewards: dict[int, list[float]] = {}  # window -> reward per seed (Φ fixed)
    effects: dict[str, list[float]] = {name: [] for name in args.actions}
    for seed in args.seeds:
        data, model, opt = _setup(args.data_dir, seed, cfg)
        metric = create_metric(cfg.metric)
        c = data.num_outputs
        minority = list(cfg.minority_classes)
        loss = ClassWeightLoss(c)
        counts = torch.bincount(data.train.y, minlength=c)
        g = torch.Generator().manual_seed(1000 + seed)
        n = data.train.x.shape[0]
        metric.reset()
        from adaloss.metrics import evaluate_batches

        prev = float(evaluate_batches(model, [(data.valid.x, data.valid.y)], [metric]).values[metric.name])
        for t in range(windows):
            batches = [torch.randint(0, n, (cfg.batch_size,), generator=g) for _ in range(args.every)]
            if t % args.branch_every == args.branch_every - 1:
                saved = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()))
                for name in args.actions:
                    moved: torch.nn.Module
                    if name == "tau":  # the tied family: τ from 0 to β_τ, weights (n_c)^(−τ)
                        moved = FrequencyWeightLoss(c, counts=counts)
                        moved.set_parameter_vector(torch.tensor([args.beta_tau]))
                    elif name.startswith("pair"):  # symmetric entries (i < j), row-major
                        moved = ClassPairLoss(c)
                        pairs = [(i, j) for i in range(c) for j in range(i + 1, c)]
                        mixed = [k for k, (i, j) in enumerate(pairs) if (i in minority) != (j in minority)]
                        delta = torch.zeros(len(pairs))
                        delta[mixed if name == "pair_all" else mixed[t % len(mixed)]] = -args.beta
                        moved.set_parameter_vector(delta)
                    else:
                        moved = ClassWeightLoss(c)
                        delta = torch.zeros(c)
                        delta[minority if name == "oracle" else minority[t % len(minority)]] = args.beta
                        moved.set_parameter_vector(delta)
                    m_act = _window(model, opt, moved, data, batches, args.smoothing, args.gamma, metric)
                    model.load_state_dict(saved[0])
                    opt.load_state_dict(copy.deepcopy(saved[1]))  # SGD updates loaded buffers in place
                    m_ctl = _window(model, opt, loss, data, batches, args.smoothing, args.gamma, metric)
                    model.load_state_dict(saved[0])
                    opt.load_state_dict(copy.deepcopy(saved[1]))  # SGD updates loaded buffers in place
                    effects[name].append(m_ctl - m_act)  # reward difference: (prev − m_act) − (prev − m_ctl)
            m = _window(model, opt, loss, data, batches, args.smoothing, args.gamma, metric)
            rewards.setdefault(t, []).append(prev - m)
            prev = m
        print(f"seed {seed}: final valid {cfg.metric} {prev:.4f}", file=sys.stderr)
    per_window_sd = [statistics.stdev(v) for t, v in sorted(rewards.items()) if t > 0 and len(v) > 1]
    sigma = math.sqrt(statistics.fmean(s * s for s in per_window_sd))
    out: dict = {"config": args.config, "K": args.every, "smoothing_window": args.smoothing,  # type: ignore[type-arg]
                 "gamma": args.gamma, "beta": args.beta, "beta_tau": args.beta_tau, "seeds": list(args.seeds),
                 "windows": windows, "reward_sigma": sigma,
                 "reward_mean_by_window": [statistics.fmean(v) for _, v in sorted(rewards.items())],
                 "effects": {}}
    for name, vals in effects.items():
        mean = statistics.fmean(vals)
        se = statistics.stdev(vals) / math.sqrt(len(vals))
        snr = abs(mean) / sigma
        out["effects"][name] = {"delta": mean, "delta_se": se, "n": len(vals), "snr": snr,
                                "episodes_needed": 47.1 / snr**2 if snr > 0 else math.inf}
    return out


def report(res: dict, tag: str | None = None) -> str:  # type: ignore[type-arg]
    lines = [
        "## ALA's learning signal, measured (`experiments/ala_signal.py`)" + (f" — `{tag}`" if tag else ""),
        "",
        f"Protocol `experiments/configs/{res['config']}.yaml` (imbalanced Fashion-MNIST, target: balanced error), "
        f"loss held at cross-entropy; controller window K = {res['K']} steps, M smoothed over the last "
        f"{res['smoothing_window']} steps (γ = {res['gamma']}), β = {res['beta']}; seeds {res['seeds']}; "
        f"{res['windows']} windows per run = the episodes one run gives a controller.",
        "",
        f"Reward noise at fixed Φ (std over seeds per window, RMS over windows): **σ = {res['reward_sigma']:.5f}** "
        "(balanced-error units).",
        "",
        "| action (vs no action, same state and batches) | effect Δ on the reward | ± s.e. | branches | SNR Δ/σ | "
        "episodes needed ≈ 47 σ²/Δ² |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in res["effects"].items():
        lines.append(f"| {name} | {e['delta']:+.5f} | {e['delta_se']:.5f} | {e['n']} | {e['snr']:.3f} | "
                     f"{e['episodes_needed']:.0f} |")
    command = res.get("command", "python experiments/ala_signal.py --data-dir ../shared/datasets")
    lines += ["", "`oracle`: +β on every minority class's log-weight; `single`: +β on one minority class; `tau`: "
              f"τ from 0 to β_τ = {res.get('beta_tau', 0.3)} in the tied family (FrequencyWeightLoss, weights "
              "n_c^(−τ) from the training counts: every minority log-weight up by β_τ·log(n_major/n_minor) ≈ "
              "3 β_τ here); `pair_all` / `pair_single`: −β on every / one entry of the symmetric class-pair Φ "
              "(log-probability form) that pairs a minority class with a majority class. "
              "Episodes: 3 arms × 2(z_.975 + z_.8)² σ²/Δ² (a lower bound for REINFORCE).", "",
              "Generated by:", "", "```", command, "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--config", default="fmnist_imbalanced")
    p.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2, 3, 4])
    p.add_argument("--every", type=int, default=100, help="K")
    p.add_argument("--steps", type=int, default=None, help="steps of a run (default: the config's)")
    p.add_argument("--smoothing", type=int, default=10, help="L: evaluations at the end of each window")
    p.add_argument("--gamma", type=float, default=0.9)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--beta-tau", type=float, default=0.3, help="the tau action's step of the tied family's power")
    p.add_argument("--actions", type=lambda s: s.split(","), default=["oracle", "single", "tau"],
                   help=f"comma-separated, among {', '.join(ACTIONS)}")
    p.add_argument("--branch-every", type=int, default=3, help="branch at every this many windows")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tag", default=None, help="write ala_signal-TAG.json and the section ala_signal-TAG")
    p.add_argument("--report", action="store_true", help="rewrite the section from the saved JSON only")
    args = p.parse_args(argv)
    if unknown := [a for a in args.actions if a not in ACTIONS]:
        p.error(f"--actions: expected names among {list(ACTIONS)}, but got {unknown}")
    sys.path.insert(0, str(HERE))
    from make_results import write_section

    path = result_path(args.tag)
    if not args.report:
        if args.data_dir is None:
            p.error("--data-dir is required to measure")
        res = measure(args)
        res["command"] = "python experiments/ala_signal.py " + " ".join(argv if argv is not None else sys.argv[1:])
        path.write_text(json.dumps(res, indent=1))
    res = json.loads(path.read_text())
    write_section("ala_signal" + (f"-{args.tag}" if args.tag else ""), report(res, args.tag))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
