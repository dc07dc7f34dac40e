"""Error controllers behind one interface: init a per-sample state, then adapt after every step.

An error controller chooses the steps of an ODE solve from an embedded error estimate and accepts or
rejects each one; a network's stage controller (solvers/controllers.py) sets h_k from the state
alone. The names say which: *ErrorController here, *StageController there.

A controller sees, per sample of a batch, the step h just tried and its error ratio e = ||err|| / tol
(e <= 1: the step meets the tolerance), and returns whether to accept it, the factor for the next step
h_next = factor * h, and its new state. Every quantity is a (B,) float64 tensor, so each sample of a
batch is controlled on its own (numerics/integrate.py). k = error_order + 1 is the exponent of the
error estimate's order, e ~ C h^k.

- IController: the elementary (integral) controller, factor = safety * e^(-1/k), as torchdiffeq's
  adaptive solvers use it (defaults: its safety 0.9, factors in [0.2, 10], no shrinking of an accepted
  step).
- PIController: Hairer's DOPRI5 form (Hairer, Norsett & Wanner, Solving ODEs I, II.4; Gustafsson's PI
  control): factor = safety * e_n^(-(1/k - 0.75 beta)) * e_{n-1}^(beta), beta = 0.04, e_{n-1} the
  error ratio of the last accepted step (at least 1e-4), and no growth right after a rejection.
- PIDController: Söderlind's digital filters ("Digital filters in adaptive time-stepping", ACM TOMS
  29, 2003): factor = safety * e_n^(-b1/k) e_{n-1}^(-b2/k) e_{n-2}^(-b3/k) (h_n/h_{n-1})^(-a2)
  (h_{n-1}/h_{n-2})^(-a3) over the accepted steps, with named presets (PID_PRESETS). A rejected step
  falls back to the elementary factor and leaves the filter's history as it was.

theory/controllers.md reads the three as filters on log e; DIAErrorController (numerics/dia_controller.py)
is the same interface with a learned memory.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from fractions import Fraction as F

import torch

State = dict[str, torch.Tensor]
TINY = 1e-10  # error ratios below this count as this: e^(-x) stays finite (the factor bound then rules)


@dataclass(frozen=True)
class Limits:
    """What every controller shares: safety factor, bounds on the factor, bounds on h."""

    safety: float = 0.9
    factor_min: float = 0.2
    factor_max: float = 10.0
    dt_min: float = 0.0
    dt_max: float = float("inf")

    def __post_init__(self) -> None:
        if not 0 < self.safety <= 1:
            raise ValueError(f"safety must be in (0, 1], got {self.safety}")
        if not 0 < self.factor_min < 1 < self.factor_max:
            raise ValueError(f"need 0 < factor_min < 1 < factor_max, got {self.factor_min}, {self.factor_max}")
        if not 0 <= self.dt_min < self.dt_max:
            raise ValueError(f"need 0 <= dt_min < dt_max, got {self.dt_min}, {self.dt_max}")


class AbstractErrorController(abc.ABC):
    """init(batch) -> state; adapt(state, h, error_ratio, k, stiffness) -> (accept, factor, state).

    stiffness: the step's h * lambda over the method's stability threshold (numerics/stiffness_test.py),
    NaN where there is none; the classic filters ignore it, a learned controller may read it."""

    name: str

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()

    def init(self, batch: int) -> State:
        """The state before the first step of `batch` samples."""
        return {}

    @abc.abstractmethod
    def adapt(self, state: State, h: torch.Tensor, error_ratio: torch.Tensor, k: int,
              stiffness: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, State]:
        """(accept (B,) bool, factor (B,) float64, new state) after a step of size h with this error ratio."""


def _ratio(error_ratio: torch.Tensor) -> torch.Tensor:
    return error_ratio.to(torch.float64).clamp_min(TINY)


class IController(AbstractErrorController):
    """The elementary controller (module docstring); `shrink_accepted=False` is torchdiffeq's rule that
    an accepted step never makes the next one smaller."""

    name = "i"

    def __init__(self, limits: Limits | None = None, shrink_accepted: bool = False) -> None:
        super().__init__(limits)
        self.shrink_accepted = shrink_accepted

    def adapt(self, state: State, h: torch.Tensor, error_ratio: torch.Tensor, k: int,
              stiffness: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, State]:
        e = error_ratio.to(torch.float64)
        accept = e <= 1.0
        factor = self.limits.safety * _ratio(e) ** (-1.0 / k)
        low = torch.full_like(factor, self.limits.factor_min)
        if not self.shrink_accepted:
            low = torch.where(accept, torch.ones_like(low), low)
        factor = torch.minimum(torch.maximum(factor, low), torch.full_like(factor, self.limits.factor_max))
        factor = torch.where(e == 0, torch.full_like(factor, self.limits.factor_max), factor)
        return accept, factor, state


class PIController(AbstractErrorController):
    """Hairer's DOPRI5 PI controller (module docstring)."""

    name = "pi"

    def __init__(self, limits: Limits | None = None, beta: float = 0.04) -> None:
        super().__init__(limits)
        self.beta = beta

    def init(self, batch: int) -> State:
        return {"error_old": torch.full((batch,), 1e-4, dtype=torch.float64),
                "rejected": torch.zeros(batch, dtype=torch.bool)}

    def adapt(self, state: State, h: torch.Tensor, error_ratio: torch.Tensor, k: int,
              stiffness: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, State]:
        e = _ratio(error_ratio)
        accept = error_ratio <= 1.0
        alpha = 1.0 / k - 0.75 * self.beta
        safety, low, high = self.limits.safety, self.limits.factor_min, self.limits.factor_max
        base = safety * e ** (-alpha)
        grow = (base * state["error_old"] ** self.beta).clamp(low, high)
        grow = torch.where(state["rejected"], grow.clamp_max(1.0), grow)  # no growth right after a rejection
        shrink = base.clamp(low, 1.0)
        factor = torch.where(accept, grow, shrink)
        new = {"error_old": torch.where(accept, e.clamp_min(1e-4), state["error_old"]), "rejected": ~accept}
        return accept, factor, new


