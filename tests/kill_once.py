"""`dia-ode` with one process lost mid-epoch, once: what tests/test_run_dir_option.py runs under torchrun.

    torchrun --max-restarts 2 ... tests/kill_once.py train --run-dir DIR ...

DIA_ODE_TEST_KILL_AT="EPOCH,STEP,RANK" (epoch and step from 1; unset: nothing is killed, the command runs
as `-m dia_ode` would, for the uninterrupted run to compare with): in torchrun's first attempt only
(TORCHELASTIC_RESTART_COUNT 0), that rank ends with os._exit(1) after the step's forward, before its
gradients are exchanged, like a process whose machine is gone: no clean-up, no message. The restarted
processes train unharmed.
"""

import os
import sys

from dia_ode.cli import run
from dia_ode.engine.trainer import Trainer


def _kill_at(epoch: int, step: int) -> None:
    check_finite = Trainer._check_finite  # called once per step, with the 0-based epoch and step

    def check_or_die(self, sums, e, s):
        if (e + 1, s + 1) == (epoch, step):
            print(f"kill_once: rank {os.environ.get('RANK')} exits at epoch {epoch}, step {step}", file=sys.stderr,
                  flush=True)
            os._exit(1)
        check_finite(self, sums, e, s)

    Trainer._check_finite = check_or_die


if __name__ == "__main__":
    if os.environ.get("DIA_ODE_TEST_KILL_AT"):
        epoch, step, rank = (int(v) for v in os.environ["DIA_ODE_TEST_KILL_AT"].split(","))
        if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0" and os.environ.get("RANK", "0") == str(rank):
            _kill_at(epoch, step)
    sys.argv[0] = "dia-ode"
    run()
