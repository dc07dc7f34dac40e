"""The stiff switch against scipy's LSODA: function evaluations and errors on the classic stiff problems.

Issue 12's target: an explicit method that switches to an L-stable implicit one where Hairer's test
marks stiffness (numerics.solve with stiff_switch) needs <= 2x the evaluations of scipy's LSODA (Adams /
BDF with its own switch, given the exact Jacobian) on Robertson [0, 40] and HIRES at rtol 1e-4,
atol 1e-8, with errors within the tolerance. RK45 alone is the explicit reference.

Error, in units of the tolerance: max over the save times and components of
|y - y_ref| / (atol + rtol |y_ref|), y_ref from scipy's Radau at rtol 1e-11, atol 1e-13; <= 1 is within
tolerance. Evaluations: ours count f calls (the Jacobian comes from forward-mode autodiff and is counted
apart, as num_jacobians); LSODA's nfev excludes its Jacobian calls (njev) likewise, since it is given jac.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp

from dia_ode.numerics import create_error_controller, solve
from dia_ode.numerics.rosenbrock import ROSENBROCK
from dia_ode.stiffness.problems import get_problem

SAVE_POINTS = 11


@dataclass(frozen=True)
class SwitchCase:
    problem: str
    t1: float | None = None  # None: the problem's own end
    rtol: float = 1e-4
    atol: float = 1e-8


CASES = (SwitchCase("robertson", 40.0), SwitchCase("hires"))


def tolerance_error(y: np.ndarray, ref: np.ndarray, rtol: float, atol: float) -> float:
    """max |y - y_ref| / (atol + rtol |y_ref|): <= 1 is within tolerance (inf if y is not finite)."""
    if not np.all(np.isfinite(y)):
        return float("inf")
    return float(np.max(np.abs(y - ref) / (atol + rtol * np.abs(ref))))


def bench_stiff_switch(cases: tuple[SwitchCase, ...] = CASES, stiff_methods: tuple[str, ...] = tuple(ROSENBROCK),
                       explicit: bool = True) -> list[dict]:
    """One row per case and solver: ours (dopri5 + PI, switching to each stiff method), scipy LSODA and,
    with `explicit`, scipy RK45; nfe_ratio is the row's evaluations over LSODA's on the same case."""
    rows = []
    for case in cases:
        ivp = get_problem(case.problem)
        t0, t1 = ivp.t_span[0], ivp.t_span[1] if case.t1 is None else case.t1
        times = np.linspace(t0, t1, SAVE_POINTS)
        ref = ivp.reference(times, rtol=1e-11, atol=1e-13)
        label = f"{ivp.title()} [{t0:g}, {t1:g}]"

        def scipy_row(method: str) -> dict:
            jac = {"jac": ivp.jacobian} if method == "LSODA" else {}
            tic = time.perf_counter()
            sol = solve_ivp(ivp.numpy_field, (t0, t1), ivp.y0.numpy(), method=method, rtol=case.rtol,
                            atol=case.atol, t_eval=times, **jac)
            y = sol.y.T if sol.success else np.full_like(ref, np.nan)
            return {"problem": label, "solver": f"scipy {method}", "nfe": int(sol.nfev), "steps": None,
                    "implicit_steps": None, "jacobians": int(sol.njev), "error": tolerance_error(y, ref, case.rtol,
                                                                                               case.atol),
                    "seconds": time.perf_counter() - tic}

        lsoda = scipy_row("LSODA")
        case_rows = [lsoda]
        for name in stiff_methods:
            tic = time.perf_counter()
            sol = solve(ivp.f, ivp.y0[None], t0, t1, controller=create_error_controller("pi"), rtol=case.rtol,
                        atol=case.atol, t_eval=torch.from_numpy(times), stiff_switch=True, stiff_method=name)
            stats = {key: int(value[0]) for key, value in sol.stats.items()}
            case_rows.append({"problem": label, "solver": f"ours dopri5 + PI -> {name}", "nfe": stats["nfe"],
                              "steps": stats["num_steps"], "implicit_steps": stats["num_implicit_steps"],
                              "jacobians": stats["num_jacobians"],
                              "error": tolerance_error(sol.y[0].numpy(), ref, case.rtol, case.atol),
                              "seconds": time.perf_counter() - tic, "result": sol.messages()[0]})
        if explicit:
            case_rows.append(scipy_row("RK45"))
        for row in case_rows:
            row["nfe_ratio"] = row["nfe"] / lsoda["nfe"]
            row.update(rtol=case.rtol, atol=case.atol)
        rows.extend(case_rows)
    return rows


def stiff_switch_markdown(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    lines = ["| problem | solver | nfe | x LSODA | steps (implicit) | Jacobians | error / tol | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        steps = "—" if r["steps"] is None else f"{r['steps']:,} ({r['implicit_steps']:,})"
        lines.append(f"| {r['problem']} | {r['solver']} | {r['nfe']:,} | {r['nfe_ratio']:.2f} | {steps} | "
                     f"{r['jacobians']:,} | {r['error']:.2g} | {r['seconds']:.2f} |")
    return "\n".join(lines) + "\n"
