"""Figures of one run directory: learned-loss evolution, implicit learning rate, learning curves.

Every function returns a :class:`matplotlib.figure.Figure` drawn with the non-interactive Agg
canvas; nothing touches pyplot's global state, so these work headless and in threads.

One concern — the figures of a run, each a function of its records; long because there are many.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaloss._validation import check_choice

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from adaloss.records import RunResult

__all__ = [
    "FIGURE_FORMATS",
    "mean_std_curves",
    "plot_ala_distances",
    "plot_ala_phi",
    "plot_ala_reward",
    "plot_compare_curves",
    "plot_implicit_lr",
    "plot_learning_curves",
    "plot_loss_evolution",
    "plot_run",
    "run_figures",
    "write_learning_curves",
]

FIGURE_FORMATS: tuple[str, ...] = ("png", "pdf", "svg")
"""File formats :func:`plot_run` can write."""

SNAPSHOT_KINDS: tuple[str, ...] = ("classification", "regression")
_NOT_EVAL_PREFIXES: tuple[str, ...] = ("train_", "prepare_")
_NOT_EVAL_KEYS: frozenset[str] = frozenset({"step", "lr"})


# ---------------------------------------------------------------------------- helpers
def _new_figure(*, figsize: tuple[float, float]) -> Figure:
    """A figure bound to an Agg canvas (no pyplot, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _series(records: Iterable[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """Steps and values of ``key``, sorted by step; nulls skipped, the last value kept per step."""
    by_step: dict[float, float] = {}
    for r in records:
        value, step = r.get(key), r.get("step")
        if _is_number(value) and _is_number(step):
            by_step[float(step)] = float(value)  # type: ignore[arg-type]
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def _split_eval_key(key: str, metric_names: Sequence[str]) -> tuple[str, str]:
    """``"<split>_<metric>"`` → ``(split, metric)``; a registered metric name wins as the suffix."""
    for name in sorted(metric_names, key=len, reverse=True):
        if key.endswith("_" + name) and len(key) > len(name) + 1:
            return key[: -len(name) - 1], name
    split, _, metric = key.partition("_")
    return split, metric


def _eval_keys(records: Sequence[dict[str, Any]]) -> list[str]:
    """Keys of the form ``<split>_<metric>`` that hold a number somewhere, in first-seen order."""
    keys: dict[str, None] = {}
    for r in records:
        for k, v in r.items():
            if (k in _NOT_EVAL_KEYS or k.startswith(_NOT_EVAL_PREFIXES) or "_" not in k.strip("_")
                    or not _is_number(v)):
                continue
            keys.setdefault(k, None)
    return list(keys)


def _metric_names() -> list[str]:
    try:
        from adaloss.metrics import METRICS
    except ImportError:  # pragma: no cover - metrics always ships with the package
        return []
    return list(METRICS)


def _floats(values: Sequence[Any] | None, *, field: str, step: Any) -> list[float]:
    if values is None or isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"Expected snapshot field `{field}` to be a list of numbers (step {step}), "
                         f"but got {values!r}.")
    return [float("nan") if v is None else float(v) for v in values]


def _snapshot_kind(snapshot: dict[str, Any]) -> str:
    kind = snapshot.get("kind")
    if kind is None:  # older snapshots: infer from the fields
        kind = "classification" if "p" in snapshot else "regression" if "residual" in snapshot else None
    return str(check_choice("snapshot kind", kind, SNAPSHOT_KINDS))


# ---------------------------------------------------------------------------- figures
def plot_loss_evolution(snapshots: Sequence[dict[str, Any]], *, title: str | None = None) -> Figure:
    """The learned loss at each snapshot, one curve per snapshot coloured by step.

    Classification snapshots give two panels (target 1 and target 0; x: predicted probability),
    regression snapshots one panel (x: residual = prediction − target). A viridis colorbar maps
    colour to step. Curves are drawn in step order.

    Args:
        snapshots: records of ``snapshots.jsonl`` (all of one kind).
        title: figure title.

    Raises:
        ValueError: no snapshots, mixed or unknown kinds, or malformed fields.
    """
    if not snapshots:
        raise ValueError("Expected `snapshots` to hold at least one snapshot, but got none.")
    kinds = {_snapshot_kind(s) for s in snapshots}
    if len(kinds) > 1:
        raise ValueError(f"Expected `snapshots` of one kind, but got a mix of {sorted(kinds)}.")
    kind = kinds.pop()
    ordered = sorted(snapshots, key=lambda s: s.get("step", 0))

    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    steps = [s.get("step", 0) for s in ordered]
    lo, hi = min(steps), max(steps)
    norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1)
    cmap = colormaps["viridis"]

    if kind == "classification":
        fig = _new_figure(figsize=(10.0, 4.0))
        axes = fig.subplots(1, 2, sharex=True)
        panels = [(axes[0], "loss_target1", "target y = 1"), (axes[1], "loss_target0", "target y = 0")]
        for s in ordered:
            x = _floats(s.get("p"), field="p", step=s.get("step"))
            for ax, field, _ in panels:
                y = _floats(s.get(field), field=field, step=s.get("step"))
                if len(y) != len(x):
                    raise ValueError(f"Expected snapshot field `{field}` to have {len(x)} values like `p` "
                                     f"(step {s.get('step')}), but got {len(y)}.")
                ax.plot(x, y, color=cmap(norm(s.get("step", 0))), linewidth=1.2)
        for ax, _, label in panels:
            ax.set_title(label)
            ax.set_xlabel("predicted probability p")
            ax.set_xlim(0.0, 1.0)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("learned loss ℓ(y, p)")
        cbar_axes: Any = list(axes)
    else:
        fig = _new_figure(figsize=(6.0, 4.0))
        ax = fig.subplots()
        for s in ordered:
            x = _floats(s.get("residual"), field="residual", step=s.get("step"))
            y = _floats(s.get("loss"), field="loss", step=s.get("step"))
            if len(y) != len(x):
                raise ValueError(f"Expected snapshot field `loss` to have {len(x)} values like `residual` "
                                 f"(step {s.get('step')}), but got {len(y)}.")
            ax.plot(x, y, color=cmap(norm(s.get("step", 0))), linewidth=1.2)
        ax.set_xlabel("residual (prediction − target)")
        ax.set_ylabel("learned loss")
        ax.grid(alpha=0.3)
        cbar_axes = ax

    mappable = ScalarMappable(norm=norm, cmap=cmap)
    mappable.set_array([])
    fig.colorbar(mappable, ax=cbar_axes, label="step")
    if title:
        fig.suptitle(title)
    return fig


def plot_implicit_lr(records: Sequence[dict[str, Any]], *, title: str | None = None) -> Figure:
    """``train_grad_norm_ratio`` against step: the implicit learning-rate effect of a learned loss.

    The ratio is ‖∇θ learned loss‖ / ‖∇θ cross-entropy‖; a dashed line marks 1 (the scale of
    cross-entropy). When the base learning rate ``lr`` varies it is drawn on a twin y axis; with a
    learned LR (``train_lr_scale`` logged) the effective rate ``lr × scale``.

    Args:
        records: records of ``metrics.jsonl``.
        title: figure title.

    Raises:
        ValueError: no record holds a number under ``train_grad_norm_ratio``.
    """
    steps, ratio = _series(records, "train_grad_norm_ratio")
    if not steps:
        raise ValueError("Expected some record in `records` to hold `train_grad_norm_ratio` "
                         "(logged by AdaLFL runs), but none does.")
    fig = _new_figure(figsize=(7.0, 4.0))
    ax: Axes = fig.subplots()
    ax.plot(steps, ratio, color="C0", label="grad-norm ratio", linewidth=1.5)
    ax.axhline(1.0, color="0.5", linestyle="--", linewidth=1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("‖∇ learned loss‖ / ‖∇ cross-entropy‖", color="C0")
    ax.grid(alpha=0.3)
    lr_steps, lr = _series(records, "lr")
    scale_steps, scale = _series(records, "train_lr_scale")
    if scale_steps:  # a learned LR (learn_lr): the effective LR is the schedule's times exp(ρ)
        by_step = dict(zip(lr_steps, lr))
        lr_steps = [s for s in scale_steps if s in by_step]
        lr = [by_step[s] * f for s, f in zip(scale_steps, scale) if s in by_step]
    if len(set(lr)) > 1:
        twin = ax.twinx()
        label = "effective lr (learned)" if scale_steps else "lr"
        twin.plot(lr_steps, lr, color="C1", label=label, linewidth=1.0, alpha=0.8)
        twin.set_ylabel("base learning rate" + (" × learned factor" if scale_steps else ""), color="C1")
    if title:
        fig.suptitle(title)
    return fig


def plot_learning_curves(records: Sequence[dict[str, Any]], *, title: str | None = None) -> Figure:
    """Training loss and every evaluation metric against step.

    ``train_loss`` gets its own panel (first); then one panel per metric, with one line per split
    (``valid_error`` and ``test_error`` share the ``error`` panel). Nulls are skipped.

    Args:
        records: records of ``metrics.jsonl``.
        title: figure title.

    Raises:
        ValueError: no record holds ``train_loss`` nor any ``<split>_<metric>`` number.
    """
    panels: dict[str, list[tuple[str, list[float], list[float]]]] = {}
    steps, values = _series(records, "train_loss")
    if steps:
        panels["train loss"] = [("train", steps, values)]
    names = _metric_names()
    for key in _eval_keys(records):
        split, metric = _split_eval_key(key, names)
        steps, values = _series(records, key)
        panels.setdefault(metric, []).append((split, steps, values))
    if not panels:
        raise ValueError("Expected `records` to hold `train_loss` or `<split>_<metric>` values "
                         "(e.g. `valid_error`), but found none.")
    fig = _new_figure(figsize=(4.5 * len(panels), 3.8))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, lines) in zip(axes, panels.items()):
        for label, steps, values in lines:
            ax.plot(steps, values, label=label, marker="o" if len(steps) < 30 else None, markersize=3)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(lines) > 1 or name != "train loss":
            ax.legend()
    if title:
        fig.suptitle(title)
    return fig


def mean_std_curves(
    runs: Sequence[Sequence[dict[str, Any]]], key: str
) -> tuple[list[float], list[float], list[float]]:
    """Steps, mean and sample std (n−1; 0 for one run) of ``key`` over runs, at the steps all runs share.

    Raises:
        ValueError: no step holds ``key`` in every run.
    """
    series = [dict(zip(*_series(records, key))) for records in runs]
    steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
    if not steps:
        raise ValueError(f"Expected every run to log `{key}` at some common step, but found none.")
    means, stds = [], []
    for step in steps:
        vals = [s[step] for s in series]
        mean = math.fsum(vals) / len(vals)
        means.append(mean)
        stds.append(math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0)
    return steps, means, stds


def plot_compare_curves(
    runs_by_method: Mapping[str, Sequence[Sequence[dict[str, Any]]]], *, key: str, title: str | None = None
) -> Figure:
    """``key`` (e.g. ``test_error``) against step: the mean over seeds per method, with a ±1 std band.

    Args:
        runs_by_method: per method, the ``metrics.jsonl`` records of each seed's run.
        key: the logged metric to draw.
        title: figure title.
    """
    fig = _new_figure(figsize=(6.0, 4.0))
    ax = fig.subplots()
    scale = 100.0 if key.endswith("_error") else 1.0
    for method, runs in runs_by_method.items():
        steps, mean, std = mean_std_curves(runs, key)
        lo = [scale * (m - s) for m, s in zip(mean, std)]
        hi = [scale * (m + s) for m, s in zip(mean, std)]
        (line,) = ax.plot(steps, [scale * m for m in mean], label=f"{method} (n={len(runs)})")
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("step")
    ax.set_ylabel(f"{key} (%)" if scale != 1.0 else key)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        fig.suptitle(title)
    return fig


def _ala_history(snapshots: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The latest ALA snapshot (it carries the whole controller history), checked."""
    if not snapshots:
        raise ValueError("Expected `snapshots` to hold at least one ALA snapshot, but got none.")
    kinds = sorted({str(s.get("kind")) for s in snapshots})
    if kinds != ["ala"]:
        raise ValueError(f"Expected ALA snapshots (kind 'ala'), but got kinds {kinds}.")
    last = max(snapshots, key=lambda s: s.get("step", 0))
    for field in ("controller_steps", "metric", "rewards", "phi_stats"):
        if field not in last:
            raise ValueError(f"Expected ALA snapshot field `{field}` (step {last.get('step')}), but it is missing.")
    return last


def plot_ala_phi(snapshots: Sequence[dict[str, Any]], *, title: str | None = None) -> Figure:
    """ALA's loss parameters Φ over training, from the latest snapshot's controller history.

    Left: the statistics of Φ after every controller action (for the class-pair loss the
    diagonal mean and the off-diagonal mean, mean |·|, min and max). Middle, when Φ has at most
    16 entries: every entry. Right, for the class-pair loss: the final C×C matrix as a heat map.
    Φ holds between actions, so lines are drawn as steps.

    Args:
        snapshots: records of an ALA run's ``snapshots.jsonl``.
        title: figure title.

    Raises:
        ValueError: not ALA snapshots, or fields missing.
    """
    last = _ala_history(snapshots)
    steps = [float(v) for v in last["controller_steps"]]
    trace = last.get("phi_trace") or []
    matrix = last.get("phi")
    n = 1 + bool(trace) + (matrix is not None)
    fig = _new_figure(figsize=(5.0 * n, 4.0))
    axes = list(fig.subplots(1, n, squeeze=False)[0])
    ax = axes.pop(0)
    for name, values in last["phi_stats"].items():
        ax.plot(steps, _floats(values, field=f"phi_stats.{name}", step=last.get("step")), drawstyle="steps-post",
                label=name, linewidth=1.3)
    ax.set_title("Φ statistics")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if trace:
        ax = axes.pop(0)
        names = last.get("parameter_names") or [f"φ[{k}]" for k in range(len(trace[0]))]
        for k, name in enumerate(names):
            ax.plot(steps[: len(trace)], [row[k] for row in trace], drawstyle="steps-post", label=name, linewidth=1.0)
        ax.set_title("Φ entries")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(names) <= 10:
            ax.legend(fontsize=7)
    if matrix is not None:
        ax = axes.pop(0)
        lim = max(1e-12, max(abs(float(v)) for row in matrix for i, v in enumerate(row)))
        image = ax.imshow(matrix, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(f"Φ at step {last.get('step')}")
        ax.set_xlabel("class j")
        ax.set_ylabel("class i")
        fig.colorbar(image, ax=ax)
    if title:
        fig.suptitle(title)
    return fig


def plot_ala_reward(snapshots: Sequence[dict[str, Any]], *, title: str | None = None) -> Figure:
    """ALA's reward per controller step (with a running mean over 10) and the smoothed validation
    metric M (Eq. 4) the reward compares, from the latest snapshot's history.

    Raises:
        ValueError: not ALA snapshots, or fields missing.
    """
    last = _ala_history(snapshots)
    steps = [float(v) for v in last["controller_steps"]]
    rewards = _floats(last["rewards"], field="rewards", step=last.get("step"))
    metric = _floats(last["metric"], field="metric", step=last.get("step"))
    fig = _new_figure(figsize=(10.0, 4.0))
    ax_r, ax_m = fig.subplots(1, 2)
    r_steps = steps[1 : 1 + len(rewards)]  # episode k closes at the (k+1)-th controller step
    ax_r.plot(r_steps, rewards, linestyle="none", marker="o", markersize=3, alpha=0.5, label="reward")
    window = 10
    running = [math.fsum(rewards[max(0, i + 1 - window) : i + 1]) / (i + 1 - max(0, i + 1 - window))
               for i in range(len(rewards))]
    ax_r.plot(r_steps, running, color="C1", label=f"running mean ({window})")
    ax_r.axhline(0.0, color="0.5", linestyle="--", linewidth=1.0)
    ax_r.set_title("reward")
    ax_r.set_xlabel("step")
    ax_r.grid(alpha=0.3)
    ax_r.legend(fontsize=8)
    name = last.get("metric_name", "metric")
    better = "higher" if last.get("higher_is_better") else "lower"
    ax_m.plot(steps[: len(metric)], metric, marker="o" if len(metric) < 30 else None, markersize=3)
    ax_m.set_title(f"smoothed validation {name} ({better} is better)")
    ax_m.set_xlabel("step")
    ax_m.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def plot_ala_distances(snapshots: Sequence[dict[str, Any]], *, title: str | None = None) -> Figure:
    """ALA metric learning: the validation positive- and negative-pair distance histograms each
    controller action saw (the metric-learning state; columns = controller steps, rows = distance
    bins, colour = share of the pairs of that kind), and the final bin weights Φ.

    Raises:
        ValueError: not ALA snapshots, or no ``distance_hist`` (a run of another state).
    """
    last = _ala_history(snapshots)
    hist = last.get("distance_hist")
    if not isinstance(hist, dict) or not hist.get("pos") or not hist.get("neg"):
        raise ValueError(f"Expected the ALA snapshot (step {last.get('step')}) to carry `distance_hist` (the "
                         "pair-distance state of the embedding task), but it does not.")
    steps = [float(v) for v in last["controller_steps"]][: len(hist["pos"])]
    fig = _new_figure(figsize=(15.0, 4.0))
    axes = fig.subplots(1, 3)
    bins = len(hist["pos"][0])
    top = float(last.get("max_distance", 2.0))  # the binned range [0, max_distance] of PairDistanceLoss
    width = top / bins
    for ax, kind, label in ((axes[0], "pos", "positive"), (axes[1], "neg", "negative")):
        rows = [_floats(h, field=f"distance_hist.{kind}", step=last.get("step")) for h in hist[kind]]
        matrix = [[row[b] for row in rows] for b in range(bins)]  # (bins, controller steps)
        image = ax.imshow(matrix, aspect="auto", origin="lower", cmap="viridis", vmin=0.0,
                          extent=(-0.5, len(rows) - 0.5, 0.0, top))
        ax.set_title(f"validation {label}-pair distances")
        ax.set_xlabel("controller step (index)")
        ax.set_ylabel("pair distance")
        fig.colorbar(image, ax=ax, label="share of pairs")
    ax = axes[2]
    centres = [(b + 0.5) * width for b in range(bins)]
    for key, label in (("weights_pos", "positive"), ("weights_neg", "negative")):
        if key in last:
            ax.plot(centres, _floats(last[key], field=key, step=last.get("step")), marker="o", label=label)
    ax.axhline(1.0, color="0.5", linestyle="--", linewidth=1.0)
    ax.set_title(f"bin weights Φ at step {last.get('step')} (after {len(steps)} actions)")
    ax.set_xlabel("pair distance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------- run directory
def _check_formats(formats: Sequence[str] | str) -> list[str]:
    items = [formats] if isinstance(formats, str) else list(formats)
    if not items:
        raise ValueError(f"Expected `formats` to name at least one of {list(FIGURE_FORMATS)}, but got none.")
    return [check_choice("formats", f.lower() if isinstance(f, str) else f, FIGURE_FORMATS) for f in items]


def run_figures(run_dir: str | os.PathLike[str], *, learning_curves: bool = True) -> list[tuple[str, Figure]]:
    """The figures :func:`plot_run` writes, as ``(name, figure)`` pairs, without writing them:
    from ``metrics.jsonl`` and ``snapshots.jsonl`` when present (either may be missing).
    ``learning_curves=False`` leaves the learning curves out (e.g. for TensorBoard, which has
    the scalars themselves)."""
    from adaloss.records import read_jsonl

    run = Path(run_dir)
    records = read_jsonl(run / "metrics.jsonl")
    snapshots = read_jsonl(run / "snapshots.jsonl")
    name = run.resolve().name

    figures: list[tuple[str, Figure]] = []
    if snapshots and all(s.get("kind") == "ala" for s in snapshots):
        figures.append(("ala_phi", plot_ala_phi(snapshots, title=f"{name}: ALA loss parameters Φ")))
        figures.append(("ala_reward", plot_ala_reward(snapshots, title=f"{name}: ALA reward")))
        if "distance_hist" in max(snapshots, key=lambda s: s.get("step", 0)):
            figures.append(("ala_distances", plot_ala_distances(snapshots, title=f"{name}: ALA distance state")))
    elif snapshots:
        figures.append(("loss_evolution", plot_loss_evolution(snapshots, title=f"{name}: learned loss")))
    if _series(records, "train_grad_norm_ratio")[0]:
        figures.append(("implicit_lr", plot_implicit_lr(records, title=f"{name}: implicit learning rate")))
    if learning_curves and (_series(records, "train_loss")[0] or _eval_keys(records)):
        figures.append(("learning_curves", plot_learning_curves(records, title=name)))
    return figures


def plot_run(
    run_dir: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    formats: Sequence[str] = ("png",),
    dpi: int = 150,
) -> list[Path]:
    """Write every figure the run's files support.

    ``learning_curves`` from ``metrics.jsonl``, ``implicit_lr`` when it holds
    ``train_grad_norm_ratio``, ``loss_evolution`` when ``snapshots.jsonl`` has learned-loss
    snapshots, ``ala_phi`` and ``ala_reward`` when it has ALA snapshots, and ``ala_distances``
    when those carry the metric-learning distance histograms.

    Args:
        run_dir: the run directory (holds ``metrics.jsonl``).
        out_dir: where the figures go (default: ``<run_dir>/figures``).
        formats: file formats, each of ``png``, ``pdf``, ``svg``.
        dpi: resolution of raster formats.

    Returns:
        The written paths (``<name>.<format>``), figure by figure.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``metrics.jsonl``.
        ValueError: an unknown format.
    """
    fmts = _check_formats(formats)
    run = Path(run_dir)
    metrics_path = run / "metrics.jsonl"
    if not metrics_path.is_file():
        what = "does not exist" if not run.exists() else "has no metrics.jsonl"
        raise FileNotFoundError(f"Expected `run_dir` to be a run directory with metrics.jsonl, "
                                f"but {str(run)!r} {what}.")
    out = Path(out_dir) if out_dir is not None else run / "figures"
    figures = run_figures(run)

    written: list[Path] = []
    if figures:
        out.mkdir(parents=True, exist_ok=True)
    for stem, fig in figures:
        for fmt in fmts:
            path = out / f"{stem}.{fmt}"
            fig.savefig(path, format=fmt, dpi=dpi)
            written.append(path)
    return written


def write_learning_curves(results: Sequence[RunResult], out_dir: str | os.PathLike[str], *,
                          key: str | None = None, dpi: int = 150) -> Path | None:
    """``learning_curves.png`` in ``out_dir`` for the runs of :func:`adaloss.compare`: ``key``
    (default: the first ``test_*`` metric) against step per method, mean over seeds with a ±1 std
    band (:func:`plot_compare_curves`). Diverged runs are left out; ``None`` (no figure) when
    every run diverged."""
    from adaloss.records import read_jsonl

    if all(r.diverged is not None for r in results):
        return None

    if key is None:
        key = next((k for r in results for k in r.final if k.startswith("test_")), None)
        if key is None:
            raise ValueError("Expected the runs to report a `test_*` metric to draw, but they report none.")
    runs_by_method: dict[str, list[list[dict[str, Any]]]] = {}
    for r in results:
        if r.diverged is not None:  # a curve cut short would bias the band; the table counts it
            continue
        runs_by_method.setdefault(r.method, []).append(read_jsonl(Path(r.run_dir) / "metrics.jsonl"))
    fig = plot_compare_curves(runs_by_method, key=key, title=f"{key}: mean ± std over seeds")
    path = Path(out_dir) / "learning_curves.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path

