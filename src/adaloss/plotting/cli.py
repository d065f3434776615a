"""The ``adaloss plot`` subcommand: figures of one or more run directories."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from adaloss.plotting.figures import FIGURE_FORMATS

if TYPE_CHECKING:
    from argparse import _SubParsersAction

__all__ = ["add_plot_parser", "run_plot"]


def add_plot_parser(subparsers: _SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``plot RUN_DIR [RUN_DIR ...] [--out DIR] [--format FMT[,FMT]]`` to ``subparsers``."""
    p = subparsers.add_parser(
        "plot", help="figures of run directories (learned loss, implicit LR, learning curves)",
        description="Write loss_evolution, implicit_lr and learning_curves figures, whichever a run's "
                    "files support, and print the written paths.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (each holds metrics.jsonl)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: RUN_DIR/figures; with several "
                                                "runs, DIR/<run name>)")
    p.add_argument("--format", dest="formats", metavar="FMT", default="png",
                   help=f"comma-separated file formats, of {', '.join(FIGURE_FORMATS)} (default: png)")


def _out_dirs(run_dirs: list[Path], out: str | None) -> list[Path | None]:
    if out is None:
        return [None] * len(run_dirs)
    if len(run_dirs) == 1:
        return [Path(out)]
    dirs: list[Path | None] = []
    used: set[str] = set()
    for run in run_dirs:
        name, i = run.resolve().name, 1
        while name in used:  # two runs of the same name in different folders
            i += 1
            name = f"{run.resolve().name}-{i}"
        used.add(name)
        dirs.append(Path(out) / name)
    return dirs


def run_plot(args: argparse.Namespace) -> int:
    """Plot every run of ``args.run_dirs``, print the written paths one per line, return 0.

    Every run directory and format is checked before anything is written; errors
    (``FileNotFoundError``, ``ValueError``) propagate to the caller.
    """
    from adaloss.plotting.figures import _check_formats, plot_run

    formats = _check_formats([f.strip() for f in str(args.formats).split(",") if f.strip()])
    runs = [Path(d) for d in args.run_dirs]
    for run in runs:
        if not (run / "metrics.jsonl").is_file():
            what = "does not exist" if not run.exists() else "has no metrics.jsonl"
            raise FileNotFoundError(f"Expected RUN_DIR to be a run directory with metrics.jsonl, "
                                    f"but {str(run)!r} {what}.")
    for run, out in zip(runs, _out_dirs(runs, args.out)):
        paths = plot_run(run, out_dir=out, formats=formats)
        if not paths:
            print(f"adaloss: {run}: no metrics to plot yet", file=sys.stderr)
        for path in paths:
            print(path)
    return 0
