"""Classic test problems, stiff and not, as torch vector fields (float64), with scipy reference solutions.

They calibrate the stiffness indices on systems whose stiffness is known (Hairer & Wanner, Solving
ODEs II, IV.1 and IV.10; the definitions, initial values and intervals of ROBER, HIRES and OREGO
follow that test set):

- "robertson": ROBER, chemical kinetics with rate constants 0.04, 1e4, 3e7; y1 + y2 + y3 is conserved.
- "vdp": van der Pol in Liénard form y1' = mu (y1 - y1^3/3 - y2), y2' = y1 / mu; at (2, 0) its Jacobian
  [[-3 mu, -mu], [1/mu, 0]] has eigenvalues ~ -3 mu and ~ -1/(3 mu). y0 = (2, 0); t_span = (0, 2 mu)
  covers about one relaxation period ((3 - 2 ln 2) mu ~ 1.61 mu).
- "hires": HIRES, 8 equations of plant physiology.
- "orego": OREGO, the Oregonator (Belousov-Zhabotinsky reaction).
- "lorenz": the Lorenz system (sigma 10, rho 28, beta 8/3) from (1, 1, 1) on [0, 10]: non-stiff, chaotic.
- "brusselator": Hairer's BRUSS as an ODE (Solving ODEs I, II.10), y1' = a + y1^2 y2 - (b + 1) y1,
  y2' = b y1 - y1^2 y2, a = 1, b = 3, y0 = (1.5, 3) on [0, 20]: non-stiff, a limit cycle.
- "linear": y' = A y with A = Q diag(λ) Q^T, Q a fixed random orthogonal matrix (QR of a seeded
  Gaussian matrix), λ the real `eigenvalues`: A is symmetric, so its eigenvalues are λ and its
  logarithmic 2-norm is max λ. y0 = (1, ..., 1), t_span = (0, 1).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.integrate import solve_ivp

from dia_ode.stiffness.indices import dominant_quotient, log_norm, spectral_radius, stiffness_ratio
from dia_ode.stiffness.jacobian import dense_jacobian
from dia_ode.stiffness.eigen import limited_threads, spectrum

Field = Callable[[float, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Problem:
    """An initial value problem y' = f(t, y), y(t0) = y0; every tensor is float64, y has shape (n,).

    Attributes:
        name: registry name.
        params: the parameters it was built with (defaults filled in).
        f: the vector field, f(t, y) -> (n,); also on a batch, y (B, n) -> (B, n) (every field here indexes
            the last dimension), which is how numerics.solve calls it.
        y0: initial value (n,).
        t_span: (t0, t_end) of the standard problem.
        atol: absolute tolerance of the reference solution (the smallest components matter).
    """

    name: str
    params: dict
    f: Field = field(repr=False)
    y0: torch.Tensor = field(repr=False)
    t_span: tuple[float, float]
    atol: float = 1e-12

    def title(self) -> str:
        """The problem in words for titles and the terminal, e.g. "Van der Pol (mu = 1000)"."""
        params = ", ".join(f"{key} = {', '.join(f'{v:g}' for v in value) if isinstance(value, list) else f'{value:g}'}"
                           for key, value in self.params.items())
        return f"{TITLES.get(self.name, self.name)}" + (f" ({params})" if params else "")

    def field_at(self, t: float = 0.0) -> Callable[[torch.Tensor], torch.Tensor]:
        """The autonomous field y -> f(t, y) at a fixed time (what `spectrum` takes)."""
        return lambda y: self.f(t, y)

    def numpy_field(self, t: float, y: np.ndarray) -> np.ndarray:
        """f on float64 numpy arrays: the signature scipy's solve_ivp calls."""
        return self.f(t, torch.from_numpy(y)).numpy()

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """df/dy at (t, y) as a float64 array (n, n), by torch.func.jacrev (cheap for these n)."""
        return dense_jacobian(self.field_at(t), torch.as_tensor(y, dtype=torch.float64))

    def reference(self, t_eval: Sequence[float] | np.ndarray, rtol: float = 1e-10,
                  atol: float | None = None, method: str = "Radau") -> np.ndarray:
        """y at the (increasing) times t_eval >= t0 by scipy's solve_ivp (implicit, Jacobian given).

        Returns:
            float64 array (len(t_eval), n).
        """
        t_eval = np.asarray(t_eval, dtype=np.float64)
        t0 = self.t_span[0]
        if np.all(t_eval == t0):  # nothing to integrate (solve_ivp refuses an empty interval)
            return np.tile(self.y0.numpy(), (len(t_eval), 1))

        with limited_threads(1):  # thousands of tiny torch calls: threads only add waiting
            sol = solve_ivp(self.numpy_field, (t0, float(t_eval.max())), self.y0.numpy(), method=method,
                            t_eval=t_eval, rtol=rtol, atol=self.atol if atol is None else atol, jac=self.jacobian)
        if not sol.success:
            raise RuntimeError(f"reference solution of '{self.name}' failed: {sol.message}")
        return sol.y.T


