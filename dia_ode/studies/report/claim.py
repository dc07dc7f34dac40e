"""A claim of the papers as data: the runs that measure it, the statistic with its null reference,
and the rule that turns a mean ± interval into a verdict (DESIGN.md, style example 12).

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
from dia_ode.engine import TrainConfig
from dia_ode.studies.report.budgets import Budget

VERDICTS = ("reproduced", "not reproduced", "not testable here")
CACHE_VERSION = 1  # bump when a RunSpec's meaning changes: old study directories are then refused


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
        payload = {"version": CACHE_VERSION, "config": asdict(self.config), "recorders": list(self.recorders)}
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
    """

    measured: dict[str, Interval]
    references: dict[str, Interval]
    verdict: Verdict
    table: list[dict[str, Any]] = field(default_factory=list)
    figures: list[tuple[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class AbstractClaim(abc.ABC):
    """One claim of the papers. Subclasses set the class attributes and implement runs and measure.

    Attributes:
        id: short identifier used on the command line (`dia-ode report --claims id,...`).
        statement: the claim in one sentence, as the paper makes it.
        paper: the paper's number and where it stands (title or arXiv id, table or figure).
        command: the dia-ode command(s) that reproduce our number by hand.
    """

    id: str
    statement: str
    paper: str
    command: str

    @abc.abstractmethod
    def runs(self, budget: Budget) -> list[RunSpec]:
        """The training runs this claim needs at `budget` (may be empty: a check without training)."""

    @abc.abstractmethod
    def measure(self, run_dirs: dict[str, Path], budget: Budget) -> ClaimResult:
        """Read the finished runs (RunSpec.key() -> run directory) and return the claim's result."""


def no_dataset(budget: Budget) -> ClaimResult:
    """The result of a claim whose budget names no dataset present here."""
    return ClaimResult({}, {}, Verdict("not testable here", f"none of the budget's datasets can be loaded here "
                                                            f"({', '.join(budget.datasets)})"))
