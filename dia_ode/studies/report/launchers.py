"""Where the runs of a report train: in this process, in N local processes at once, or on a cluster.

The runs are independent, and each writes its own run directory in the study (cache.execute), so a
launcher only decides where `execute(spec, study)` is called:

- `local` trains them one after another in this process;
- `local:N` in N spawned processes at once (spawn, not fork: a forked child would inherit this
  process's torch threads), each with max(1, threads // N) torch threads, threads being this
  process's (the CLI's --threads, by default all cores), so N runs share them;
- `slurm` submits one job per run through submitit (https://github.com/facebookincubator/submitit),
  with the executor options of --launcher-option KEY=VALUE (SLURM_OPTIONS); `cluster=local` or
  `cluster=debug` runs the same jobs through submitit's local or in-process executor (tests, and a
  dry rehearsal without a cluster). Each job is checkpointable (RunJob): a job that Slurm preempts or
  that reaches its time limit is requeued, and the requeued job continues its run from the last
  epoch's checkpoint (cache.execute resumes a run that has one).

A launcher returns, per run key, the run directory or the exception its training raised: one failed
run makes the claims that need it untestable, never the whole report.
"""

from __future__ import annotations

import abc
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import torch

from dia_ode.studies.report.cache import execute
from dia_ode.studies.report.claim import RunSpec

Outcome = Path | BaseException
# --launcher-option KEY -> (submitit parameter, type); time in minutes
SLURM_OPTIONS = {"partition": ("slurm_partition", str), "time": ("timeout_min", int), "gpus": ("gpus_per_node", int),
                 "cpus": ("cpus_per_task", int), "mem": ("mem_gb", int), "cluster": (None, str)}
CLUSTERS = ("slurm", "local", "debug")


class AbstractLauncher(abc.ABC):
    """Runs RunSpecs into a study directory."""

    @abc.abstractmethod
    def run(self, specs: Sequence[RunSpec], study_dir: Path, progress: bool = False) -> dict[str, Outcome]:
        """Execute every spec; return RunSpec.key() -> run directory, or the exception of a failed run."""


class LocalLauncher(AbstractLauncher):
    """`local` (workers=1: in this process) or `local:N` (N spawned processes at once)."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers

    def run(self, specs: Sequence[RunSpec], study_dir: Path, progress: bool = False) -> dict[str, Outcome]:
        if self.workers == 1:
            return {spec.key(): _outcome(lambda s=spec: execute(s, study_dir, progress)) for spec in specs}
        threads = max(1, torch.get_num_threads() // self.workers)
        with ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            try:
                jobs = {spec.key(): pool.submit(_execute_in_child, spec, str(study_dir), threads) for spec in specs}
                return {key: _outcome(lambda j=job: Path(j.result())) for key, job in jobs.items()}
            except BaseException:  # Ctrl-C or SIGTERM (cli/runtime.py): stop the children too
                _stop_children(pool)
                raise


class SlurmLauncher(AbstractLauncher):
    """One submitit job per run; options as SLURM_OPTIONS names them (e.g. partition=gpu, time=120, gpus=1)."""

    def __init__(self, options: dict[str, str] | None = None) -> None:
        self.options = parse_slurm_options(options or {})

    def run(self, specs: Sequence[RunSpec], study_dir: Path, progress: bool = False) -> dict[str, Outcome]:
        import submitit  # an optional dependency (extra "slurm"): imported when a cluster is used

        options = dict(self.options)
        cluster = options.pop("cluster", "slurm")
        executor = submitit.AutoExecutor(folder=Path(study_dir) / "submitit", cluster=cluster)
        executor.update_parameters(name="dia-ode-report", **options)
        threads = options.get("cpus_per_task", 1)
        jobs = {spec.key(): executor.submit(RunJob(spec, str(study_dir), threads)) for spec in specs}
        return {key: _outcome(lambda j=job: Path(j.result())) for key, job in jobs.items()}


class LauncherOptionError(ValueError):
    """A bad --launcher-option (unknown key, bad value, or options the launcher does not take)."""


def parse_slurm_options(options: dict[str, str]) -> dict[str, object]:
    """--launcher-option pairs -> submitit parameters; LauncherOptionError naming a bad key or value."""
    parsed: dict[str, object] = {}
    for key, value in options.items():
        if key not in SLURM_OPTIONS:
            raise LauncherOptionError(f"unknown launcher option '{key}'; valid: {', '.join(SLURM_OPTIONS)}")
        name, kind = SLURM_OPTIONS[key]
        try:
            converted = kind(value)
        except ValueError:
            raise LauncherOptionError(f"launcher option {key}={value!r} must be {kind.__name__}") from None
        if key == "cluster" and converted not in CLUSTERS:
            raise LauncherOptionError(f"launcher option cluster={value!r}; valid: {', '.join(CLUSTERS)}")
        parsed[name or key] = converted
    return parsed


def create_launcher(text: str, options: dict[str, str] | None = None) -> AbstractLauncher:
    """`local`, `local:N` (N >= 1) or `slurm` -> its launcher; ValueError names a bad launcher,
    LauncherOptionError (a ValueError) a bad option.

    Args:
        text: the launcher's name.
        options: KEY=VALUE pairs for the slurm launcher (local takes none).
    """
    name, sep, count = text.partition(":")
    if name == "local":
        if options:
            raise LauncherOptionError(f"the local launcher takes no launcher options (got {', '.join(options)})")
        if not sep:
            return LocalLauncher()
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"'{text}': local:N needs a whole number N >= 1")
        return LocalLauncher(int(count))
    if name == "slurm" and not sep:
        return SlurmLauncher(options)
    raise ValueError(f"unknown launcher '{text}'; valid: local, local:N, slurm")


class RunJob:
    """One run of a study as a submitit job that survives preemption.

    Slurm signals a job (SIGUSR2 through submitit) before it preempts it or its time runs out; submitit
    then calls `checkpoint` and requeues what it returns. The state worth keeping is already on disk
    (the trainer's checkpoint after every epoch), so the job requeues itself unchanged, and the requeued
    job's `execute` resumes the run: at most the epoch it was in is trained again. This is submitit's
    helpers.Checkpointable, written out because submitit is an optional dependency.
    """

    def __init__(self, spec: RunSpec, study_dir: str, threads: int) -> None:
        self.spec, self.study_dir, self.threads = spec, study_dir, threads

    def __call__(self) -> str:
        return _execute_in_child(self.spec, self.study_dir, self.threads)

    def checkpoint(self, *args, **kwargs):
        """The same job, resubmitted (submitit.helpers.DelayedSubmission of itself)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def _execute_in_child(spec: RunSpec, study_dir: str, threads: int) -> str:
    """A child process's (or a cluster job's) body: its share of the cores, then the run."""
    torch.set_num_threads(max(1, int(threads)))
    return str(execute(spec, study_dir, progress=False))


def _stop_children(pool: ProcessPoolExecutor) -> None:
    """Drop the queued runs and end the running ones: leaving the `with` block would otherwise wait
    for every queued run to train (shutdown waits), and a SIGTERM sent to the report alone never
    reaches its children. A run ended this way keeps its last checkpoint and resumes on the next report."""
    pool.shutdown(wait=False, cancel_futures=True)
    for child in multiprocessing.active_children():  # the pool's workers (the resource tracker is not one)
        child.terminate()
    for child in multiprocessing.active_children():
        child.join(timeout=10)


def _outcome(job) -> Outcome:
    try:
        return job()
    except Exception as err:  # noqa: BLE001 -- one failed run, a crashed child included, is reported per run
        return err
