"""Analysis of traced models: attention correlation across blocks, step sizes over depth against
stiffness, and the figures for both. Functions read traces or plain arrays, never model internals;
only continuous_stiffness.py (a continuous run's spectra along its steps) and step_radius.py (each
block's spectral radius, paired with its step) call dia_ode.stiffness; everywhere else the caller
passes stiffness estimates in as arrays."""

from dia_ode.analysis.attention_nulls import (correlation_with_nulls, learning_measures, permute_channels,
                                              permuted_correlation, planted_correlation, planted_gates,
                                              untrained_model)
from dia_ode.analysis.correlation import (MODES, PROTOCOLS, attention_vectors, layer_correlation, layer_cosine,
                                          mean_off_diagonal, protocol_correlation, stage_correlations)
from dia_ode.analysis.homogeneity import (block_similarity, gate_logits, homogeneity_with_untrained, pooled_states,
                                          pooled_updates, stage_homogeneity)
from dia_ode.analysis.correlation_plots import plot_correlation_nulls
from dia_ode.analysis.intervals import Interval, example_note, mean_interval, metric_bounds, one_example_worth
from dia_ode.analysis.plots import (plot_correlation_heatmaps, plot_depth_profiles, plot_eigenvalues,
                                    plot_indices_over_time, plot_step_spectra, spearman_text)
from dia_ode.analysis.step_radius import block_radii, step_radius_pairs
from dia_ode.analysis.stepsize import (MIN_PAIRS, channel_steps, per_channel_rank_correlation, rank_correlation,
                                       step_sizes, with_depth_advice)
from dia_ode.rundir.figures import choose_scale  # re-exported: where analysis users found it

__all__ = [
    "Interval", "MIN_PAIRS", "MODES", "PROTOCOLS", "attention_vectors", "block_radii", "correlation_with_nulls",
    "learning_measures", "permute_channels", "permuted_correlation", "plot_correlation_nulls", "protocol_correlation",
    "untrained_model", "block_similarity", "gate_logits", "homogeneity_with_untrained", "layer_cosine",
    "planted_correlation", "planted_gates", "pooled_states", "pooled_updates", "stage_homogeneity", "channel_steps",
    "choose_scale", "example_note", "mean_interval", "metric_bounds",
    "one_example_worth", "layer_correlation", "mean_off_diagonal",
    "per_channel_rank_correlation", "plot_correlation_heatmaps", "plot_depth_profiles", "plot_eigenvalues",
    "plot_indices_over_time", "plot_step_spectra", "rank_correlation", "spearman_text", "stage_correlations",
    "step_radius_pairs", "step_sizes", "with_depth_advice",
]
