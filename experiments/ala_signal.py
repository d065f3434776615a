"""ALA's learning signal, measured: how noisy is the reward, how large is a good action's effect,
and how many episodes does a REINFORCE controller need at that ratio?

Two protocols (``--config``), each set up as a run of it gets its data, model and optimiser
(``load_data`` and ``task_splits`` of :mod:`adaloss.training.experiment`, ``create_model``,
``create_optimizer``):

* ``fmnist_imbalanced`` (default), the planted-mismatch task: imbalanced Fashion-MNIST, an MLP,
  the target metric the balanced error (``experiments/configs/fmnist_imbalanced.yaml``); the loss
  held fixed at Φ = 0 (cross-entropy, :class:`~adaloss.losses.ClassWeightLoss`); batches drawn
  uniformly with replacement (``torch.randint``, generator seed 1000 + seed), as this script always
  has; M on the whole validation split.
* ``fmnist_metric``, the metric-learning protocol: Fashion-MNIST split by class, the Conv-4
  embedding net trained on classes 0-4 with class-balanced batches (the run's
  ``ClassBalancedLoader``), Adam, the target metric validation Recall@1
  (``experiments/configs/fmnist_metric.yaml``); the loss held fixed at Φ = 1 of ALA's metric family
  (:class:`~adaloss.losses.PairDistanceLoss`: 10 positive-pair then 10 negative-pair bin weights
  over pair distance [0, 2], bounds (0, 2); at Φ = 1 the contrastive loss, margin 1); M on ALA's
  fixed validation subset (``val_batches`` = 16 batches of the run's validation loader, as
  ``method=ala`` draws it).

A base model is trained with the loss held fixed, and every ``K`` steps the ALA reward is
computed exactly as :class:`adaloss.ALA` computes it: the smoothed metric M over the window's last
``L`` steps (Eq. 4, :func:`~adaloss.methods.ala.smoothed_metric`), each evaluation
:func:`~adaloss.metrics.evaluate_batches` of the config's metric as ALA's reward evaluates it;
reward ``r_t = M_{t−1} − M_t`` (``M_t − M_{t−1}`` for a metric where higher is better).

* **Noise σ**: the spread of ``r_t`` at fixed Φ — per window, the std over seeds, then the root
  mean square over windows (training noise and the validation subset's sampling noise together;
  the trend common to all seeds is not noise, a reward baseline removes it).
* **Effect Δ**: at each measured window the run is branched — the same weights, optimiser state
  and batches (the window's K batches are drawn once and reused) — once with Φ unchanged and once
  after an action; Δ is the mean paired difference of the window's reward. Classification actions:
  ``oracle``, +β on every minority class's log-weight (the direction of the known better loss);
  ``single``, +β on one minority class only (the effect of one of the C per-parameter decisions a
  policy takes in each episode); ``tau``, the tied family's one parameter from 0 to β_τ
  (:class:`~adaloss.losses.FrequencyWeightLoss`). The C×C family
  (:class:`~adaloss.losses.ClassPairLoss`, log-probability form, symmetric, exactly CE at Φ = I):
  ``pair_all``, −β on every entry pairing a minority class with a majority class (each class's
  probability of the other pushed down, both ways); ``pair_single``, −β on one such entry.
  Metric-learning actions (the bins of :class:`~adaloss.losses.PairDistanceLoss`): ``bins_neg``,
  +β on every negative-pair bin below the margin (distance < 1, where the contrastive negative
  term is active: bins 0-0.2 … 0.8-1); ``bins_pos``, +β on every positive-pair bin;
  ``bins_single``, +β on one of those active negative-pair bins, cycling by window as ``single``
  does.
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
    # the metric-learning protocol and the pair-distance bins
    python experiments/ala_signal.py --data-dir ../shared/datasets --config fmnist_metric --every 50 \
        --beta 0.3 --actions bins_neg,bins_pos,bins_single --steps 1000 --tag metric_K50

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
#: the actions by the task of the config they fit, and the ones measured when ``--actions`` is not given
TASK_ACTIONS: dict[str, tuple[str, ...]] = {
    "classification": ("oracle", "single", "tau", "pair_all", "pair_single"),
    "embedding": ("bins_neg", "bins_pos", "bins_single"),
}
DEFAULT_ACTIONS: dict[str, tuple[str, ...]] = {"classification": ("oracle", "single", "tau"),
                                               "embedding": ("bins_neg", "bins_pos", "bins_single")}
ACTIONS = tuple(a for names in TASK_ACTIONS.values() for a in names)
#: the protocols the actions are defined on (``experiments/configs/<name>.yaml``) and their tasks
CONFIGS: dict[str, str] = {"fmnist_imbalanced": "classification", "fmnist_metric": "embedding"}
#: the report's action legend
LEGEND: dict[str, str] = {
    "oracle": "`oracle`: +β on every minority class's log-weight",
    "single": "`single`: +β on one minority class",
    "tau": "`tau`: τ from 0 to β_τ = {beta_tau} in the tied family (FrequencyWeightLoss, weights n_c^(−τ) from the "
           "training counts: every minority log-weight up by β_τ·log(n_major/n_minor) ≈ 3 β_τ here)",
    "pair_all": "`pair_all`: −β on every entry of the symmetric class-pair Φ (log-probability form) that pairs a "
                "minority class with a majority class",
    "pair_single": "`pair_single`: −β on one entry of the symmetric class-pair Φ (log-probability form) that pairs "
                   "a minority class with a majority class",
    "bins_neg": "`bins_neg`: +β on every negative-pair bin weight below the margin (distance < 1, where the "
                "contrastive negative term is active)",
    "bins_pos": "`bins_pos`: +β on every positive-pair bin weight",
    "bins_single": "`bins_single`: +β on one of the active negative-pair bins (< 1), a different one each window",
}
#: what the report says of an older JSON that predates the ``protocol`` key (the planted task)
PLANTED = {"protocol": "imbalanced Fashion-MNIST, target: balanced error", "base_loss": "cross-entropy",
           "metric": "balanced_error"}


def result_path(tag: str | None) -> Path:
    return HERE / "results" / (f"ala_signal-{tag}.json" if tag else "ala_signal.json")


def _setup(config: Any) -> tuple[Any, torch.nn.Module, torch.optim.Optimizer]:
    """The data, model and optimiser of a run of ``config``, made as ``build_trainer`` makes them."""
    from adaloss.models import create_model
    from adaloss.training import create_optimizer, seed_everything
    from adaloss.training.experiment import load_data, task_splits

    data = task_splits(config, load_data(config))
    seed_everything(config.seed)
    model = create_model(config.model, data.input_shape, data.num_outputs, **config.model_args)
    opt = create_optimizer(model.parameters(), config.optimizer, lr=config.lr, momentum=config.momentum,
                           nesterov=config.nesterov, weight_decay=config.weight_decay, betas=config.betas)
    return data, model, opt


def _train_batches(config: Any, data: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches: the run's own loader when ``samples_per_class`` is set (class-balanced);
    else uniform draws with replacement (generator seed 1000 + seed), as the planted task's are."""
    from adaloss.training.experiment import make_loaders

    if config.samples_per_class is not None:
        for batch in make_loaders(config, data, seed=config.seed)[0]:
            yield batch[0], batch[1]
        return
    g = torch.Generator().manual_seed(1000 + config.seed)
    n = data.train.x.shape[0]
    while True:
        idx = torch.randint(0, n, (config.batch_size,), generator=g)
        yield data.train.x[idx], data.train.y[idx]


