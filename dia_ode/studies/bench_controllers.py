"""The controller benchmark: problems x solvers x tolerances, our controllers beside scipy and torchdiffeq.

Every solver integrates the same problem over the same interval at the same rtol (atol = rtol) in one
process, and is scored the same way: function evaluations, accepted and rejected steps where the solver
tells them, the error against a reference, wall time. Solvers:

- ours: numerics.solve with a method (dopri5 by default) and each controller (I, PI, PID presets);
- scipy: solve_ivp's RK45 (explicit, Dormand-Prince), Radau and LSODA (implicit / switching; given the
  problem's exact Jacobian); scipy reports no rejections, and counts Jacobians (njev) and LU
  factorisations (nlu) apart from function evaluations;
- torchdiffeq: dopri5 with its I controller, steps counted through its accept/reject callbacks;
- torchode (per-sample steps like ours; the optional extra `pip install "torch==2.13.0" -e ".[torchode]"`):
  dopri5 with its integral controller, where it is installed; otherwise its row says "not installed".

Error: the largest over the save times and components of |y - y_ref| / (1 + |y_ref|), y_ref from scipy's
Radau at rtol 1e-10 (and the problem's atol), cached per problem and interval for the process.

Stiffness (ours only): stiff_fraction, the share of accepted steps that stability limits, each step
judged alone by Hairer's test (StiffnessTest.limited), so it means the same for every controller; and
flagged_fraction, the share under DOPRI5's streak flag, which decides a switch to an implicit method
and which a controller that swings the step across the bound keeps down (H312PID: 0 where the others
read 0.97; numerics/stiffness_test.py).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torchdiffeq
from scipy.integrate import solve_ivp

from dia_ode.numerics import create_error_controller, get_tableau, solve
from dia_ode.solvers.backends import parse_controller
from dia_ode.stiffness.problems import Problem, get_problem

SAVE_POINTS = 11
SCIPY_METHODS = ("RK45", "Radau", "LSODA")


@dataclass(frozen=True)
class BenchProblem:
    """A problem of the benchmark: its name, parameters and interval (shorter than the classic one
    where the classic one would take minutes per solve on a CPU)."""

    name: str
    params: tuple[tuple[str, object], ...] = ()
    t1: float | None = None

    def build(self) -> Problem:
        return get_problem(self.name, **dict(self.params))

    def label(self) -> str:
        problem = self.build()
        return f"{problem.title()} [{problem.t_span[0]:g}, {self.interval()[1]:g}]"

    def interval(self) -> tuple[float, float]:
        t0, t1 = self.build().t_span
        return t0, t1 if self.t1 is None else self.t1


DEFAULT_PROBLEMS = (BenchProblem("vdp", (("mu", 100.0),), 30.0), BenchProblem("brusselator"),
                    BenchProblem("lorenz", t1=5.0), BenchProblem("orego", t1=30.0))
DEFAULT_CONTROLLERS = ("i", "pi", "pid:H211PI", "pid:H312PID")


@functools.lru_cache(maxsize=32)
def reference(problem: BenchProblem) -> tuple[np.ndarray, np.ndarray]:
    """(save times (SAVE_POINTS,), y_ref (SAVE_POINTS, n)): scipy Radau at rtol 1e-10, once per process."""
    t0, t1 = problem.interval()
    times = np.linspace(t0, t1, SAVE_POINTS)
    return times, problem.build().reference(times, rtol=1e-10)


def mixed_error(y: np.ndarray, ref: np.ndarray) -> float:
    """max |y - y_ref| / (1 + |y_ref|) over every save time and component (inf if y is not finite)."""
    if not np.all(np.isfinite(y)):
        return math.inf
    return float(np.max(np.abs(y - ref) / (1.0 + np.abs(ref))))


def _row(problem: BenchProblem, solver: str, tol: float, **values) -> dict:
    base = {"problem": problem.label(), "solver": solver, "rtol": tol, "result": "success", "nfe": None,
            "accepted": None, "rejected": None, "error": None, "seconds": None, "stiff_fraction": None,
            "flagged_fraction": None, "njev": None, "nlu": None}
    return {**base, **values}


def run_ours(problem: BenchProblem, controller: str, tol: float, method: str = "dopri5",
             max_steps: int = 1_000_000) -> dict:
    """One solve by numerics.solve."""
    ivp, (t0, t1) = problem.build(), problem.interval()
    times, ref = reference(problem)
    tic = time.perf_counter()
    sol = solve(ivp.f, ivp.y0[None], t0, t1, method=get_tableau(method), controller=parse_controller(controller),
                rtol=tol, atol=tol, t_eval=torch.from_numpy(times), max_steps=max_steps)
    seconds = time.perf_counter() - tic
    stats = {key: int(value[0]) for key, value in sol.stats.items()}
    return _row(problem, f"ours {method} + {controller}", tol, result=sol.messages()[0], nfe=stats["nfe"],
                accepted=stats["num_accepted"], rejected=stats["num_rejected"],
                error=mixed_error(sol.y[0].numpy(), ref), seconds=seconds,
                stiff_fraction=float(sol.per_accepted("num_stiff_steps")[0]),
                flagged_fraction=float(sol.per_accepted("num_flagged_steps")[0]))


def run_scipy(problem: BenchProblem, method: str, tol: float) -> dict:
    """One solve by scipy's solve_ivp (accepted steps: the points of sol.t, with no t_eval given)."""
    ivp, (t0, t1) = problem.build(), problem.interval()
    times, ref = reference(problem)
    jac = {"jac": ivp.jacobian} if method in ("Radau", "LSODA", "BDF") else {}
    tic = time.perf_counter()
    sol = solve_ivp(ivp.numpy_field, (t0, t1), ivp.y0.numpy(), method=method, rtol=tol, atol=tol, dense_output=True, **jac)
    seconds = time.perf_counter() - tic
    y = sol.sol(times).T if sol.success else np.full_like(ref, np.nan)
    return _row(problem, f"scipy {method}", tol, result="success" if sol.success else sol.message, nfe=int(sol.nfev),
                accepted=len(sol.t) - 1, error=mixed_error(y, ref), seconds=seconds, njev=int(sol.njev),
                nlu=int(sol.nlu))


