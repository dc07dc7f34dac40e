"""The reproduction report: every claim's runs executed (or reused) in one study, measured, and written.

run_report collects the RunSpecs of the chosen claims (one run serves every claim that names the same
key), hands them to a launcher (launchers.py), gives each claim its finished run directories, and
writes `<study>/report.md`, `<study>/report.json`, `<study>/summary.json` (each claim's verdict, so
`dia-ode ls runs` shows the study finished) and `<study>/figures/<claim>_<name>.png|pdf`.

A claim is never lost to another's failure: a run that failed to train, or a measure that raised,
makes that claim "not testable here" with the error in one line (logged as an error, which the CLI
prints), and the report still completes.

A budget sized for some claims (budgets.sized_budget: long, gpu) runs and measures every other claim at
its fallback budget, saying so in a note, or not at all ("not testable here", with what would test it).
With train=False (`--no-train`) nothing trains: each claim is measured on the runs as they stand, which
a claim that reads unfinished runs (AbstractClaim.measures_unfinished_runs) turns into its results so
far, and any other claim with a run not done reports it not testable.

Each claim's entry carries its kind (claim.KINDS), so report.md can show the papers' scorecard apart
from the construction checks and the project's hypotheses. The written files name no path of this
machine (portable.py): the study by its name, a run by its path inside the study.
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch

from dia_ode.rundir import save_figure, write_json
from dia_ode.rundir.jsonio import atomic_write_text
from dia_ode.studies.report.budgets import Budget, sized_budget, unsized_reason
from dia_ode.studies.report.cache import STUDY_FILE, open_study, run_path, run_state
from dia_ode.analysis.power import power_row
from dia_ode.studies.report.claim import NOT_TESTABLE, AbstractClaim, ClaimResult, RunSpec, Verdict
from dia_ode.studies.report.command_line import train_command
from dia_ode.studies.report.launchers import AbstractLauncher, LocalLauncher
from dia_ode.studies.report.markdown import report_markdown
from dia_ode.studies.report.portable import portable

log = logging.getLogger(__name__)
# What would test a claim whose run or measure failed: the error fixed, the same study reported again.
RERUN = "the error fixed and the report rerun on this study (--study; finished runs are reused) would test it"
UNTRAINED = "the report run on this study without --no-train would train it and test the claim"


def plan(claims: Sequence[AbstractClaim], budget: Budget) -> tuple[dict[str, RunSpec], dict[str, list[str]]]:
    """(every distinct RunSpec by key, in first-seen order; claim id -> the keys of its runs), each
    claim's runs at its sized_budget (none where it has none)."""
    specs: dict[str, RunSpec] = {}
    keys: dict[str, list[str]] = {}
    for claim in claims:
        keys[claim.id] = []
        sized = sized_budget(budget, claim.id)
        for spec in claim.runs(sized) if sized is not None else ():
            key = spec.key()
            specs.setdefault(key, spec)
            if key not in keys[claim.id]:
                keys[claim.id].append(key)
    return specs, keys


def dry_run_lines(claims: Sequence[AbstractClaim], budget: Budget, study_dir: Path | None = None) -> list[str]:
    """One line per run the report would execute: key, model, dataset, seed, epochs, its state in
    `study_dir` when given (new / resume / done), and the equivalent `dia-ode train` command."""
    specs, keys = plan(claims, budget)
    lines = []
    for claim in claims:
        if sized_budget(budget, claim.id) is None:
            lines.append(f"# {claim.id}: not measured ({unsized_reason(budget, claim.id)})")
        elif not keys[claim.id]:
            lines.append(f"# {claim.id}: no training runs (measured directly)")
    for key, spec in specs.items():
        cfg = spec.config
        state = f" [{run_state(run_path(spec, study_dir), key)}]" if study_dir is not None else ""
        lines.append(f"{key} model={cfg.model} dataset={cfg.dataset} seed={cfg.seed} epochs={cfg.epochs}{state}: "
                     f"{train_command(cfg)}")
    return lines


def machine() -> dict:
    """Where the report ran: platform, cores, torch and the device it would train on."""
    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    return {"platform": platform.platform(), "cores": os.cpu_count(), "torch": torch.__version__, "device": device}