def _valid_batches(config: Any, data: Any, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The validation examples M is computed on: the whole split (``count`` = 0), else what ALA's
    ``val_subset="auto"`` reads with ``val_batches=count`` from the run's validation stream (``count``
    batches drawn once, or the whole split where a retrieval metric would see an example twice)."""
    from adaloss.learners.ala import resolve_val_subset
    from adaloss.training.experiment import make_loaders

    whole = [(data.valid.x, data.valid.y)]
    if count == 0:
        return whole
    meta = make_loaders(config, data, seed=config.seed)[1]
    assert meta is not None
    subset = resolve_val_subset("auto", val_batches=count, batches_per_pass=meta.batches_per_epoch,
                                retrieval_metric=config.metric if data.task == "embedding" else None,
                                has_split=True)
    if subset == "all":
        return whole
    return [(b[0], b[1]) for b in (next(meta) for _ in range(count))]


def _base_loss(data: Any) -> torch.nn.Module:
    """The loss held fixed: Φ at its start in ALA's family of the task (CE; the contrastive loss)."""
    from adaloss.losses import ClassWeightLoss, PairDistanceLoss

    return PairDistanceLoss() if data.task == "embedding" else ClassWeightLoss(data.num_outputs)


def _active_negative_bins(loss: Any) -> list[int]:
    """The negative-pair bins whose lower edge is below the distance where the negative term vanishes."""
    reach = loss.margin if loss.base == "contrastive" else loss.boundary + loss.margin
    return [k for k in range(loss.bins) if k * loss.max_distance / loss.bins < reach]


