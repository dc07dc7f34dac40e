"""Where a train step's time goes: torch.profiler over 3 SGD steps of each model (after 2 warm-up steps),
one thread, batch 64 of 32x32x3, the benches' own batch and step (studies/bench_train_step.py).

    python experiments/throughput/profile_steps.py [MODEL ...]     # default: se_resnet56 dia_resnet56
"""

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from dia_ode.studies.bench_train_step import bench_batch_and_models, bench_optimizer, train_step

models = sys.argv[1:] or ["se_resnet56", "dia_resnet56"]
torch.set_num_threads(1)
x, y, built = bench_batch_and_models(models, batch_size=64, image_size=32, in_channels=3)
for name, model in built.items():
    optimizer = bench_optimizer(model)
    for _ in range(2):
        train_step(model, optimizer, x, y)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            train_step(model, optimizer, x, y)
    print(name)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