class _Counted(torch.nn.Module):
    """A problem's field for torchdiffeq, counting evaluations and its accepted / rejected steps."""

    def __init__(self, ivp: Problem) -> None:
        super().__init__()
        self.ivp, self.nfe, self.accepted, self.rejected = ivp, 0, 0, 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.ivp.f(t, y)

    def callback_accept_step(self, t0, y0, dt) -> None:
        self.accepted += 1

    def callback_reject_step(self, t0, y0, dt) -> None:
        self.rejected += 1


def run_torchdiffeq(problem: BenchProblem, tol: float) -> dict:
    """One solve by torchdiffeq's dopri5 (its I controller, batch-wide steps), over the save times."""
    ivp = problem.build()
    times, ref = reference(problem)
    field = _Counted(ivp)
    tic = time.perf_counter()
    try:
        y = torchdiffeq.odeint(field, ivp.y0, torch.from_numpy(times), rtol=tol, atol=tol, method="dopri5",
                               options={"max_num_steps": 1_000_000}).numpy()
        result = "success"
    except (AssertionError, RuntimeError) as err:  # torchdiffeq asserts on underflow and step budgets
        y, result = np.full_like(ref, np.nan), f"failed: {str(err).splitlines()[0][:80]}"
    seconds = time.perf_counter() - tic
    return _row(problem, "torchdiffeq dopri5", tol, result=result, nfe=field.nfe, accepted=field.accepted,
                rejected=field.rejected, error=mixed_error(y, ref), seconds=seconds)


def torchode_available() -> bool:
    """Whether torchode can be imported (an optional extra: the benchmark runs it where it is)."""
    return importlib.util.find_spec("torchode") is not None


def run_torchode(problem: BenchProblem, tol: float) -> dict:
    """One solve by torchode's dopri5 with its integral (I) controller: per-sample steps, as ours."""
    import torchode

    ivp = problem.build()
    times, ref = reference(problem)
    term = torchode.ODETerm(lambda t, y: ivp.f(t, y))
    solver = torchode.AutoDiffAdjoint(torchode.Dopri5(term=term),
                                      torchode.IntegralController(atol=tol, rtol=tol, term=term), max_steps=1_000_000)
    tic = time.perf_counter()
    sol = solver.solve(torchode.InitialValueProblem(y0=ivp.y0[None], t_eval=torch.from_numpy(times)[None]))
    seconds = time.perf_counter() - tic
    ok = int(sol.status[0]) == 0
    y = sol.ys[0].detach().numpy() if ok else np.full_like(ref, np.nan)
    steps, accepted = int(sol.stats["n_steps"][0]), int(sol.stats["n_accepted"][0])
    return _row(problem, "torchode dopri5", tol, result="success" if ok else f"failed: status {int(sol.status[0])}",
                nfe=int(sol.stats["n_f_evals"][0]), accepted=accepted, rejected=steps - accepted,
                error=mixed_error(y, ref), seconds=seconds)


