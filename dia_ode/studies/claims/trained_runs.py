"""The runs of a claim that hold a trained network, and a note naming those that do not.

Claims that measure a trained network (its attention, its steps) skip a run that diverged or failed
(studies.report.claim.run_outcome, one rule for every claim): its last checkpoint is where training
stopped, not a trained network, and measuring it as one would mix a failure into the statistic.
"""

from __future__ import annotations

from pathlib import Path

from dia_ode.studies.report.claim import FINISHED, RunSpec, run_outcome


def trained_runs(specs: list[RunSpec], run_dirs: dict[str, Path]) -> tuple[list[tuple[RunSpec, Path]], list[str]]:
    """The (spec, run directory) pairs of the finished runs, in the order of `specs`, and the notes.

    Args:
        specs: the claim's runs (AbstractClaim.runs).
        run_dirs: RunSpec.key() -> run directory, as measure() receives it; a missing key is a run
            that was never made.

    Returns:
        (finished runs, notes): notes is empty when every run finished, else one sentence naming
        each skipped run (model, seed) and how it ended.
    """
    kept, skipped = [], []
    for spec in specs:
        run_dir = run_dirs.get(spec.key())
        outcome = "not run" if run_dir is None else run_outcome(run_dir)
        if outcome == FINISHED:
            kept.append((spec, Path(run_dir)))
        else:
            skipped.append(f"{spec.config.model} seed {spec.config.seed} ({outcome})")
    if not skipped:
        return kept, []
    return kept, [f"left out, no trained network to measure: {', '.join(skipped)}; the intervals are over the "
                  f"seeds that finished"]


__all__ = ["trained_runs"]
