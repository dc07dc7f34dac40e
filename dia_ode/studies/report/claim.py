"""A claim as data: the runs that measure it, the statistic with its null reference, the
preconditions it presupposes, and the rule that turns a mean ± interval into a verdict.

The five verdicts, each a rule the claim writes in code:

- "reproduced": the interval lies on the claim's side of its decision threshold;
- "not reproduced": the interval rules the claim out (it lies on the other side, or leaves out every
  value that would decide for the claim);
- "inconclusive": the interval admits both readings (it holds values that would decide for the claim and
  values that would decide against it);
- "precondition not met": what the claim presupposes did not happen (the attention did not learn, the
  accuracy is at its ceiling, the baseline failed to train), so the runs cannot test it; the reason names
  the measured number and the threshold;
- "not testable here": data or compute is absent (no dataset, no finished run, one seed); the reason
  says what would test it.

A claim is of one of KINDS: a claim of the papers, a check of the construction, or a hypothesis of this
project; the report shows the papers' scorecard apart from the other two.

A claim never trains or writes anything itself: it lists the training runs it needs (`runs`, as
RunSpecs the report executes, caches and resumes) and reads their run directories back (`measure`).
The report (studies/report/report.py) only iterates over the registry (studies/claims/__init__.py).
"""

from __future__ import annotations

import abc
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dia_ode.analysis.intervals import Interval
from dia_ode.engine import TrainConfig, TrainingDiverged, recipe_config
from dia_ode.rundir import has_results, read_summary
from dia_ode.solvers import StepBudgetExceeded
from dia_ode.studies.report.budgets import Budget
from dia_ode.studies.report.command_line import train_command

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
PRECONDITION_NOT_MET, NOT_TESTABLE = "precondition not met", "not testable here"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, PRECONDITION_NOT_MET, NOT_TESTABLE)
# A claim of the papers; a check of the code's construction (no finding); a hypothesis of this project.
KINDS = ("paper", "construction", "hypothesis")
# What tests a claim whose statistics have no interval (one finished seed, or a run that never finished).
MORE_SEEDS = ("two or more finished seeds of every model (a budget with more seeds, or its failed runs "
              "trained again) would test it")
# Bump CACHE_VERSION when a RunSpec's meaning changes: old study directories are then refused. The key
# hashes every TrainConfig field, defaults included, so a new field or a changed default changes every
# key (and the study retrains): tests/test_report.py pins one spec's key so that such a change is deliberate.
CACHE_VERSION = 1
# Fields added to TrainConfig after version 1 whose default computes what a config without them computed:
# at that default they stay out of the key, so adding them kept the runs of every study.
KEY_NEUTRAL_DEFAULTS = {"precision": "fp32", "compile": False, "compile_mode": "default", "channels_last": False}

# Errors that stop a run for good: training it again from its checkpoint repeats the same epochs exactly
# (CPU determinism) and fails the same way, so the cache reuses such a run and claims score it as diverged.
TERMINAL_ERRORS: tuple[type[BaseException], ...] = (TrainingDiverged, StepBudgetExceeded)
FINISHED, DIVERGED, FAILED = "finished", "diverged", "failed"


@dataclass(frozen=True)
class RunSpec:
    """One training run a claim needs.

    Attributes:
        config: the complete training configuration (recipe applied, seed set).
        recorders: names of per-epoch recorders (studies/report/recorders.py) that write
            `<run>/records/<name>.jsonl` after every epoch's checkpoint.
    """

    config: TrainConfig
    recorders: tuple[str, ...] = ()

    def key(self) -> str:
        """16 hex digits of the SHA-256 of the canonical JSON of the config and recorders: the cache key."""
        config = {name: value for name, value in asdict(self.config).items()
                  if name not in KEY_NEUTRAL_DEFAULTS or value != KEY_NEUTRAL_DEFAULTS[name]}
        payload = {"version": CACHE_VERSION, "config": config, "recorders": list(self.recorders)}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Verdict:
    """The outcome of one claim: one of VERDICTS and the reason in one sentence."""

    status: str
    reason: str

    def __post_init__(self) -> None:
        if self.status not in VERDICTS:
            raise ValueError(f"unknown verdict '{self.status}'; valid: {', '.join(VERDICTS)}")