def _moved_loss(name: str, t: int, data: Any, minority: list[int], args: argparse.Namespace) -> torch.nn.Module:
    """A fresh loss of the action's family with Φ moved by action ``name`` from its start (as the
    controller moves it: :func:`~adaloss.losses.ala.apply_parameter_delta`); window ``t`` picks the
    entry of the ``*single`` actions."""
    from adaloss.losses import ClassPairLoss, ClassWeightLoss, FrequencyWeightLoss, PairDistanceLoss
    from adaloss.losses.ala import apply_parameter_delta

    c = data.num_outputs
    loss: Any
    if name == "tau":  # the tied family: τ from 0 to β_τ, weights (n_c)^(−τ)
        loss = FrequencyWeightLoss(c, counts=torch.bincount(data.train.y, minlength=c))
        delta = torch.tensor([args.beta_tau])
    elif name.startswith("pair"):  # symmetric entries (i < j), row-major
        loss = ClassPairLoss(c)
        pairs = [(i, j) for i in range(c) for j in range(i + 1, c)]
        mixed = [k for k, (i, j) in enumerate(pairs) if (i in minority) != (j in minority)]
        delta = torch.zeros(len(pairs))
        delta[mixed if name == "pair_all" else mixed[t % len(mixed)]] = -args.beta
    elif name.startswith("bins"):  # Φ = (w⁺_1..w⁺_B, w⁻_1..w⁻_B), all 1 at the start
        loss = PairDistanceLoss()
        b = loss.bins
        active = [b + k for k in _active_negative_bins(loss)]
        if name == "bins_pos":
            entries = list(range(b))
        elif name == "bins_neg":
            entries = active
        else:
            entries = [active[t % len(active)]]
        delta = torch.zeros(2 * b)
        delta[entries] = args.beta
    else:
        loss = ClassWeightLoss(c)
        delta = torch.zeros(c)
        delta[minority if name == "oracle" else minority[t % len(minority)]] = args.beta
    apply_parameter_delta(loss, delta)
    return loss  # type: ignore[no-any-return]


def _evaluate(model: torch.nn.Module, valid: list[tuple[torch.Tensor, torch.Tensor]], metric: Any) -> float:
    """The metric of ``model`` on ``valid``, evaluated as ALA's reward evaluates it."""
    from adaloss.metrics import evaluate_batches

    metric.reset()
    return float(evaluate_batches(model, valid, [metric]).values[metric.name])


def _window(model: torch.nn.Module, opt: torch.optim.Optimizer, loss: torch.nn.Module,
            batches: list[tuple[torch.Tensor, torch.Tensor]], valid: list[tuple[torch.Tensor, torch.Tensor]],
            smoothing: int, gamma: float, metric: Any) -> float:
    """Train one window on ``batches`` with ``loss``; the smoothed metric M (Eq. 4)."""
    from adaloss.methods.ala import smoothed_metric

    values = []
    for j, (x, y) in enumerate(batches):
        model.train()
        opt.zero_grad()
        loss(model(x), y).backward()
        opt.step()
        if j >= len(batches) - smoothing:
            values.append(_evaluate(model, valid, metric))
    return smoothed_metric(values, gamma)


def _snapshot(model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[Any, Any, torch.Tensor]:
    """What a branch starts from: the weights, the optimiser state and the global RNG state."""
    return copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()), torch.get_rng_state()


