"""Training the DIA controller on a family of problems by a gradient-free search.

Objective, over the training members i of a family (all solved in one batch: per-sample control):

    J = mean_i nfe_i / nfe_i(PI) + penalty * mean_i max(0, err_i / err_i(PI) - 1),

the function evaluations relative to Hairer's PI controller, plus a penalty for error above what PI
achieves on the same member (err: the largest scaled error |y - y_ref| / (atol + rtol |y_ref|) at the
save times, y_ref from scipy's Radau). PI is the reference because the target is to need fewer
evaluations than PI at equal or lower error.

Search: an elitist random search with antithetic pairs, from the zero cell (= the PI controller, so
J starts at 1): an iteration draws `population` directions eps and scores theta +- sigma eps; theta
moves to the best of them if it beats theta's J, and sigma halves when none does. Why this and not
gradients or plain evolution strategies: the objective counts evaluations and accept/reject decisions,
which are piecewise constant in the weights (no useful gradient; a differentiable surrogate would
train something else), and a first version that moved a fixed distance along rank-weighted directions
(Salimans et al., arXiv 1703.03864) climbed from J = 1.04 to 1.1-1.4 and never back: most directions
make J worse, so only a move that is measured to help is taken.

Families (stiffness/families.py): Van der Pol with mu drawn uniformly from a range, or random stable
linear systems with log-uniform rates; held-out members come from the same family with another seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dia_ode.numerics import SUCCESS, AbstractErrorController, PIController, solve
from dia_ode.numerics.dia_controller import TRAIN_COMMAND  # noqa: F401 -- re-exported for the CLI and tests
from dia_ode.numerics.dia_controller import CONTROLLER_FILE, DIAErrorController, new_cell
from dia_ode.numerics.dia_controller import load_dia_controller as read_dia_controller
from dia_ode.rundir import CheckpointError, atomic_write_bytes
from dia_ode.stiffness.families import LinearFamily, VdpFamily

Family = VdpFamily | LinearFamily

@dataclass
class Scores:
    """Per member: nfe, the scaled error, and whether the solve succeeded."""

    nfe: np.ndarray
    error: np.ndarray
    success: np.ndarray


def score(controller: AbstractErrorController, family: Family, params: torch.Tensor, references: np.ndarray,
          rtol: float, atol: float, max_steps: int = 200_000) -> Scores:
    """Solve every member in one batch with `controller` and score it (module docstring); a member
    that needs more than max_steps attempts fails (a bad candidate stops early instead of crawling)."""
    n = params.shape[0]
    sol = solve(family.field, family.y0(n), 0.0, family.t1, controller=controller, rtol=rtol, atol=atol,
                t_eval=family.times(), args=params, max_steps=max_steps)
    y = sol.y.numpy()
    scaled = np.abs(y - references) / (atol + rtol * np.abs(references))
    error = np.where(np.isfinite(scaled).all(axis=(1, 2)), scaled.max(axis=(1, 2)), np.inf)
    return Scores(sol.stats["nfe"].numpy().astype(float), error, (sol.result == SUCCESS).numpy())


def objective(scores: Scores, reference: Scores, penalty: float) -> float:
    """J of the module docstring; a failed member makes J infinite."""
    if not scores.success.all():
        return float("inf")
    excess = np.maximum(0.0, scores.error / reference.error - 1.0)
    return float(np.mean(scores.nfe / reference.nfe) + penalty * np.mean(excess))


def _flat(cell: torch.nn.Module) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector(cell.parameters()).detach().clone()


def _load(cell: torch.nn.Module, theta: torch.Tensor) -> None:
    torch.nn.utils.vector_to_parameters(theta, cell.parameters())


@dataclass
class Training:
    """What train_dia_controller returns: the controller and the objective after every iteration."""

    controller: DIAErrorController
    history: list[float] = field(default_factory=list)
    reference_nfe: float = 0.0
    initial: float = float("nan")  # J of the untrained cell (the PI controller: 1)


def train_dia_controller(family: Family, members: int = 8, iterations: int = 10, population: int = 6,
                         sigma: float = 0.05, penalty: float = 1.0,
                         rtol: float = 1e-6, atol: float = 1e-6, gain: float = 1.0, seed: int = 0,
                         progress=None) -> Training:
    """Fit a DIA controller on `members` draws of the family (seed `seed`) by the search of the module docstring.

    Args:
        family: the problem family.
        members, iterations, population: training members, ES iterations, direction pairs per iteration.
        sigma: the first perturbation size in weight space (halved after an iteration without a better point).
        penalty: the weight of error above PI's (module docstring).
        rtol, atol: the tolerances every solve uses.
        gain: the controller's largest log-factor correction.
        seed: draws the members and the directions.
        progress: called with (iteration, J) after every iteration.
    """
    params = family.draw(members, seed)
    references = family.references(params)
    pi = score(PIController(), family, params, references, rtol, atol)
    budget = int(pi.nfe.max() / 2)  # attempts: 3x PI's steps (dopri5: 6 evaluations a step); past that a candidate failed
    cell = new_cell()
    controller = DIAErrorController(cell, gain=gain)
    theta = _flat(cell)
    generator = torch.Generator().manual_seed(seed + 1)

    def evaluate(weights: torch.Tensor) -> float:
        _load(cell, weights)
        return objective(score(controller, family, params, references, rtol, atol, budget), pi, penalty)

    training = Training(controller, reference_nfe=float(pi.nfe.mean()))
    current = evaluate(theta)
    training.initial = current
    for iteration in range(iterations):
        eps = torch.randn(population, theta.numel(), generator=generator, dtype=torch.float64)
        candidates = torch.cat([theta + sigma * eps, theta - sigma * eps])
        values = [evaluate(candidate) for candidate in candidates]
        best = int(np.argmin(values))
        if values[best] < current:
            theta, current = candidates[best].clone(), values[best]
        else:
            sigma /= 2
        training.history.append(current)
        if progress is not None:
            progress(iteration, current)
    _load(cell, theta)  # the best point measured (the zero cell = the PI controller if nothing beat it)
    return training


def save_dia_controller(controller: DIAErrorController, run_dir: Path) -> None:
    """Write the cell's weights and gain to <run_dir>/controller.pt, atomically (numerics.dia_controller reads it)."""
    payload = {"cell": controller.cell.state_dict(), "gain": controller.gain}
    atomic_write_bytes(Path(run_dir) / CONTROLLER_FILE, lambda f: torch.save(payload, f))


