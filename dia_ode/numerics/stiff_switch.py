"""When a sample moves to the stiff method and back: the stiff switch as a policy object (LSODA's idea).

`StiffSwitch` moves a sample to an L-stable Rosenbrock method once `streak` accepted steps were marked
stiff by Hairer's test (before its streak_off unmarked ones in a row), and back to the explicit method
once h times the exact local spectral radius (the implicit step's own Jacobian) stays below the
explicit method's threshold for streak_on accepted steps. `NoSwitch` keeps every sample explicit.
solve asks the policy, after each step, which samples are implicit now; nothing else in the loop
depends on which policy it is.
"""

from __future__ import annotations

import torch

from dia_ode.numerics.methods import Rosenbrock
from dia_ode.numerics.stiffness_test import StiffnessTest

# Stiff marks that move a sample to the implicit method. DOPRI5's diagnostic streak (15) is for telling
# the user; a switch pays off as soon as stability, not accuracy, limits the step: three marks measured
# 1.79x / 1.61x LSODA's evaluations on Robertson / HIRES, against 2.66x / 1.75x with 15 (theory/controllers.md).
SWITCH_STREAK = 3

State = dict[str, torch.Tensor]


class NoSwitch:
    """Every sample stays on the explicit method."""

    stiff_method: Rosenbrock | None = None

    def init(self, batch: int) -> State:
        return {"implicit": torch.zeros(batch, dtype=torch.bool)}

    def after_explicit(self, state: State, idx: torch.Tensor, accept: torch.Tensor, stiff_count: torch.Tensor | None
                       ) -> None:
        """Called after an explicit step of the samples idx (their stiffness test's streak count)."""

    def after_implicit(self, state: State, idx: torch.Tensor, sel, accept: torch.Tensor, stiff: torch.Tensor
                       ) -> torch.Tensor:
        """Called after an implicit step whose h times the exact radius is over the explicit method's
        threshold where `stiff`; returns the samples (a mask over idx) that leave the stiff method."""
        return torch.zeros_like(accept)


class StiffSwitch(NoSwitch):
    """To `stiff_method` after `streak` stiff marks, back after the test's streak_on steps within bounds.

    Args:
        stiff_method: the Rosenbrock method the stiff samples continue on.
        stiffness: the explicit method's stiffness test (its threshold and streak_on).
        streak: stiff marks that move a sample to the stiff method.
    """

    def __init__(self, stiff_method: Rosenbrock, stiffness: StiffnessTest, streak: int = SWITCH_STREAK) -> None:
        if streak < 1:
            raise ValueError(f"switch_streak must be >= 1, got {streak}")
        self.stiff_method = stiff_method
        self.stiffness = stiffness
        self.streak = streak

    def init(self, batch: int) -> State:
        # back: consecutive implicit steps the explicit method could have taken
        return {**super().init(batch), "back": torch.zeros(batch, dtype=torch.int64)}

    def after_explicit(self, state: State, idx: torch.Tensor, accept: torch.Tensor, stiff_count: torch.Tensor | None
                       ) -> None:
        # stability limits the step: go implicit (LSODA's switch, Hairer's test the trigger)
        state["implicit"][idx[accept & (stiff_count >= self.streak)]] = True

    def after_implicit(self, state: State, idx: torch.Tensor, sel, accept: torch.Tensor, stiff: torch.Tensor
                       ) -> torch.Tensor:
        back = state["back"]
        counted = torch.where(stiff, torch.zeros_like(back[sel]), back[sel] + 1)
        back[sel] = torch.where(accept, counted, back[sel])
        leave = accept & (back[sel] >= self.stiffness.streak_on)
        state["implicit"][idx[leave]] = False
        back[idx[leave]] = 0
        return leave
