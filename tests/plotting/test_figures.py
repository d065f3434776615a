from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adaloss.plotting import plot_implicit_lr, plot_learning_curves, plot_loss_evolution, plot_run
from adaloss.plotting.cli import add_plot_parser, run_plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SNAPSHOT_STEPS = [0, 50, 100]


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _metrics(*, grad_ratio: bool, lr_varies: bool = True) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for step in range(10, 101, 10):
        r: dict[str, Any] = {"step": step, "train_loss": 2.0 / step, "lr": 0.1 / step if lr_varies else 0.1}
        if grad_ratio:
            r.update(train_grad_norm_ratio=1.0 + step / 100, train_meta_loss=0.5, train_skipped_meta_steps=0)
        records.append(r)
        if step % 50 == 0:
            records.append({"step": step, "valid_error": 0.5 - step / 1000, "test_error": 0.6 - step / 1000})
    records.append({"step": 100, "valid_error": None, "test_error": 0.4})  # a null and a shared step
    return records


def _classification_snapshots() -> list[dict[str, Any]]:
    p = np.linspace(0.0, 1.0, 101)
    return [
        {"step": s, "kind": "classification", "p": p.tolist(),
         "loss_target1": (-(1 + s / 100) * np.log(np.clip(p, 1e-6, 1))).tolist(),
         "loss_target0": (-(1 + s / 100) * np.log(np.clip(1 - p, 1e-6, 1))).tolist()}
        for s in SNAPSHOT_STEPS
    ]


def _regression_snapshots() -> list[dict[str, Any]]:
    r = np.linspace(-3.0, 3.0, 61)
    return [{"step": s, "kind": "regression", "residual": r.tolist(), "loss": ((1 + s / 100) * r**2).tolist()}
            for s in SNAPSHOT_STEPS]


def _run_dir(tmp_path: Path, name: str, *, snapshots: list[dict[str, Any]] | None, grad_ratio: bool) -> Path:
    run = tmp_path / name
    run.mkdir()
    _write_jsonl(run / "metrics.jsonl", _metrics(grad_ratio=grad_ratio))
    if snapshots is not None:
        _write_jsonl(run / "snapshots.jsonl", snapshots)
    return run


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5000, (path, len(data))


# ---------------------------------------------------------------------------- figures
def test_loss_evolution_classification_curves_match_snapshots() -> None:
    snaps = _classification_snapshots()
    fig = plot_loss_evolution(list(reversed(snaps)), title="t")  # drawn in step order regardless
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 2 and len(fig.axes) == 3  # target 1, target 0, colorbar
    for ax, field in zip(panels, ("loss_target1", "loss_target0")):
        assert len(ax.lines) == len(snaps)
        for line, snap in zip(ax.lines, snaps):
            np.testing.assert_allclose(line.get_xdata(), snap["p"])
            np.testing.assert_allclose(line.get_ydata(), snap[field])
    colours = [tuple(line.get_color()) for line in panels[0].lines]
    assert len(set(colours)) == len(snaps)
    import matplotlib

    assert colours[0] == pytest.approx(matplotlib.colormaps["viridis"](0.0))
    assert colours[-1] == pytest.approx(matplotlib.colormaps["viridis"](1.0))


def test_loss_evolution_regression_one_panel() -> None:
    snaps = _regression_snapshots()
    fig = plot_loss_evolution(snaps)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 1 and len(fig.axes) == 2
    assert len(panels[0].lines) == len(snaps)
    np.testing.assert_allclose(panels[0].lines[-1].get_xdata(), snaps[-1]["residual"])
    np.testing.assert_allclose(panels[0].lines[-1].get_ydata(), snaps[-1]["loss"])