def run_report(claims: Sequence[AbstractClaim], budget: Budget, study_dir: str | Path | None,
               launcher: AbstractLauncher | None = None, dry_run: bool = False, progress: bool = False,
               train: bool = True) -> dict:
    """Execute, measure and write the report of `claims` at `budget` in `study_dir`.

    Args:
        claims: the claims, in the report's order.
        budget: the preset every claim scales its runs and measures with.
        study_dir: the study directory (made with its study.json if new; see cache.open_study); a dry
            run may have None (no study yet: every run is new).
        launcher: where the runs train; None: one after another in this process.
        dry_run: only list the runs (dry_run_lines) and write nothing.
        progress: show the trainer's progress bars (in-process runs only).
        train: train (or resume) the runs that are not done; False measures the study as it stands.

    Returns:
        The report's data as written to report.json; with dry_run {"dry_run": lines}.

    Raises:
        ValueError: the study directory is another version's or not a study (cache.open_study).
    """
    if dry_run:
        study = Path(study_dir) if study_dir is not None and (Path(study_dir) / STUDY_FILE).is_file() else None
        if study is not None:
            open_study(study, budget.name, create=False)  # refuse another version's study here too
        return {"dry_run": dry_run_lines(claims, budget, study)}
    study_dir = Path(study_dir)
    open_study(study_dir, budget.name)
    start, date = time.perf_counter(), datetime.datetime.now().isoformat(timespec="seconds")
    specs, keys = plan(claims, budget)
    if specs:
        log.info(f"{len(specs)} runs for {len(claims)} claims in {study_dir}")
    outcomes = (launcher or LocalLauncher()).run(list(specs.values()), study_dir, progress) if train else {}
    entries = [_claim_entry(claim, budget, study_dir, keys[claim.id], specs, outcomes) for claim in claims]
    data = portable({"budget": asdict(budget), "machine": machine(), "date": date,
                     "wall_seconds": time.perf_counter() - start, "study": study_dir.absolute().name,
                     "claims": entries}, study_dir)
    write_json(study_dir / "report.json", data)
    atomic_write_text(study_dir / "report.md", report_markdown(data))  # a link there is replaced, not written through
    write_json(study_dir / "summary.json", {"budget": budget.name, "wall_seconds": data["wall_seconds"],
                                            "verdicts": {c["id"]: c["verdict"]["status"] for c in entries}})
    return data


def _claim_entry(claim: AbstractClaim, budget: Budget, study_dir: Path, keys: list[str], specs: dict[str, RunSpec],
                 outcomes: dict) -> dict:
    """The report.json entry of one claim: its runs, its result or why it could not be measured."""
    sized = sized_budget(budget, claim.id)
    run_dirs = {key: run_path(specs[key], study_dir) for key in keys}
    runs = [{"key": key, "model": specs[key].config.model, "dataset": specs[key].config.dataset,
             "seed": specs[key].config.seed, "run_dir": str(run_dirs[key].relative_to(study_dir)),
             **({"error": _one_line(outcomes[key])} if isinstance(outcomes.get(key), BaseException) else {})}
            for key in keys]
    entry = {"id": claim.id, "kind": claim.kind, "statement": claim.statement, "paper": claim.paper,
             "command": claim.commands(sized) if sized is not None else
             f"dia-ode report --budget {budget.name} --claims {claim.id}",
             "budget": (sized or budget).name, "runs": runs, "measured": {}, "references": {}, "table": [],
             "figures": [], "notes": [], "power": [], "measure_seconds": 0.0}
    if sized is None:  # not an error: the budget was chosen for other claims
        entry["verdict"] = asdict(Verdict(NOT_TESTABLE, unsized_reason(budget, claim.id)))
        return entry
    # A diverged run is a result (a claim on training stability counts it), not a failure: the cache
    # reads it as done, and the claim reads its summary.json. A run not done either failed (its error)
    # or was not trained (--no-train).
    pending = [run for run in runs if run_state(run_dirs[run["key"]]) != "done"]
    start = time.perf_counter()
    if pending and not claim.measures_unfinished_runs:
        first = pending[0]
        what = f"failed: {first['error']}; {RERUN}" if "error" in first else f"is not finished; {UNTRAINED}"
        error = f"run {first['key']} ({first['model']}, seed {first['seed']}) {what}"
        result = None
    else:
        try:
            result = claim.measure(run_dirs, sized)
            error = None
        except Exception as err:  # noqa: BLE001 -- a claim that cannot be measured must not sink the report
            result, error = None, f"{_one_line(err)}; {RERUN}"
    entry["measure_seconds"] = time.perf_counter() - start
    if result is None:
        log.error(f"claim {claim.id}: NOT TESTABLE HERE: {error}")
        entry.update(verdict=asdict(Verdict(NOT_TESTABLE, error)), error=error)
        return entry
    entry.update(_result_fields(claim.id, result, study_dir))
    if sized is not budget:  # the fallback's numbers: said first, beside the report's own budget
        entry["notes"].insert(0, f"measured at the {sized.name} budget: the {budget.name} budget is sized for "
                                 f"{', '.join(budget.claims or ())} alone")
    return entry


def _result_fields(claim_id: str, result: ClaimResult, study_dir: Path) -> dict:
    figures = []
    for name, fig in result.figures:
        paths = save_figure(fig, study_dir / "figures", f"{claim_id}_{name}")
        figures += [str(p.relative_to(study_dir)) for p in paths]
    return {"measured": {k: v.to_dict() for k, v in result.measured.items()},
            "references": {k: v.to_dict() for k, v in result.references.items()},
            "verdict": asdict(result.verdict), "parts": {k: asdict(v) for k, v in result.parts.items()},
            "table": result.table, "figures": figures, "notes": result.notes,
            "power": [power_row(name, result.measured[name], effect) for name, effect in result.comparisons.items()]}


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}"[:300] if text else type(err).__name__
