"""The ODE view of residual networks: stage controllers (attention as the step h_k), the residual stage loop,
continuous blocks on torchdiffeq or on numerics' integrator, and traces."""

from dia_ode.solvers.controllers import (
    AbstractStageController, ConstantStep, DIAStageController, LearnedScalarStep, PerBlockAttention, SharedAttention,
    create_stage_controller,
)
from dia_ode.solvers.backends import BACKENDS, SolverChoice, SolverOptionError, parse_controller
from dia_ode.solvers.continuous import (
    ADAPTIVE_METHODS, FIXED_GRID_METHODS, STAT_KEYS, AbstractDynamics, ContinuousBlock, PlainDynamics,
    SolveFailed, StepBudgetExceeded, StepLog,
)
from dia_ode.solvers.dia_ode_backend import StatePacking
from dia_ode.solvers.continuous_attention import (
    DIADynamics, EulerAttention, EulerDIA, GatedDynamics, make_dynamics,
)
from dia_ode.solvers.interleaved import AlternatingStageController
from dia_ode.solvers.regularization import RegularizedDynamics, regularization_loss
from dia_ode.solvers.stage import AbstractBlock, ResidualStage
from dia_ode.solvers.statistics import (SOLVER_RECORD, DynamicsMeter, accepted_h_lambda, continuous_blocks,
                                       dynamics_stats, solver_record)
from dia_ode.solvers.tied import FieldBlock, euler_stage
from dia_ode.solvers.trace import StageTrace, recorded_modules, recording, stages_of, trace

__all__ = [
    "AbstractBlock", "AbstractStageController", "AlternatingStageController", "ConstantStep", "DIAStageController",
    "LearnedScalarStep", "PerBlockAttention", "ResidualStage", "SharedAttention", "StageTrace", "create_stage_controller",
    "recorded_modules", "recording", "stages_of", "trace",
    # continuous depth (continuous.py, continuous_attention.py, tied.py, statistics.py)
    "ADAPTIVE_METHODS", "AbstractDynamics", "ContinuousBlock", "DIADynamics", "DynamicsMeter",
    "EulerAttention", "EulerDIA", "FIXED_GRID_METHODS", "FieldBlock", "GatedDynamics", "PlainDynamics", "STAT_KEYS",
    "SOLVER_RECORD", "StepBudgetExceeded", "StepLog", "accepted_h_lambda", "continuous_blocks", "dynamics_stats",
    "euler_stage", "make_dynamics", "solver_record",
    # the engines of a continuous block (backends.py, dia_ode_backend.py)
    "BACKENDS", "SolveFailed", "SolverChoice", "SolverOptionError", "StatePacking", "parse_controller",
    # regularised training (regularization.py)
    "RegularizedDynamics", "regularization_loss",
]
