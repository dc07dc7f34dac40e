"""The ODE view of residual networks: step-size controllers, the residual stage loop and traces."""

from dia_ode.solvers.controllers import (
    AbstractController, ConstantStep, DIAController, PerBlockAttention, SharedAttention, create_controller,
)
from dia_ode.solvers.stage import AbstractBlock, ResidualStage
from dia_ode.solvers.trace import StageTrace, recording, stages_of, trace

__all__ = [
    "AbstractBlock", "AbstractController", "ConstantStep", "DIAController", "PerBlockAttention",
    "ResidualStage", "SharedAttention", "StageTrace", "create_controller", "recording", "stages_of", "trace",
]