def _robertson() -> Problem:
    def f(t: float, y: torch.Tensor) -> torch.Tensor:
        y1, y2, y3 = y.unbind(-1)
        return torch.stack([-0.04 * y1 + 1e4 * y2 * y3,
                            0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 ** 2,
                            3e7 * y2 ** 2], dim=-1)
    # y2 stays below 4e-5, so its absolute tolerance must be far smaller than that.
    return Problem("robertson", {}, f, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), (0.0, 1e11),
                   atol=1e-14)


def vdp_field(y: torch.Tensor, mu: float | torch.Tensor) -> torch.Tensor:
    """Van der Pol in Liénard form for y (..., 2); mu a number or a tensor broadcasting against y1."""
    y1, y2 = y.unbind(-1)
    return torch.stack([mu * (y1 - y1 ** 3 / 3 - y2), y1 / mu], dim=-1)


def _vdp(mu: float = 1000.0) -> Problem:
    def f(t: float, y: torch.Tensor) -> torch.Tensor:
        return vdp_field(y, mu)
    return Problem("vdp", {"mu": mu}, f, torch.tensor([2.0, 0.0], dtype=torch.float64), (0.0, 2.0 * mu))


def _hires() -> Problem:
    def f(t: float, y: torch.Tensor) -> torch.Tensor:
        y1, y2, y3, y4, y5, y6, y7, y8 = y.unbind(-1)
        r = 280.0 * y6 * y8
        return torch.stack([-1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007,
                            1.71 * y1 - 8.75 * y2,
                            -10.03 * y3 + 0.43 * y4 + 0.035 * y5,
                            8.32 * y2 + 1.71 * y3 - 1.12 * y4,
                            -1.745 * y5 + 0.43 * y6 + 0.43 * y7,
                            -r + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
                            r - 1.81 * y7,
                            -r + 1.81 * y7], dim=-1)
    y0 = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0057], dtype=torch.float64)
    return Problem("hires", {}, f, y0, (0.0, 321.8122))


def _orego() -> Problem:
    s, q, w = 77.27, 8.375e-6, 0.161

    def f(t: float, y: torch.Tensor) -> torch.Tensor:
        y1, y2, y3 = y.unbind(-1)
        return torch.stack([s * (y2 + y1 * (1.0 - q * y1 - y2)),
                            (y3 - (1.0 + y1) * y2) / s,
                            w * (y1 - y3)], dim=-1)
    return Problem("orego", {}, f, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), (0.0, 360.0))


