"""The controller lab's numerics: explicit Runge-Kutta methods from their tableaux, step-size
controllers (I, PI, Söderlind's PID filters, the DIA cell), Hairer's stiffness test, a batched
integrator with per-sample step control and a switch to an L-stable Rosenbrock method (ROS2, RODAS3,
RODAS4; issue 12). Any vector field: the classic problems of dia_ode.stiffness.problems or a network's."""

from dia_ode.numerics.controllers import (CONTROLLERS, PID_PRESETS, AbstractController, IController, Limits,
                                          PIController, PIDController, create_controller)
from dia_ode.numerics.dia_controller import DIAController
from dia_ode.numerics.integrate import (DT_UNDERFLOW, MAX_STEPS, NON_FINITE, RESULTS, SUCCESS, Solution, Trace,
                                        batched, solve)
from dia_ode.numerics.stiffness_test import StiffnessTest
from dia_ode.numerics.tableaux import TABLEAUX, Tableau, get_tableau, list_methods

__all__ = ["AbstractController", "CONTROLLERS", "DIAController", "DT_UNDERFLOW", "IController", "Limits", "MAX_STEPS", "NON_FINITE",
           "PIController", "PIDController", "PID_PRESETS", "RESULTS", "SUCCESS", "Solution", "StiffnessTest",
           "TABLEAUX", "Tableau", "Trace", "batched", "create_controller", "get_tableau", "list_methods", "solve"]