def _restore(model: torch.nn.Module, opt: torch.optim.Optimizer, saved: tuple[Any, Any, torch.Tensor]) -> None:
    model.load_state_dict(saved[0])
    opt.load_state_dict(copy.deepcopy(saved[1]))  # optimisers update loaded state in place
    torch.set_rng_state(saved[2])


def _gain(metric: Any, before: float, after: float) -> float:
    """The improvement from ``before`` to ``after``, as ALA's reward counts it."""
    return after - before if metric.higher_is_better else before - after


def _protocol(cfg: Any, task: str) -> tuple[str, str]:
    """The report's description of the protocol and of the loss held fixed."""
    if task == "embedding":
        return (f"{cfg.dataset} split by class, model `{cfg.model}` trained on classes {list(cfg.train_classes)} "
                f"with class-balanced batches ({cfg.batch_size} = {cfg.batch_size // cfg.samples_per_class} classes "
                f"× {cfg.samples_per_class}), {cfg.optimizer} lr {cfg.lr:g}, target: validation {cfg.metric}",
                "the contrastive loss, margin 1 (PairDistanceLoss at Φ = 1)")
    return (f"{cfg.dataset} with classes {list(cfg.minority_classes)} thinned to {cfg.minority_fraction:g} of their "
            f"rows, model `{cfg.model}`, {cfg.optimizer} lr {cfg.lr:g}, target: validation {cfg.metric}",
            "cross-entropy")