def test_loss_evolution_single_snapshot_and_errors() -> None:
    fig = plot_loss_evolution(_regression_snapshots()[:1])
    assert len(fig.axes[0].lines) == 1
    with pytest.raises(ValueError, match="at least one"):
        plot_loss_evolution([])
    with pytest.raises(ValueError, match="one kind"):
        plot_loss_evolution(_regression_snapshots()[:1] + _classification_snapshots()[:1])
    with pytest.raises(ValueError, match="snapshot kind.*'density'"):
        plot_loss_evolution([{"step": 0, "kind": "density"}])


def test_implicit_lr_with_twin_lr_axis() -> None:
    records = _metrics(grad_ratio=True)
    fig = plot_implicit_lr(records)
    assert len(fig.axes) == 2  # ratio + twin lr axis
    ratio_line = fig.axes[0].lines[0]
    steps = [r["step"] for r in records if "train_grad_norm_ratio" in r]
    np.testing.assert_allclose(ratio_line.get_xdata(), steps)
    np.testing.assert_allclose(ratio_line.get_ydata(), [1 + s / 100 for s in steps])
    assert len(fig.axes[1].lines) == 1
    constant = plot_implicit_lr(_metrics(grad_ratio=True, lr_varies=False))
    assert len(constant.axes) == 1


def test_implicit_lr_raises_without_key() -> None:
    with pytest.raises(ValueError, match="train_grad_norm_ratio"):
        plot_implicit_lr(_metrics(grad_ratio=False))
    with pytest.raises(ValueError, match="train_grad_norm_ratio"):
        plot_implicit_lr([{"step": 1, "train_grad_norm_ratio": None}])


def test_learning_curves_panels_and_nulls() -> None:
    fig = plot_learning_curves(_metrics(grad_ratio=True))
    assert [ax.get_title() for ax in fig.axes] == ["train loss", "error"]
    loss_ax, error_ax = fig.axes
    assert len(loss_ax.lines) == 1 and len(loss_ax.lines[0].get_xdata()) == 10
    labels = {line.get_label(): line for line in error_ax.lines}
    assert set(labels) == {"valid", "test"}
    np.testing.assert_allclose(labels["valid"].get_xdata(), [50, 100])
    np.testing.assert_allclose(labels["valid"].get_ydata(), [0.45, 0.4])  # a null does not overwrite
    np.testing.assert_allclose(labels["test"].get_xdata(), [50, 100])
    np.testing.assert_allclose(labels["test"].get_ydata(), [0.55, 0.4])  # last value per step wins


def test_learning_curves_regression_metric_and_empty() -> None:
    fig = plot_learning_curves([{"step": 5, "valid_mse": 1.0}, {"step": 10, "valid_mse": 0.5, "test_mse": 0.6}])
    assert [ax.get_title() for ax in fig.axes] == ["mse"]
    with pytest.raises(ValueError, match="train_loss"):
        plot_learning_curves([{"step": 1, "lr": 0.1, "train_meta_loss": 1.0}])


# ---------------------------------------------------------------------------- run directories
def test_plot_run_classification_writes_all_figures(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, "adalfl", snapshots=_classification_snapshots(), grad_ratio=True)
    paths = plot_run(run)
    names = ["loss_evolution.png", "implicit_lr.png", "learning_curves.png"]
    assert paths == [run / "figures" / n for n in names]
    for p in paths:
        _assert_png(p)


def test_plot_run_regression_out_dir_and_formats(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, "reg", snapshots=_regression_snapshots(), grad_ratio=False)
    out = tmp_path / "figs" / "nested"
    paths = plot_run(run, out_dir=out, formats=("svg", "pdf"))
    assert sorted(p.name for p in paths) == ["learning_curves.pdf", "learning_curves.svg",
                                            "loss_evolution.pdf", "loss_evolution.svg"]
    assert all(p.parent == out and p.stat().st_size > 1000 for p in paths)
    assert (out / "loss_evolution.pdf").read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in (out / "loss_evolution.svg").read_bytes()[:2000]


def test_plot_run_without_snapshots_only_learning_curves(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, "ce", snapshots=None, grad_ratio=False)
    paths = plot_run(run)
    assert [p.name for p in paths] == ["learning_curves.png"]
    _assert_png(paths[0])
    assert sorted(p.name for p in (run / "figures").iterdir()) == ["learning_curves.png"]


