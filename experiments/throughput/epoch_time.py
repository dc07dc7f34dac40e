"""The quick start's training epoch and validation pass, timed inside one Trainer: the median of 8 calls
of each, for comparing two versions of the code (run it with each on PYTHONPATH, alternating).

    PYTHONPATH=OLD_CHECKOUT python experiments/throughput/epoch_time.py old
    python experiments/throughput/epoch_time.py new
"""

import statistics
import sys
import tempfile
import time
from dataclasses import asdict

from dia_ode.engine import TrainConfig, Trainer
from dia_ode.rundir import start_run

cfg = TrainConfig(device="cpu")
run_dir = start_run(tempfile.mkdtemp(), "train", {"command": "train", **asdict(cfg)}, argv=["epoch_time"])
trainer = Trainer(cfg, run_dir, progress=False)
train, evaluate = [], []
for epoch in range(8):
    start = time.perf_counter()
    trainer._train_epoch(trainer.model, epoch)
    train.append(time.perf_counter() - start)
    start = time.perf_counter()
    trainer._evaluate("val")
    evaluate.append(time.perf_counter() - start)
label = sys.argv[1] if len(sys.argv) > 1 else "this code"
print(f"{label}: train epoch median {statistics.median(train):.3f} s, validation {statistics.median(evaluate):.3f} s")