def measure(args: argparse.Namespace) -> dict:  # type: ignore[type-arg]
    from adaloss.metrics import create_metric
    from adaloss.training import load_config

    cfg = load_config(HERE / "configs" / f"{args.config}.yaml", [])
    torch.set_num_threads(args.threads)
    assert cfg.metric is not None, "the protocol's config names its target metric"
    steps = args.steps or cfg.steps
    windows = steps // args.every
    task = CONFIGS[args.config]
    val_batches = args.val_batches
    if val_batches is None:  # the classification numbers so far are on the whole split; ALA's subset otherwise
        from adaloss.methods.ala.presets import ALA_PRESETS

        val_batches = 0 if task == "classification" else ALA_PRESETS["default"]["val_batches"]
    rewards: dict[int, list[float]] = {}  # window -> reward per seed (Φ fixed)
    effects: dict[str, list[float]] = {name: [] for name in args.actions}
    val_examples = 0
    for seed in args.seeds:
        config = cfg.replace(seed=seed, data_dir=args.data_dir)
        data, model, opt = _setup(config)
        metric = create_metric(cfg.metric, task=data.task)
        valid = _valid_batches(config, data, val_batches)
        val_examples = sum(len(y) for _, y in valid)
        draw = _train_batches(config, data)
        minority = list(config.minority_classes or [])
        loss = _base_loss(data)
        prev = _evaluate(model, valid, metric)
        for t in range(windows):
            batches = [next(draw) for _ in range(args.every)]  # the same K batches for every branch
            if t % args.branch_every == args.branch_every - 1:
                saved = _snapshot(model, opt)
                for name in args.actions:
                    moved = _moved_loss(name, t, data, minority, args)
                    m_act = _window(model, opt, moved, batches, valid, args.smoothing, args.gamma, metric)
                    _restore(model, opt, saved)
                    m_ctl = _window(model, opt, loss, batches, valid, args.smoothing, args.gamma, metric)
                    _restore(model, opt, saved)
                    effects[name].append(_gain(metric, m_ctl, m_act))  # reward(action) − reward(no action)
            m = _window(model, opt, loss, batches, valid, args.smoothing, args.gamma, metric)
            rewards.setdefault(t, []).append(_gain(metric, prev, m))
            prev = m
        print(f"seed {seed}: final valid {cfg.metric} {prev:.4f}", file=sys.stderr)
    per_window_sd = [statistics.stdev(v) for t, v in sorted(rewards.items()) if t > 0 and len(v) > 1]
    sigma = math.sqrt(statistics.fmean(s * s for s in per_window_sd))
    protocol, base_loss = _protocol(cfg, task)
    out: dict = {"config": args.config, "task": task, "protocol": protocol, "base_loss": base_loss,  # type: ignore[type-arg]
                 "metric": cfg.metric, "steps": steps, "val_examples": val_examples, "val_batches": val_batches,
                 "K": args.every, "smoothing_window": args.smoothing,
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
    info = {**PLANTED, **res}
    if "val_examples" not in res:
        validation = ""
    elif res.get("val_batches"):
        validation = (f"M on ALA's fixed validation subset ({res['val_examples']} examples, "
                      f"{res['val_batches']} batches of the run's validation loader); ")
    else:
        validation = f"M on the whole validation split ({res['val_examples']} examples); "
    steps = f"{res['steps']} steps, " if "steps" in res else ""
    lines = [
        "## ALA's learning signal, measured (`experiments/ala_signal.py`)" + (f" — `{tag}`" if tag else ""),
        "",
        f"Protocol `experiments/configs/{res['config']}.yaml` ({info['protocol']}), "
        f"loss held at {info['base_loss']}; controller window K = {res['K']} steps, M smoothed over the last "
        f"{res['smoothing_window']} steps (γ = {res['gamma']}), {validation}β = {res['beta']}; seeds {res['seeds']}; "
        f"{steps}{res['windows']} windows per run = the episodes one run gives a controller.",
        "",
        f"Reward noise at fixed Φ (std over seeds per window, RMS over windows): **σ = {res['reward_sigma']:.5f}** "
        f"({info['metric'].replace('_', '-')} units).",
        "",
        "| action (vs no action, same state and batches) | effect Δ on the reward | ± s.e. | branches | SNR Δ/σ | "
        "episodes needed ≈ 47 σ²/Δ² |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in res["effects"].items():
        lines.append(f"| {name} | {e['delta']:+.5f} | {e['delta_se']:.5f} | {e['n']} | {e['snr']:.3f} | "
                     f"{e['episodes_needed']:.0f} |")
    command = res.get("command", "python experiments/ala_signal.py --data-dir ../shared/datasets")
    legend = "; ".join(LEGEND[name].format(beta_tau=res.get("beta_tau", 0.3)) for name in res["effects"])
    lines += ["", f"{legend}. Episodes: 3 arms × 2(z_.975 + z_.8)² σ²/Δ² (a lower bound for REINFORCE).", "",
              "Generated by:", "", "```", command, "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--config", default="fmnist_imbalanced", choices=list(CONFIGS),
                   help="the protocol, experiments/configs/CONFIG.yaml")
    p.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2, 3, 4])
    p.add_argument("--every", type=int, default=100, help="K")
    p.add_argument("--steps", type=int, default=None, help="steps of a run (default: the config's)")
    p.add_argument("--smoothing", type=int, default=10, help="L: evaluations at the end of each window")
    p.add_argument("--gamma", type=float, default=0.9)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--beta-tau", type=float, default=0.3, help="the tau action's step of the tied family's power")
    p.add_argument("--actions", type=lambda s: s.split(","), default=None,
                   help="comma-separated; classification configs: " + ", ".join(TASK_ACTIONS["classification"])
                   + f" (default {','.join(DEFAULT_ACTIONS['classification'])}); embedding configs: "
                   + ", ".join(TASK_ACTIONS["embedding"]) + f" (default {','.join(DEFAULT_ACTIONS['embedding'])})")
    p.add_argument("--val-batches", type=int, default=None,
                   help="M on this many batches of the run's validation loader, 0 = the whole validation split "
                        "(default: the whole split for classification, ALA's val_batches = 16 for embedding)")
    p.add_argument("--branch-every", type=int, default=3, help="branch at every this many windows")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tag", default=None, help="write ala_signal-TAG.json and the section ala_signal-TAG")
    p.add_argument("--report", action="store_true", help="rewrite the section from the saved JSON only")
    args = p.parse_args(argv)
    task = CONFIGS[args.config]
    if args.actions is None:
        args.actions = list(DEFAULT_ACTIONS[task])
    if unknown := [a for a in args.actions if a not in TASK_ACTIONS[task]]:
        p.error(f"--actions: expected names among {list(TASK_ACTIONS[task])} for --config {args.config} "
                f"(task {task}), but got {unknown}")
    if args.val_batches is not None and args.val_batches < 0:
        p.error(f"--val-batches: expected a number ≥ 0, but got {args.val_batches}")
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
