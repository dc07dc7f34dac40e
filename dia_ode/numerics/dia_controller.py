"""The DIA error controller: the networks' DIA-LSTM cell (attention.DIALSTMCell, the very class) choosing
the steps of an ODE solve from its error estimates (in a network the same cell, inside a DIAUnit, sets
the steps of a residual stage: solvers.DIAStageController).

Per attempted step the cell reads six features of the step sequence,

    z = (log e_n / k, log e_{n-1} / k, log(h_n / h_{n-1}), accepted_{n-1}, s_n, log h_n),

(e the error ratio, k the error exponent, n-1 the last accepted step, s the step's stiffness estimate
h * lambda over the method's stability threshold, clipped to [0, 4], 0 where there is none) and its
memory (h, c) carries the rest of the history. Its first output channel o in (0, 1) corrects Hairer's
PI controller in the log domain:

    log factor = log factor_PI + gain * (o - 1/4) / (1/4)     (then the same bounds as PI's),

so a cell with every weight zero (o = 1/4 exactly) *is* the PI controller (tests/test_numerics.py),
and training moves it from there: what it learns is what PI's fixed filter leaves on the table. It is the same interface as I, PI and PID (numerics/controllers.py): a
filter on log e with a learned, nonlinear memory. How it is trained: studies/dia_controller_training.py.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import torch

from dia_ode.attention import DIALSTMCell
from dia_ode.attention.dia_cell import zero_
from dia_ode.numerics.controllers import TINY, AbstractErrorController, Limits, PIController, State
from dia_ode.util.files import UnreadableFile, read_json

FEATURES = ("log_error", "log_error_last_accepted", "log_step_ratio", "last_accepted", "stiffness", "log_step")
UNTRAINED_OUTPUT = 0.25  # o of a cell whose weights are all zero: sigmoid(0) * sigmoid(0)
# the run directory of a trained DIA controller: its command in config.json and the file of the cell
# (studies/dia_controller_training.py writes it, load_dia_controller reads it)
CONTROLLER_FILE = "controller.pt"
TRAIN_COMMAND = "controllers train"


def new_cell() -> DIALSTMCell:
    """A DIA cell over the controller's features (reduction 1: one channel a feature), every weight zero."""
    return zero_(DIALSTMCell(len(FEATURES), reduction=1).double())


class DIAErrorController(AbstractErrorController):
    """A DIA cell as an error controller (module docstring).

    Args:
        cell: the cell (default new_cell(): the PI controller until trained).
        limits: safety, factor and step bounds, as for every controller.
        gain: the largest correction of log factor the cell can make (log(e) units), each way.
    """

    name = "dia"

    def __init__(self, cell: DIALSTMCell | None = None, limits: Limits | None = None, gain: float = 1.0) -> None:
        super().__init__(limits)
        self.cell = (cell or new_cell()).double()
        if self.cell.channels != len(FEATURES):
            raise ValueError(f"the DIA controller's cell needs {len(FEATURES)} channels, got {self.cell.channels}")
        self.gain = gain
        self.base = PIController(self.limits)

    def init(self, batch: int) -> State:
        zeros = torch.zeros(batch, len(FEATURES), dtype=torch.float64)
        return {"h": zeros, "c": zeros.clone(), "log_e_last": torch.zeros(batch, dtype=torch.float64),
                "h_last": torch.full((batch,), math.nan, dtype=torch.float64),
                "accepted": torch.ones(batch, dtype=torch.bool),
                **{f"pi_{key}": value for key, value in self.base.init(batch).items()}}

    def adapt(self, state: State, h: torch.Tensor, error_ratio: torch.Tensor, k: int,
              stiffness: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, State]:
        accept = error_ratio <= 1.0
        log_e = error_ratio.to(torch.float64).clamp(TINY, 1e10).log()
        h = h.to(torch.float64)
        step_ratio = torch.where(torch.isnan(state["h_last"]), torch.zeros_like(h), (h / state["h_last"]).log())
        stiff = torch.zeros_like(h) if stiffness is None else stiffness.to(torch.float64).nan_to_num(0.0).clamp(0.0, 4.0)
        z = torch.stack([log_e / k, state["log_e_last"] / k, step_ratio, state["accepted"].double(), stiff,
                         h.clamp_min(TINY).log()], dim=-1)
        with torch.no_grad():
            hidden, cell = self.cell(z, (state["h"], state["c"]))
        correction = self.gain * (hidden[:, 0] - UNTRAINED_OUTPUT) / UNTRAINED_OUTPUT
        pi_state = {key[len("pi_"):]: value for key, value in state.items() if key.startswith("pi_")}
        _, pi_factor, pi_state = self.base.adapt(pi_state, h, error_ratio, k)
        low, high = self.limits.factor_min, self.limits.factor_max
        factor = (pi_factor * correction.exp()).clamp(low, high)
        factor = torch.where(accept | (correction <= 0), factor, pi_factor)  # a rejected step never grows past PI's
        new = {"h": hidden, "c": cell, "log_e_last": torch.where(accept, log_e, state["log_e_last"]),
               "h_last": torch.where(accept, h, state["h_last"]), "accepted": accept,
               **{f"pi_{key}": value for key, value in pi_state.items()}}
        return accept, factor, new


def load_dia_controller(run_dir: str | Path) -> DIAErrorController:
    """The DIA error controller that a `dia-ode controllers train` run saved in RUN/controller.pt.

    Raises:
        ValueError: not such a run (no config.json, another command's directory, no controller.pt, a file
            that holds no DIA cell), in one line naming the directory.
    """
    run_dir = Path(run_dir)
    try:
        config = read_json(run_dir / "config.json")  # a FIFO is refused, never opened for a blocking read
    except FileNotFoundError:
        raise ValueError(f"{run_dir} is not a run directory (no config.json)") from None
    except UnreadableFile as err:  # not a regular file, malformed, nested too deeply, not UTF-8
        raise ValueError(str(err)) from None
    command = config.get("command") if isinstance(config, dict) else None
    if command != TRAIN_COMMAND:
        raise ValueError(f"{run_dir} was written by '{command}', not by '{TRAIN_COMMAND}': it holds no DIA "
                         f"controller")
    path = run_dir / CONTROLLER_FILE
    if not path.is_file():
        raise ValueError(f"{run_dir} has no {CONTROLLER_FILE} (training did not finish)")
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
        with torch.random.fork_rng(devices=[]):  # a model built with dia:RUN draws the weights it draws without
            cell = new_cell()
        cell.load_state_dict(payload["cell"])
    except (RuntimeError, KeyError, TypeError, ValueError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path} does not hold a DIA controller ({type(err).__name__})") from None
    return DIAErrorController(cell, gain=float(payload["gain"]))
