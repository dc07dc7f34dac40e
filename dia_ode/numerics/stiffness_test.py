"""Hairer's stiffness test, run on every accepted step from stages the method computes anyway.

Two stages evaluated at the same time t + h (dopri5's and tsit5's last two, c_6 = c_7 = 1) give, for
free, a Rayleigh-like quotient of the Jacobian along the direction they differ in:

    h * lambda  ~  h * ||k_7 - k_6|| / ||g_7 - g_6||,   g_i the stage's argument

(Hairer & Wanner, Solving ODEs II, IV.2, "Automatic stiffness detection"; the DOPRI5 code). A step
whose h * lambda exceeds the method's stability bound on the negative real axis (times Hairer's margin,
3.25 / 3.3066 for dopri5) is limited by stability rather than accuracy: the mark of stiffness. The
streak rule of DOPRI5 turns single marks into a flag: 15 stiff accepted steps raise it, 6 non-stiff
ones in a row clear the count. Methods without two stages at one node (all but dopri5 and tsit5) report
NaN and never flag.

The test gives two readings, each for its own use:

- per step, `limited`: h * lambda at least LIMITED_FRACTION (a half) of the threshold says stability,
  not accuracy, sets this step. It is what a stiff fraction counts (solve's num_stiff_steps), so the
  number means the same for every controller;
- the streak flag: the decision to call the problem stiff (DOPRI5's message, solve's stiff switch). It
  answers "has stiffness persisted?", and how often it is up depends on the controller: a controller
  that swings h across the bound breaks the streaks (Söderlind's H312PID on Van der Pol, mu = 100: 5
  marked steps, then 6 unmarked ones, over and over, so the count is cleared before it reaches 15 and
  the flag never rises, while 99% of its steps are within a factor 2 of the bound).

Why a half: at the stability boundary the controller sees the error estimate jump, and steers h * lambda
around the bound with a swing of its own. On Van der Pol, mu = 100, rtol 1e-4 (1st-99th percentile over
the threshold): PI 1.013-1.018, I 0.91-1.14, H211PI 0.81-1.38, H312PID 0.75-1.6. Counting marks above
the threshold itself would count the swing (PI 99%, I 52%, H312PID 40% of the same solve's steps). Half
the threshold is below every swing: 97.5-100% of the steps for all four controllers on Van der Pol,
mu = 100 (rtol 1e-4 and 1e-6), HIRES on [0, 40], the Oregonator and a linear system with rates 1 and
1000 (rtol 1e-4). Steps of the non-stiff problems stay below it: every step of Lorenz and of Van der Pol,
mu = 1, and all but 2 or 3 of the Brusselator's 54-80 at rtol 1e-4 (the longest steps of its slow
phase, which do reach 0.6-0.94 of the threshold).
"""

from __future__ import annotations

import math

import torch

from dia_ode.numerics.tableaux import Tableau, get_tableau

HAIRER_MARGIN = 3.25 / get_tableau("dopri5").real_stability_limit  # DOPRI5's threshold over dopri5's bound
STREAK_ON, STREAK_OFF = 15, 6  # DOPRI5: stiff after 15 stiff steps; 6 non-stiff ones reset the count
LIMITED_FRACTION = 0.5  # a step is stability-limited from half the threshold on (module docstring: why a half)


def stage_differences(k_i: torch.Tensor, k_j: torch.Tensor, g_i: torch.Tensor, g_j: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(||k_j - k_i||, ||g_j - g_i||) per sample, (B,) float64 each, for two stages at one node (rows
    (B, n)): h times their quotient is the test's h * lambda (NaN where the stage arguments coincide)."""
    return (k_j - k_i).double().norm(dim=-1), (g_j - g_i).double().norm(dim=-1)


def h_lambda_of(h: torch.Tensor, num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """h * num / den, NaN where den is 0: one expression, so that every engine rounds it alike."""
    return (h * num / den).masked_fill(den == 0, math.nan)


class StiffnessTest:
    """The test and its streak state for one method.

    Args:
        tableau: the method (its last two stages must share a node for an estimate).
        margin: the threshold is margin * tableau.real_stability_limit.
        streak_on, streak_off: the streak rule (module docstring).
        limited_fraction: a step with h * lambda >= limited_fraction * threshold is stability-limited.
    """

    def __init__(self, tableau: Tableau, margin: float = HAIRER_MARGIN, streak_on: int = STREAK_ON,
                 streak_off: int = STREAK_OFF, limited_fraction: float = LIMITED_FRACTION) -> None:
        s = tableau.stages
        same_node = s >= 2 and abs(tableau.c[s - 2] - tableau.c[s - 1]) < 1e-12  # c are row sums: rounding
        self.pair = (s - 2, s - 1) if same_node else None
        self.threshold = margin * tableau.real_stability_limit
        self.limited_bound = limited_fraction * self.threshold
        self.streak_on, self.streak_off = streak_on, streak_off

    def init(self, batch: int) -> dict[str, torch.Tensor]:
        zeros = torch.zeros(batch, dtype=torch.int64)
        return {"stiff_count": zeros, "nonstiff_count": zeros.clone(), "flag": torch.zeros(batch, dtype=torch.bool)}

    def estimate(self, h: torch.Tensor, ks: list[torch.Tensor], stage_inputs: list[torch.Tensor]) -> torch.Tensor:
        """h * lambda per sample (B,) float64; NaN without a stage pair or where the stages coincide."""
        if self.pair is None:
            return torch.full_like(h, math.nan)
        i, j = self.pair
        return h_lambda_of(h, *stage_differences(ks[i], ks[j], stage_inputs[i], stage_inputs[j]))

    def limited(self, h_lambda: torch.Tensor) -> torch.Tensor:
        """Per step (B,) bool: stability, not accuracy, sets the step (h * lambda >= limited_bound; False
        where h_lambda is NaN: a rejected step, or no estimate). No streak: one step, one answer."""
        return h_lambda >= self.limited_bound

    def update(self, state: dict[str, torch.Tensor], h_lambda: torch.Tensor, accept: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(h * lambda of the accepted steps (NaN on the others), the flag after this step, the new
        state) of a step whose estimate (`estimate`) is h_lambda; only accepted steps count."""
        h_lambda = h_lambda.masked_fill(~accept, math.nan)
        over = h_lambda > self.threshold  # False where NaN: rejected steps count neither way
        under = accept & ~over
        # counts by arithmetic on booleans, not torch.where: this runs on every step of every solve
        stiff_count = state["stiff_count"] + over
        nonstiff = (state["nonstiff_count"] + under) * ~over
        stiff_count = stiff_count * (nonstiff < self.streak_off)
        flag = stiff_count >= self.streak_on
        return h_lambda, flag, {"stiff_count": stiff_count, "nonstiff_count": nonstiff, "flag": flag}


class NoStiffnessTest(StiffnessTest):
    """No test: h * lambda NaN and never a flag, at no cost (solve(stiffness=False): batches where the
    per-step estimate is not wanted; the test is a sixth of a Van der Pol step at batch 1,024)."""

    def init(self, batch: int) -> dict[str, torch.Tensor]:
        return {}

    def estimate(self, h: torch.Tensor, ks: list[torch.Tensor], stage_inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.full_like(h, math.nan)

    def update(self, state: dict[str, torch.Tensor], h_lambda: torch.Tensor, accept: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        return h_lambda, torch.zeros_like(accept), {}
