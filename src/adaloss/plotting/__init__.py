"""Figures of run directories: learned-loss evolution, implicit learning rate, learning curves.

matplotlib is imported only when a figure is drawn, with the non-interactive Agg canvas.
"""

from __future__ import annotations

from adaloss.plotting.figures import (
    FIGURE_FORMATS,
    mean_std_curves,
    plot_ala_distances,
    plot_ala_phi,
    plot_ala_reward,
    plot_compare_curves,
    plot_implicit_lr,
    plot_learning_curves,
    plot_loss_evolution,
    plot_run,
    run_figures,
    write_learning_curves,
)

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
