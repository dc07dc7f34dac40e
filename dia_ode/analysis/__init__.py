"""Analysis of traced models: attention correlation across blocks, step sizes over depth against
stiffness, and the figures for both. Functions read traces or plain arrays, never model internals,
and never import dia_ode.stiffness (the CLI passes stiffness estimates in as arrays)."""

from dia_ode.analysis.axes import choose_scale
from dia_ode.analysis.correlation import (MODES, attention_vectors, layer_correlation, mean_off_diagonal,
                                          stage_correlations)
from dia_ode.analysis.intervals import Interval, example_note, mean_interval, one_example_worth
from dia_ode.analysis.plots import (plot_correlation_heatmaps, plot_depth_profiles, plot_eigenvalues,
                                    plot_indices_over_time, plot_step_spectra, spearman_text)
from dia_ode.analysis.stepsize import (MIN_PAIRS, channel_steps, per_channel_rank_correlation, rank_correlation,
                                       step_sizes)

__all__ = [
    "Interval", "MIN_PAIRS", "MODES", "attention_vectors", "channel_steps", "choose_scale", "example_note", "mean_interval",
    "one_example_worth", "layer_correlation", "mean_off_diagonal",
    "per_channel_rank_correlation", "plot_correlation_heatmaps", "plot_depth_profiles", "plot_eigenvalues",
    "plot_indices_over_time", "plot_step_spectra", "rank_correlation", "spearman_text", "stage_correlations",
    "step_sizes",
]