def load_dia_controller(run_dir: str | Path) -> DIAErrorController:
    """The DIA controller a `dia-ode controllers train` run saved (numerics.dia_controller.load_dia_controller, the
    one reader that the continuous blocks' controller=dia:RUN uses too).

    Raises:
        CheckpointError: not such a run (another command's directory, no controller.pt, a file that does
            not hold a DIA cell), one line naming the directory.
    """
    try:
        return read_dia_controller(run_dir)
    except ValueError as err:
        raise CheckpointError(str(err)) from None


def held_out_comparison(controller: DIAErrorController, family: Family, members: int, seed: int, rtol: float,
                        atol: float) -> dict:
    """DIA against PI on fresh members of the family: per member nfe and scaled error, and the means of
    their ratios (nfe_dia / nfe_pi, error_dia / error_pi)."""
    params = family.draw(members, seed)
    references = family.references(params)
    dia = score(controller, family, params, references, rtol, atol)
    pi = score(PIController(), family, params, references, rtol, atol)
    return {"members": family.describe(params), "nfe_dia": dia.nfe.tolist(), "nfe_pi": pi.nfe.tolist(),
            "error_dia": dia.error.tolist(), "error_pi": pi.error.tolist(), "success_dia": dia.success.tolist(),
            "nfe_ratio": float(np.mean(dia.nfe / pi.nfe)), "error_ratio": float(np.mean(dia.error / pi.error))}
