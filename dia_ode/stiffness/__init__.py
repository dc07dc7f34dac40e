"""Stiffness of vector fields and of residual networks: Jacobian operators, spectra, indices, test problems.

`spectrum(f, x)` gives eigenvalues of the Jacobian of a vector field at one point (matrix-free ARPACK,
dense for small n); indices.py turns them into stiffness numbers; stability.py has the stability
functions R(z) of explicit Runge-Kutta methods; network.py reads spectra from a model's residual
stages, continuous.py from its continuous blocks along the solver's steps; problems.py has the
classic stiff problems that calibrate them. theory/stiffness.md defines every quantity and names the
test that checks it.
"""

from dia_ode.stiffness import problems
from dia_ode.stiffness.indices import (
    STABILITY_LIMITS, ZERO_TOL, local_stiffness, log_norm, spectral_radius, step_index, stiffness_ratio,
)
from dia_ode.stiffness.jacobian import JacobianOperator, dense_jacobian, jacobian_operator
from dia_ode.stiffness.network import block_spectra, eval_mode, trace_stiffness
from dia_ode.stiffness.problems import Problem, get_problem, list_problems, problem_indices
from dia_ode.stiffness.eigen import DENSE_MAX_N, WHICH, choose_method, spectrum, spectrum_with_info
from dia_ode.stiffness.continuous import continuous_spectra, summarise_block
from dia_ode.stiffness.stability import (
    inside_region, real_axis_limit, stability_function, stability_methods, stability_polynomial,
)

__all__ = [
    "DENSE_MAX_N", "JacobianOperator", "Problem", "STABILITY_LIMITS", "WHICH", "ZERO_TOL", "block_spectra",
    "choose_method", "continuous_spectra", "dense_jacobian", "eval_mode", "get_problem",
    "inside_region", "jacobian_operator", "list_problems", "local_stiffness", "log_norm", "problem_indices",
    "problems", "real_axis_limit", "spectral_radius", "spectrum",
    "spectrum_with_info", "stability_function", "stability_methods", "stability_polynomial", "step_index",
    "stiffness_ratio", "summarise_block", "trace_stiffness",
]