def fixed_orthogonal(n: int, seed: int = 0) -> np.ndarray:
    """A fixed random orthogonal (n, n) matrix: Q of the QR of a seeded Gaussian, signs made unique."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def _linear(eigenvalues: Sequence[float] = (-1.0, -1000.0)) -> Problem:
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if lam.ndim != 1 or lam.size == 0:
        raise ValueError(f"eigenvalues must be a non-empty list of real numbers, got {eigenvalues!r}")
    q = fixed_orthogonal(lam.size)
    a = torch.from_numpy((q * lam) @ q.T)  # Q diag(λ) Q^T, (n, n) float64

    def f(t: float, y: torch.Tensor) -> torch.Tensor:
        return y @ a.T  # (n,) or (B, n)
    return Problem("linear", {"eigenvalues": lam.tolist()}, f, torch.ones(lam.size, dtype=torch.float64),
                   (0.0, 1.0))


def _lorenz(sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0) -> Problem:
    def f(t: float, y: torch.Tensor) -> torch.Tensor:
        y1, y2, y3 = y.unbind(-1)
        return torch.stack([sigma * (y2 - y1), y1 * (rho - y3) - y2, y1 * y2 - beta * y3], dim=-1)
    # chaotic: errors grow like exp(0.9 t), so a reference at rtol 1e-10 is good to ~1e-6 at t = 10
    return Problem("lorenz", {"sigma": sigma, "rho": rho, "beta": beta}, f,
                   torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64), (0.0, 10.0))


def _brusselator(a: float = 1.0, b: float = 3.0) -> Problem:
    def f(t: float, y: torch.Tensor) -> torch.Tensor:
        y1, y2 = y.unbind(-1)
        return torch.stack([a + y1 ** 2 * y2 - (b + 1.0) * y1, b * y1 - y1 ** 2 * y2], dim=-1)
    return Problem("brusselator", {"a": a, "b": b}, f, torch.tensor([1.5, 3.0], dtype=torch.float64), (0.0, 20.0))


TITLES = {"robertson": "Robertson (ROBER)", "vdp": "Van der Pol", "hires": "HIRES", "orego": "Oregonator (OREGO)",
          "linear": "linear y' = A y", "lorenz": "Lorenz", "brusselator": "Brusselator"}

PROBLEMS: dict[str, Callable[..., Problem]] = {
    "robertson": _robertson, "vdp": _vdp, "hires": _hires, "orego": _orego, "linear": _linear,
    "lorenz": _lorenz, "brusselator": _brusselator,
}


def list_problems() -> list[str]:
    """The registered problem names."""
    return list(PROBLEMS)


def get_problem(name: str, **params) -> Problem:
    """Build a test problem by name.

    Args:
        name: one of list_problems().
        **params: the problem's parameters ("vdp": mu; "linear": eigenvalues; the others: none).

    Raises:
        ValueError: unknown name or parameter (the message lists the valid ones).
    """
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem '{name}'; valid: {', '.join(PROBLEMS)}")
    valid = list(inspect.signature(PROBLEMS[name]).parameters)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for problem '{name}'; "
                         f"valid: {', '.join(valid) or 'none'}")
    return PROBLEMS[name](**params)


get = get_problem  # problems.get(name, **params), the short name inside the module's namespace


def problem_indices(problem: Problem, t_eval: Sequence[float] | np.ndarray) -> dict:
    """Stiffness indices along the reference trajectory of a problem.

    At each t_i, with y_i the reference solution: all n eigenvalues of the Jacobian (dense), the
    spectral radius, the stiffness ratio, the logarithmic norm μ2, and the local estimate
    `dominant_quotient` at y_i: a difference quotient of f along the direction it converges to (not
    between consecutive y_i, which lie on the slow manifold of a stiff problem and miss the fast mode).

    Returns:
        {"t": (T,), "y": (T, n), "eigenvalues": (T, n) complex, "spectral_radius", "stiffness_ratio",
        "log_norm", "local_stiffness": (T,) each}, float64 numpy arrays.
    """
    t_eval = np.asarray(t_eval, dtype=np.float64)
    ys = problem.reference(t_eval)  # (T, n)
    n = ys.shape[1]
    points = [(float(t), torch.from_numpy(y)) for t, y in zip(t_eval, ys)]
    eigs = np.stack([spectrum(problem.field_at(t), y, k=n, method="dense") for t, y in points])  # (T, n)
    return {
        "t": t_eval, "y": ys, "eigenvalues": eigs,
        "spectral_radius": np.array([spectral_radius(e) for e in eigs]),
        "stiffness_ratio": np.array([stiffness_ratio(e) for e in eigs]),
        "log_norm": np.array([log_norm(problem.field_at(t), y, method="dense") for t, y in points]),
        "local_stiffness": np.array([dominant_quotient(problem.field_at(t), y) for t, y in points]),
    }
