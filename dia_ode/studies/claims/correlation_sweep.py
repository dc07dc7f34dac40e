"""The setup sweep of the cross-layer correlation: does the claim hold in some setup it may depend on?

The paper does not publish its protocol or setup, and the claim's own runs (claims/correlation.py: narrow
basic-block SE-ResNets on the budget's first dataset) may be the wrong place to look. Each setup varies
one factor of the base setup (se_resnet20, SE reduction 4 with at least 4 hidden units, digits, the
budget's epochs), and is measured exactly like the claim (claims.correlation.measure_setups: per-sample
and centred r between consecutive blocks with the untrained and channel-permuted nulls paired by seed,
the gates' spread and movement, r after every epoch):

- SE reduction: r = 16, the paper's default (1-4 hidden units on stages of 16-64 channels);
- bottleneck family: se_resnet29, bottlenecks of widths 64/128/256 (resnet164's, 3 blocks per stage
  instead of 18) with r = 16, so each SE has the paper's 4/8/16 hidden units;
- training length: the base setup trained 4x as long (2x at the smoke budget), its r recorded every
  epoch: does the correlation emerge with training, and when?
- dataset: Fashion-MNIST (a seeded subset of its training set at the cpu budget, all of it at full)
  for se_resnet20 and se_resnet29; CIFAR-10 with the paper's se_resnet164 at the full budget. A setup
  whose dataset is not available here is left out with a note.

The homogeneity of features and gate logits and the positive control are the claim's too (reported the
same way); a failed positive control makes the sweep "not testable here", whatever its setups give.

Verdict rule: each setup gets the claim's verdict on its own (claims.correlation.correlation_verdict,
with its precondition that the gates learned; reported as a part). The sweep is "reproduced" when at
least one setup reproduces the claim (the setup is named: that is where the paper's observation holds);
otherwise "not reproduced" when some setup tested the claim and did not show it; otherwise "precondition
not met" when in every measured setup the gates did not learn; "not testable here" when no setup could
be measured.

CPU cost at the cpu budget (OMP_NUM_THREADS=1, per seed): the digits setups 15-60 s (se_resnet20),
about a minute for se_resnet29; Fashion-MNIST at 28x28 about 3 ms per training example and epoch for
se_resnet20, so 10,000 examples x 15 epochs is about 8 minutes, and se_resnet29 on 5,000 examples about
as long. `dia-ode report --budget cpu --claims cross-layer-correlation-sweep --dry-run` lists the runs.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from dia_ode.studies.claims.correlation import Setup, control_verdict, correlation_verdict, measure_setups
from dia_ode.studies.claims.se_options import SE_OPTIONS
from dia_ode.studies.report.budgets import Budget, dataset_available
from dia_ode.studies.report.claim import (NOT_REPRODUCED, NOT_TESTABLE, PRECONDITION_NOT_MET, REPRODUCED, AbstractClaim,
                                          ClaimResult, RunSpec, Verdict)

PAPER_SE = MappingProxyType({"reduction": 16})  # SE's own default, the paper's r
LONGER = {"smoke": 2, "cpu": 4, "full": 2}  # the training-length setup: this many times the budget's epochs
# Fashion-MNIST training examples per budget (None: all 54,000 left after the val split); a small val
# split (2% = 1,200 images) keeps the per-epoch validation from costing as much as the training.
FASHION_EXAMPLES = {"cpu": (10_000, 5_000), "full": (None, None)}  # (se_resnet20, se_resnet29)
FASHION_FIELDS = MappingProxyType({"val_fraction": 0.02})


def sweep_setups(budget: Budget) -> list[Setup]:
    """Every setup of the sweep at `budget`, available here or not (see the module docstring)."""
    longer = LONGER[budget.name] * budget.epochs
    setups = [
        Setup("base: se_resnet20, r=4, digits", "se_resnet20", "digits"),
        Setup("SE reduction: se_resnet20, r=16, digits", "se_resnet20", "digits", PAPER_SE),
        Setup("bottleneck: se_resnet29, r=16, digits", "se_resnet29", "digits", PAPER_SE),
        Setup(f"length: se_resnet20, r=4, digits, {longer} epochs", "se_resnet20", "digits",
              fields=MappingProxyType({"epochs": longer})),
    ]
    if budget.name in FASHION_EXAMPLES:
        for (model, options), examples in zip((("se_resnet20", SE_OPTIONS), ("se_resnet29", PAPER_SE)),
                                              FASHION_EXAMPLES[budget.name]):
            size = f", {examples} examples" if examples else ""
            fields = {**FASHION_FIELDS, **({"train_examples": examples} if examples else {})}
            setups.append(Setup(f"dataset: {model}, r={options['reduction']}, fashion-mnist{size}", model,
                                "fashion-mnist", options, MappingProxyType(fields)))
    if budget.name == "full":
        setups.append(Setup("paper: se_resnet164, r=16, cifar10", "se_resnet164", "cifar10", PAPER_SE))
    return setups


def _available(budget: Budget) -> tuple[list[Setup], list[str]]:
    """(the setups whose dataset is available here, a note for each one left out)."""
    setups = sweep_setups(budget)
    kept = [s for s in setups if dataset_available(s.dataset)]
    return kept, [f"left out, dataset not available here: {s.label}" for s in setups if s not in kept]


def sweep_verdict(parts: dict[str, Verdict]) -> Verdict:
    """The sweep's verdict from each setup's own verdict (module docstring)."""
    by_status = {status: [label for label, v in parts.items() if v.status == status]
                 for status in (REPRODUCED, NOT_REPRODUCED, PRECONDITION_NOT_MET)}
    shown = by_status[REPRODUCED]
    if shown:
        return Verdict(REPRODUCED, f"the claim holds in {len(shown)} of {len(parts)} setups: {'; '.join(shown)}")
    measured = [label for label, v in parts.items() if v.status != NOT_TESTABLE]
    if not measured:
        return Verdict(NOT_TESTABLE, "no setup of the sweep could be measured here; finished runs of at least one "
                                     "setup (its dataset available, two or more seeds) would test it")
    untested = len(parts) - len(measured)
    untested_note = f" ({untested} not testable)" if untested else ""
    unlearned = len(by_status[PRECONDITION_NOT_MET])
    if by_status[NOT_REPRODUCED]:
        unlearned_note = f"; in {unlearned} the gates did not learn" if unlearned else ""
        return Verdict(NOT_REPRODUCED, f"none of the {len(measured)} measured setups shows the claim; it fails where "
                                       f"the gates learned: {'; '.join(by_status[NOT_REPRODUCED])}{unlearned_note}"
                                       f"{untested_note}")
    return Verdict(PRECONDITION_NOT_MET, f"the gates did not learn in any of the {len(measured)} measured setups, so "
                                         f"none tests the claim{untested_note}")


class CrossLayerCorrelationSweep(AbstractClaim):
    """The cross-layer correlation over the setups the claim may depend on (module docstring)."""

    id = "cross-layer-correlation-sweep"
    kind = "paper"
    statement = ("the strong correlation of consecutive blocks' attention holds in at least one setup the "
                 "claim may depend on: SE bottleneck, bottleneck blocks, training length, dataset")
    paper = ("0.85 (DIA: arXiv 2210.16101; DIANet: arXiv 1905.10671); the paper's setup: SE-ResNet164 "
             "with r = 16 on CIFAR-100, 164 epochs")

    def runs(self, budget: Budget) -> list[RunSpec]:
        return [spec for setup in _available(budget)[0] for spec in setup.runs(budget)]

    def measure(self, run_dirs: dict[str, Path], budget: Budget) -> ClaimResult:
        setups, missing = _available(budget)
        m = measure_setups(setups, run_dirs, budget)
        parts = {label: correlation_verdict({label: triples}, {label: m.learned[label]})
                 for label, triples in m.triples.items()}
        verdict = control_verdict(m.control) or sweep_verdict(parts)
        return ClaimResult(m.measured, m.references, verdict, m.table, m.figures, missing + m.notes, parts)


__all__ = ["CrossLayerCorrelationSweep", "sweep_setups", "sweep_verdict"]