def test_plot_run_missing_dir_and_bad_format(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        plot_run(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*metrics.jsonl"):
        plot_run(tmp_path / "empty")
    run = _run_dir(tmp_path, "ce", snapshots=None, grad_ratio=False)
    with pytest.raises(ValueError, match=r"formats.*\['pdf', 'png', 'svg'\].*'jpg'"):
        plot_run(run, formats=("png", "jpg"))
    assert not (run / "figures").exists()  # checked before anything is written


def test_plot_run_tolerates_partial_last_line(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, "going", snapshots=_regression_snapshots(), grad_ratio=False)
    with (run / "snapshots.jsonl").open("a") as f:
        f.write('{"step": 150, "kind": "regr')
    paths = plot_run(run)
    assert [p.name for p in paths] == ["loss_evolution.png", "learning_curves.png"]
    assert math.isfinite(paths[0].stat().st_size)


# ---------------------------------------------------------------------------- CLI
def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="adaloss")
    add_plot_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_plot_several_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _run_dir(tmp_path, "a", snapshots=None, grad_ratio=False)
    b = _run_dir(tmp_path, "b", snapshots=None, grad_ratio=True)
    out = tmp_path / "out"
    args = _parse(["plot", str(a), str(b), "--out", str(out), "--format", "png,svg"])
    assert run_plot(args) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(printed) == sorted(str(p) for p in [
        out / "a" / "learning_curves.png", out / "a" / "learning_curves.svg",
        out / "b" / "implicit_lr.png", out / "b" / "implicit_lr.svg",
        out / "b" / "learning_curves.png", out / "b" / "learning_curves.svg",
    ])
    assert all(Path(p).is_file() for p in printed)


def test_cli_plot_errors(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, "a", snapshots=None, grad_ratio=False)
    with pytest.raises(FileNotFoundError, match="missing"):
        run_plot(_parse(["plot", str(run), str(tmp_path / "missing")]))
    assert not (run / "figures").exists()
    with pytest.raises(ValueError, match="gif"):
        run_plot(_parse(["plot", str(run), "--format", "gif"]))


def test_mean_std_curves_match_numpy_at_common_steps() -> None:
    import numpy as np

    from adaloss.plotting import mean_std_curves, plot_compare_curves

    runs = [
        [{"step": 0, "test_error": 0.5}, {"step": 10, "test_error": 0.3}, {"step": 20, "test_error": 0.2}],
        [{"step": 0, "test_error": 0.7}, {"step": 10, "test_error": 0.1}, {"step": 20, "test_error": None}],
        [{"step": 0, "test_error": 0.6}, {"step": 10, "test_error": 0.2}],
    ]
    steps, mean, std = mean_std_curves(runs, "test_error")
    assert steps == [0, 10]
    np.testing.assert_allclose(mean, [0.6, 0.2])
    np.testing.assert_allclose(std, [np.std([0.5, 0.7, 0.6], ddof=1), np.std([0.3, 0.1, 0.2], ddof=1)])
    with pytest.raises(ValueError, match="Expected every run to log `valid_mse`"):
        mean_std_curves(runs, "valid_mse")
    fig = plot_compare_curves({"ce": runs, "adalfl": runs[:1]}, key="test_error")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["ce (n=3)", "adalfl (n=1)"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [60.0, 20.0])


def _ala_embedding_snapshot() -> dict[str, Any]:
    """An ALA metric-learning snapshot: 3 controller actions, 4 bins per pair type, range [0, 1.6]."""
    pos = [[0.7, 0.3, 0.0, 0.0], [0.4, 0.4, 0.2, 0.0], [0.1, 0.5, 0.3, 0.1]]
    neg = [[0.9, 0.1, 0.0, 0.0], [0.2, 0.5, 0.3, 0.0], [0.0, 0.2, 0.5, 0.3]]
    return {"step": 30, "kind": "ala", "weights_pos": [1.0, 1.1, 0.9, 1.2], "weights_neg": [0.8, 1.0, 1.0, 1.3],
            "max_distance": 1.6, "metric_name": "recall@1", "higher_is_better": True,
            "controller_steps": [0, 10, 20], "metric": [0.5, 0.55, 0.6], "rewards": [1.0, 1.0],
            "phi_stats": {"mean": [1.0, 1.0, 1.04]}, "clamp_hits": 0, "distance_hist": {"pos": pos, "neg": neg}}


def test_ala_distances_draws_the_histograms_and_weights(tmp_path: Path) -> None:
    from adaloss.plotting import plot_ala_distances

    snap = _ala_embedding_snapshot()
    fig = plot_ala_distances([snap])
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"][:3]
    for ax, kind in zip(axes[:2], ("pos", "neg")):
        image = ax.get_images()[0]
        np.testing.assert_allclose(np.asarray(image.get_array()), np.array(snap["distance_hist"][kind]).T)
        assert image.get_extent()[2:] == [0.0, 1.6]  # rows are bins of [0, max_distance]
    lines = axes[2].get_lines()
    np.testing.assert_allclose(lines[0].get_xdata(), [0.2, 0.6, 1.0, 1.4])  # bin centres
    assert list(lines[0].get_ydata()) == snap["weights_pos"] and list(lines[1].get_ydata()) == snap["weights_neg"]
    run = _run_dir(tmp_path, "ala_embed", snapshots=[snap], grad_ratio=False)
    names = [p.name for p in plot_run(run)]
    assert names == ["ala_phi.png", "ala_reward.png", "ala_distances.png", "learning_curves.png"]
    _assert_png(run / "figures" / "ala_distances.png")
    no_hist = {k: v for k, v in snap.items() if k != "distance_hist"}
    with pytest.raises(ValueError, match="to carry `distance_hist`"):
        plot_ala_distances([no_hist])
    assert "ala_distances.png" not in [p.name for p in plot_run(_run_dir(tmp_path, "cls", snapshots=[no_hist],
                                                                         grad_ratio=False))]


def test_implicit_lr_figure_draws_the_learned_effective_lr() -> None:
    from adaloss.plotting import plot_implicit_lr

    records = [{"step": s, "train_grad_norm_ratio": 1.0, "lr": 0.1, "train_lr_scale": 1 + s / 50}
               for s in range(10, 60, 10)]
    fig = plot_implicit_lr(records)
    line = fig.axes[1].get_lines()[0]
    assert list(line.get_ydata()) == pytest.approx([0.1 * (1 + s / 50) for s in range(10, 60, 10)])
    assert "learned" in fig.axes[1].get_ylabel()


def test_figures_from_a_plain_loop_over_the_adalfl_object() -> None:
    """A user's own loop collects ``adalfl.loss.curves()`` and the step's ``grad_norm_ratio`` and
    draws the same figures ``adaloss plot`` draws for a run."""
    import torch

    import adaloss

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    adalfl = adaloss.AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.1), initialized=True,
                            grad_ratio_every=1)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    snapshots, records = [], []
    for step in range(1, 31):
        stats = adalfl.step((x, y), (x, y))
        records.append({"step": step, "train_grad_norm_ratio": float(stats["grad_norm_ratio"])})
        if step % 10 == 0:
            snapshots.append({"step": step, **adalfl.loss.curves()})
    fig = plot_loss_evolution(snapshots)
    target1 = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"][0]
    assert len(target1.lines) == 3
    np.testing.assert_allclose(target1.lines[-1].get_ydata(), adalfl.loss.curves()["loss_target1"], rtol=1e-6)
    assert not np.allclose(target1.lines[0].get_ydata(), target1.lines[-1].get_ydata())  # φ moved online
    assert plot_implicit_lr(records).axes[0].lines[0].get_ydata().size == 30
