"""The controller lab's numerics: explicit Runge-Kutta methods from their tableaux, error controllers
(step-size controllers that read an embedded error estimate: I, PI, Söderlind's PID filters, the DIA
cell), Hairer's stiffness test, a batched integrator with per-sample step control and a switch to an
L-stable Rosenbrock method (ROS2, RODAS3, RODAS4), differentiable by backpropagation (solve) or by the
adjoint method (solve_adjoint). Any vector field: the classic problems of
dia_ode.stiffness.problems or a network's."""

from dia_ode.numerics.adjoint import AdjointFailed, solve_adjoint
from dia_ode.numerics.controllers import (ERROR_CONTROLLERS, PID_PRESETS, AbstractErrorController, IController,
                                          Limits, PIController, PIDController, create_error_controller)
from dia_ode.numerics.dia_controller import DIAErrorController
from dia_ode.numerics.integrate import (DT_UNDERFLOW, MAX_STEPS, NON_FINITE, NON_FINITE_STEP, RESULTS, SUCCESS,
                                        Solution, Trace, batched, solve)
from dia_ode.numerics.stiffness_test import StiffnessTest
from dia_ode.numerics.tableaux import TABLEAUX, Tableau, get_tableau, list_methods

__all__ = ["AbstractErrorController", "AdjointFailed", "DIAErrorController", "DT_UNDERFLOW", "ERROR_CONTROLLERS", "IController",
           "Limits", "MAX_STEPS", "NON_FINITE", "NON_FINITE_STEP", "PIController", "PIDController", "PID_PRESETS", "RESULTS", "SUCCESS",
           "Solution", "StiffnessTest", "TABLEAUX", "Tableau", "Trace", "batched", "create_error_controller",
           "get_tableau", "list_methods", "solve", "solve_adjoint"]
