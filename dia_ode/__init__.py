"""dia_ode: residual networks read as ODE solvers, self-attention read as their step-size controller."""

__version__ = "0.1.0"