@dataclass
class ClaimResult:
    """What the report prints and stores for one claim.

    Attributes:
        measured: named statistics over seeds, e.g. {"se_resnet20 per-sample r, stage 0": Interval}.
        references: the null references of those statistics (untrained network, plain backbone, ...).
        verdict: the claim's verdict with its reason.
        table: optional rows for a markdown table (list of dicts with the same keys).
        figures: (name, matplotlib Figure) pairs, saved as <study>/figures/<claim>_<name>.png|pdf.
        notes: sentences a reader needs (protocol, what was left out and why).
        parts: for a claim of several assertions, each part's own verdict (e.g. {"accuracy": ...,
            "parameters": ...}), reported beside the overall one, whose rule combines them.
        comparisons: the measured statistics that compare two things over seeds (a paired difference),
            each with the paper's effect on that scale or None where the paper gives none: the report
            prints each one's power (analysis/power.py: the smallest effect its n seeds detect, the
            seeds the paper's effect would need).
    """

    measured: dict[str, Interval]
    references: dict[str, Interval]
    verdict: Verdict
    table: list[dict[str, Any]] = field(default_factory=list)
    figures: list[tuple[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parts: dict[str, Verdict] = field(default_factory=dict)
    comparisons: dict[str, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [name for name in self.comparisons if name not in self.measured]
        if unknown:  # a comparison is one of the measured statistics, by name
            raise ValueError(f"comparisons {unknown} are not measured statistics")


class AbstractClaim(abc.ABC):
    """One claim. Subclasses set the class attributes and implement runs and measure.

    Attributes:
        id: short identifier used on the command line (`dia-ode report --claims id,...`).
        kind: one of KINDS ("paper", "construction", "hypothesis"), checked when the class is defined.
        statement: the claim in one sentence, as the paper makes it.
        paper: the paper's number and where it stands (title or arXiv id, table or figure).

    The command lines that reproduce a claim's numbers are built from the budget (`commands`).
    """

    id: str
    kind: str
    statement: str
    paper: str
    # True: measure() reads runs that did not finish (what they recorded so far), so the report measures
    # the claim even when one of its runs failed or was not trained (--no-train); False: such a claim is
    # "not testable here" until every run of it is done.
    measures_unfinished_runs: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = getattr(cls, "kind", None)
        if kind not in KINDS:  # at definition: a claim without a valid kind never reaches a report
            raise ValueError(f"claim class {cls.__name__} has kind {kind!r}; valid: {', '.join(KINDS)}")

    def commands(self, budget: Budget) -> str:
        """The commands that reproduce this claim at `budget`: the report restricted to it and, when it
        trains, the `dia-ode train` line of its first run (`--dry-run` lists every run's line)."""
        line = f"dia-ode report --budget {budget.name} --claims {self.id}"
        specs = self.runs(budget)
        if not specs:
            return line
        more = f" (one of its {len(specs)} runs; `--dry-run` lists them all)" if len(specs) > 1 else ""
        return f"{line}; by hand: {train_command(specs[0].config)}{more}"

    @abc.abstractmethod
    def runs(self, budget: Budget) -> list[RunSpec]:
        """The training runs this claim needs at `budget` (may be empty: a check without training)."""

    @abc.abstractmethod
    def measure(self, run_dirs: dict[str, Path], budget: Budget) -> ClaimResult:
        """Read the finished runs (RunSpec.key() -> run directory) and return the claim's result."""


def study_config(model: str, dataset: str, budget: Budget, seed: int, model_options: dict,
                 **fields: Any) -> TrainConfig:
    """The TrainConfig of a claim's run: the model's registry recipe, budget.epochs, `seed`,
    `model_options`, the fields the budget sets (Budget.train_fields: batch size, validation split,
    device) and `fields` (other TrainConfig fields, which win). Everything named here counts as given,
    so the recipe never overrides it; claims that pass the same arguments get the same RunSpec key."""
    values = {"model": model, "dataset": dataset, "epochs": budget.epochs, "seed": seed,
              "model_options": dict(model_options), **budget.train_fields(), **fields}
    return recipe_config(values, set(values))


def terminal_error(summary: dict) -> bool:
    """Whether a run's summary records one of TERMINAL_ERRORS (its "error" starts with the class name)."""
    error = str(summary.get("error", ""))
    return any(error.startswith(cls.__name__) for cls in TERMINAL_ERRORS)


def run_outcome(run_dir: str | Path) -> str:
    """How a run of a study ended, one rule for every claim:

    "finished" (summary.json has results), "diverged" (stopped by one of TERMINAL_ERRORS: a non-finite
    loss or a blown ODE step budget; its last checkpoint is not a trained network) or "failed" (anything
    else: no summary, killed, another error). A claim that needs a trained network skips a run that is
    not finished, with a note; a claim about stability counts a diverged run as a failure of training.
    """
    summary = read_summary(run_dir)
    if has_results(summary):
        return FINISHED
    return DIVERGED if terminal_error(summary) else FAILED


def no_dataset(budget: Budget) -> ClaimResult:
    """The result of a claim whose budget names no dataset present here, saying what would test it."""
    return ClaimResult({}, {}, Verdict(NOT_TESTABLE, f"none of the budget's datasets can be loaded here "
                                                     f"({', '.join(budget.datasets)}); their test files in their "
                                                     f"default place (fashion-mnist: Debian's dataset-fashion-mnist) "
                                                     f"or a budget with digits (smoke, cpu) would test it"))