def bench_controllers(problems: tuple[BenchProblem, ...] = DEFAULT_PROBLEMS,
                      controllers: tuple[str, ...] = DEFAULT_CONTROLLERS, tolerances: tuple[float, ...] = (1e-4, 1e-6),
                      method: str = "dopri5", baselines: bool = True, progress=None) -> list[dict]:
    """Every row of the benchmark (module docstring), problem by problem, tolerance by tolerance.

    Args:
        problems: the problems and intervals.
        controllers: our controllers (parse_controller's names).
        tolerances: rtol = atol of every solve.
        method: our Runge-Kutta method.
        baselines: also scipy (RK45, Radau, LSODA), torchdiffeq dopri5 and torchode dopri5 (where installed).
        progress: called with each finished row (e.g. to print it).
    """
    rows = []
    for problem in problems:
        for tol in tolerances:
            runs = [lambda c=c: run_ours(problem, c, tol, method) for c in controllers]
            if baselines:
                runs += [lambda m=m: run_scipy(problem, m, tol) for m in SCIPY_METHODS]
                runs += [lambda: run_torchdiffeq(problem, tol)]
                if torchode_available():
                    runs += [lambda: run_torchode(problem, tol)]
            for run in runs:
                rows.append(run())
                if progress is not None:
                    progress(rows[-1])
    return rows


def bench_solve_batch(batch: int = 1024, mu: float = 1.0, t1: float = 10.0, tol: float = 1e-6, seed: int = 0,
                      rounds: int = 5) -> dict:
    """Time per accepted step of one batch of Van der Pol solves: ours (per-sample steps, PI) with and
    without the per-step stiffness test, against torchdiffeq's dopri5 (one step for the whole batch,
    no stiffness test: the like-for-like ratio is the one without), in one process.

    The initial values are seeded draws around the limit cycle (y1 in [-2, 2], y2 in [-1, 1]), so the
    samples need different steps. Ours: wall time / the mean of the samples' accepted steps (every
    sample advances once per loop iteration while it runs); torchdiffeq: wall time / its accepted steps.
    Each solver's time is the fastest of `rounds` interleaved rounds (other processes only ever add time).
    """
    g = torch.Generator().manual_seed(seed)
    y0 = torch.rand(batch, 2, generator=g, dtype=torch.float64) * torch.tensor([4.0, 2.0], dtype=torch.float64) \
        - torch.tensor([2.0, 1.0], dtype=torch.float64)
    field = get_problem("vdp", mu=mu).f
    seconds = {"ours": float("inf"), "ours_no_test": float("inf"), "torchdiffeq": float("inf")}
    for _ in range(rounds):
        for key, test in (("ours", None), ("ours_no_test", False)):
            tic = time.perf_counter()
            ours = solve(field, y0, 0.0, t1, controller=create_error_controller("pi"), rtol=tol, atol=tol,
                         stiffness=test)
            seconds[key] = min(seconds[key], time.perf_counter() - tic)
        counted = _Counted(get_problem("vdp", mu=mu))
        tic = time.perf_counter()
        torchdiffeq.odeint(counted, y0, torch.tensor([0.0, t1], dtype=torch.float64), rtol=tol, atol=tol,
                           method="dopri5")
        seconds["torchdiffeq"] = min(seconds["torchdiffeq"], time.perf_counter() - tic)
    ours_steps = float(ours.stats["num_accepted"].double().mean())
    per_step_ours, per_step_theirs = seconds["ours"] / ours_steps, seconds["torchdiffeq"] / counted.accepted
    per_step_no_test = seconds["ours_no_test"] / ours_steps
    return {"batch": batch, "mu": mu, "t1": t1, "tol": tol, "ours_seconds": seconds["ours"],
            "ours_no_test_seconds": seconds["ours_no_test"],
            "ours_mean_accepted": ours_steps, "ours_max_accepted": int(ours.stats["num_accepted"].max()),
            "ours_nfe_mean": float(ours.stats["nfe"].double().mean()), "torchdiffeq_seconds": seconds["torchdiffeq"],
            "torchdiffeq_accepted": counted.accepted, "torchdiffeq_nfe": counted.nfe,
            "ours_seconds_per_step": per_step_ours, "ours_no_test_seconds_per_step": per_step_no_test,
            "torchdiffeq_seconds_per_step": per_step_theirs, "ratio": per_step_ours / per_step_theirs,
            "ratio_no_test": per_step_no_test / per_step_theirs, "all_succeeded": bool(ours.success.all())}
