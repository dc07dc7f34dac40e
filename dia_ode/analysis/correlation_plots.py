"""The figure that puts each protocol's cross-block correlation next to its two null references.

Reads the per-stage dicts of attention_nulls.correlation_with_nulls; builds a Figure without pyplot
(see plots.py for the house rules: words as labels, stages numbered from 0, the title names the run).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from dia_ode.analysis.plots import PANEL, _row

# key in a protocol's dict -> legend words; "trained" is the protocol's own mean_r
REFERENCES = (("trained", "trained"), ("untrained", "untrained, same seed"), ("permuted", "channels permuted"))
# protocol -> the words of a panel title (a figure's suptitle names the protocol itself)
PROTOCOL_WORDS = {"per_sample": "per-sample vectors", "batch_mean": "batch-mean vectors",
                  "per_channel": "per channel, across images", "centred": "centred per-sample vectors"}


def plot_correlation_nulls(stages: Sequence[dict], protocols: Sequence[str], title: str | None = None) -> Figure:
    """Mean off-diagonal r per stage, trained against untrained and channel-permuted, one panel per protocol.

    Args:
        stages: correlation_with_nulls(...) output.
        protocols: the protocols to draw (each a key of every stage dict).
        title: the figure's title (what was analysed).

    Returns:
        The figure; the permuted bars carry the std over the permutation draws as an error bar.
    """
    fig, axes = _row(len(protocols), width=PANEL * 1.1, title=title, sharey=True)
    x = np.arange(len(stages))
    width = 0.8 / len(REFERENCES)
    for ax, protocol in zip(axes, protocols):
        for i, (key, words) in enumerate(REFERENCES):
            values = [s[protocol]["mean_r"] if key == "trained" else s[protocol][key]["mean_r"] for s in stages]
            errors = [s[protocol]["permuted"]["mean_r_std"] for s in stages] if key == "permuted" else None
            ax.bar(x + (i - 1) * width, values, width, yerr=errors, label=words, capsize=2)
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_title(PROTOCOL_WORDS.get(protocol, protocol))
        ax.set_xticks(x, [f"stage {s['stage']}" for s in stages])
        ax.set_ylim(-1.0, 1.0)
    axes[0].set_ylabel("mean Pearson r between blocks")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=len(REFERENCES))
    return fig


__all__ = ["PROTOCOL_WORDS", "plot_correlation_nulls"]