@dataclass(frozen=True)
class Filter:
    """Söderlind's filter coefficients: beta_1..3 (in units of 1/k) and alpha_2..3."""

    b1: float
    b2: float = 0.0
    b3: float = 0.0
    a2: float = 0.0
    a3: float = 0.0


# Söderlind (2003), Table: the filters by their names there (H: digital filter; PI: the classic
# PI controllers of Gustafsson, as beta pairs). Fractions keep the published values exact.
PID_PRESETS: dict[str, Filter] = {
    "H211PI": Filter(float(F(1, 6)), float(F(1, 6))),
    "H211b": Filter(float(F(1, 4)), float(F(1, 4)), a2=float(F(1, 4))),  # b = 4
    "H312PID": Filter(float(F(1, 18)), float(F(1, 9)), float(F(1, 18))),
    "H312b": Filter(float(F(1, 8)), float(F(2, 8)), float(F(1, 8)), float(F(3, 8)), float(F(1, 8))),  # b = 8
    "H0321": Filter(float(F(5, 4)), float(F(1, 2)), float(F(-3, 4)), float(F(-1, 4)), float(F(-3, 4))),
    "H321": Filter(float(F(1, 3)), float(F(1, 18)), float(F(-5, 18)), float(F(-5, 6)), float(F(-1, 6))),
    "PI42": Filter(float(F(3, 5)), float(F(-1, 5))),
    "PI33": Filter(float(F(2, 3)), float(F(-1, 3))),
}


class PIDController(AbstractErrorController):
    """A Söderlind digital filter (module docstring); `preset` names one of PID_PRESETS."""

    name = "pid"

    def __init__(self, preset: str = "H312PID", limits: Limits | None = None) -> None:
        super().__init__(limits)
        if preset not in PID_PRESETS:
            raise ValueError(f"unknown PID preset '{preset}'; valid: {', '.join(PID_PRESETS)}")
        self.preset, self.filter = preset, PID_PRESETS[preset]

    def init(self, batch: int) -> State:
        ones = torch.ones(batch, dtype=torch.float64)
        return {"e1": ones, "e2": ones.clone(), "h1": torch.full((batch,), float("nan"), dtype=torch.float64),
                "rho1": ones.clone(), "rejected": torch.zeros(batch, dtype=torch.bool)}

    def adapt(self, state: State, h: torch.Tensor, error_ratio: torch.Tensor, k: int,
              stiffness: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, State]:
        e, f = _ratio(error_ratio), self.filter
        accept = error_ratio <= 1.0
        h = h.to(torch.float64)
        rho = torch.where(torch.isnan(state["h1"]), torch.ones_like(h), h / state["h1"])  # h_n / h_{n-1}
        safety, low, high = self.limits.safety, self.limits.factor_min, self.limits.factor_max
        filtered = (safety * e ** (-f.b1 / k) * state["e1"] ** (-f.b2 / k) * state["e2"] ** (-f.b3 / k)
                    * rho ** (-f.a2) * state["rho1"] ** (-f.a3)).clamp(low, high)
        filtered = torch.where(state["rejected"], filtered.clamp_max(1.0), filtered)
        fallback = (safety * e ** (-1.0 / k)).clamp(low, 1.0)
        factor = torch.where(accept, filtered, fallback)
        keep = lambda new, old: torch.where(accept, new, old)  # noqa: E731 -- history moves on accepted steps only
        new = {"e1": keep(e, state["e1"]), "e2": keep(state["e1"], state["e2"]), "h1": keep(h, state["h1"]),
               "rho1": keep(rho, state["rho1"]), "rejected": ~accept}
        return accept, factor, new


ERROR_CONTROLLERS = {"i": IController, "pi": PIController, "pid": PIDController}


def create_error_controller(name: str, limits: Limits | None = None, **options) -> AbstractErrorController:
    """`i`, `pi` or `pid` (options: preset=...); ValueError names a bad name or preset."""
    if name not in ERROR_CONTROLLERS:
        raise ValueError(f"unknown controller '{name}'; valid: {', '.join(ERROR_CONTROLLERS)}")
    return ERROR_CONTROLLERS[name](limits=limits, **options)
