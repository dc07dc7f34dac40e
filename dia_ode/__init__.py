"""dia_ode: residual networks read as ODE solvers, self-attention read as their step-size controller."""

__version__ = "0.1.0"

from dia_ode.engine import train  # noqa: E402
from dia_ode.models import create_model, list_models  # noqa: E402
from dia_ode.rundir import load_run  # noqa: E402
from dia_ode.solvers import trace  # noqa: E402

__all__ = ["__version__", "create_model", "list_models", "load_run", "trace", "train"]
