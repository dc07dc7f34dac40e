"""What a solve returns: result codes, the per-sample solution and statistics, and the per-step trace.

Failures of a solve are result codes per sample (diffrax's RESULTS, torchode's status), never
exceptions: one sample that fails must not take the batch down with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# NON_FINITE_STEP: the error controller proposed a NaN or infinite step (a trained controller with NaN
# weights); no stall test catches a NaN step (every comparison is false), so it would run to max_steps
RUNNING, SUCCESS, MAX_STEPS, DT_UNDERFLOW, NON_FINITE, NON_FINITE_STEP = range(6)
RESULTS = {SUCCESS: "success", MAX_STEPS: "max steps reached", DT_UNDERFLOW: "step size underflow",
           NON_FINITE: "non-finite state", NON_FINITE_STEP: "non-finite step size", RUNNING: "running"}
TRACE_FIELDS = ("t", "h", "error_ratio", "accepted", "h_lambda", "stiff", "h_rho")
STATS = ("nfe", "num_steps", "num_accepted", "num_rejected", "num_stiff_steps", "num_flagged_steps",
         "num_jacobians", "num_linear_solves", "num_implicit_steps")


@dataclass
class Trace:
    """One row per attempted step (all samples, in order of attempt).

    Attributes:
        sample: index of the sample in the batch.
        t: time at the start of the step (float64).
        h: the step tried.
        error_ratio: its error ratio (0 for a fixed-step method, inf where not finite).
        accepted: whether the step was taken.
        h_lambda: Hairer's estimate of h times the dominant eigenvalue's modulus (nan where the method
            has no two stages at one node, or on a rejected step).
        stiff: the stiffness flag after this step (the streak rule of numerics/stiffness_test.py); whether
            one step is stability-limited is StiffnessTest.limited(h_lambda) (h_rho on implicit steps).
        h_rho: h times the exact spectral radius of the Jacobian at the step's start (solve's
            exact_spectrum, and every step of the stiff switch's implicit method; NaN elsewhere and on
            rejected steps).
        method: the method in use.
    """

    sample: torch.Tensor
    t: torch.Tensor
    h: torch.Tensor
    error_ratio: torch.Tensor
    accepted: torch.Tensor
    h_lambda: torch.Tensor
    stiff: torch.Tensor
    h_rho: torch.Tensor
    method: list[str] = field(default_factory=list)

    def of(self, sample: int) -> dict[str, torch.Tensor]:
        """The rows of one sample as tensors keyed by field name."""
        rows = self.sample == sample
        return {name: getattr(self, name)[rows] for name in TRACE_FIELDS}


class TraceRecorder:
    """Collects a Trace's rows step by step (or nothing, at no cost, when not asked for)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.rows: list[dict[str, torch.Tensor]] = []
        self.methods: list[str] = []

    def add(self, method: str, **row: torch.Tensor) -> None:
        if self.enabled:
            self.rows.append(row)
            self.methods.extend([method] * row["sample"].numel())

    def finish(self) -> Trace | None:
        if not self.enabled:
            return None
        cat = {key: torch.cat([r[key] for r in self.rows]) if self.rows else torch.zeros(0)
               for key in ("sample", *TRACE_FIELDS)}
        return Trace(**cat, method=self.methods)


@dataclass
class Solution:
    """What solve returns.

    Attributes:
        t: the save times (T,) float64.
        y: the solution at the save times (B, T, n); NaN at times a failed sample never reached.
        result: result code per sample (B,) (RESULTS).
        stats: per sample (B,) int64: nfe, num_steps, num_accepted, num_rejected, num_stiff_steps (accepted
            steps that stability limits, each judged alone: StiffnessTest.limited), num_flagged_steps
            (accepted steps under the streak rule's flag, which a controller's swings can keep down), and
            for the stiff switch num_jacobians, num_linear_solves, num_implicit_steps (accepted on the stiff
            method).
        trace: the per-step Trace when asked for, else None.
        backward_stats: the adjoint solve's statistics per sample once backward ran (solve_adjoint;
            nfe_quadrature: the parameter adjoint's evaluations), else empty.
    """

    t: torch.Tensor
    y: torch.Tensor
    result: torch.Tensor
    stats: dict[str, torch.Tensor]
    trace: Trace | None = None
    backward_stats: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def success(self) -> torch.Tensor:
        return self.result == SUCCESS

    def messages(self) -> list[str]:
        """The result of every sample in words."""
        return [RESULTS[int(code)] for code in self.result]

    def per_accepted(self, stat: str) -> torch.Tensor:
        """stats[stat] over the accepted steps per sample (B,) float64, 0 without any; the stiff fraction
        is per_accepted("num_stiff_steps")."""
        return self.stats[stat].double() / self.stats["num_accepted"].clamp_min(1)
