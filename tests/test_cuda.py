"""The CUDA paths: models on the GPU compute what they compute on the CPU, a run trained on the GPU
resumes on the CPU, torchrun trains on the GPU, and more torchrun processes than GPUs are one usage error
(NCCL itself needs two GPUs, one per rank: not testable on a one-GPU machine).

Skipped where torch sees no GPU (CI, this project's CPU machines); run them on a machine with one:
`python -m pytest -m gpu`. experiments/gpu_check.sh runs these and the CUDA commands in one go.
"""

import json
import math
import subprocess
import sys

import pytest
import torch

from dia_ode.engine import TrainConfig, resume_training, run_training
from dia_ode.models import create_model
from dia_ode.rundir import CHECKPOINT, load_checkpoint, read_jsonl, start_run

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")]


@pytest.mark.parametrize("name, options, shape", [
    ("dia_resnet20", {"base_width": 8}, (4, 3, 32, 32)),
    ("se_resnet20", {"base_width": 8}, (4, 3, 32, 32)),
    ("dia_vit_tiny", {"dim": 32, "depth": 2, "heads": 2}, (4, 3, 32, 32)),
    ("dia_odenet", {}, (4, 1, 8, 8)),
])
def test_a_model_on_the_gpu_computes_what_it_computes_on_the_cpu(name, options, shape):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=shape[1], **options).eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        on_cpu = model(x)
        on_gpu = model.cuda()(x.cuda()).cpu()
    # TF32 may be on for cuDNN convolutions: agreement to a few 1e-3, not to float32 roundoff
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-2, atol=5e-3)


def test_a_run_trained_on_the_gpu_resumes_on_the_cpu(tmp_path):
    from dataclasses import asdict

    cfg = TrainConfig(model="dia_resnet20", epochs=1, batch_size=128, device="cuda", model_options={"base_width": 4})
    run_dir = start_run(tmp_path, "train", {"command": "train", **asdict(cfg)}, argv=["test"])
    assert run_training(cfg, run_dir, progress=False)["device"] == "cuda"
    assert load_checkpoint(run_dir / CHECKPOINT)["epoch"] == 1  # mapped to the CPU by default
    resumed = resume_training(run_dir, epochs=2, device="cpu", progress=False)
    assert resumed["device"] == "cpu" and resumed["epochs"] == 2
    assert [row["epoch"] for row in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2]
    assert math.isfinite(resumed["test_loss"])


def _torchrun_cuda(out, nproc):
    args = ["--model", "vit_tiny", "--model-option", "dim=16", "--model-option", "depth=1", "--model-option",
            "heads=2", "--batch-size", "32", "--no-augment", "--epochs", "1", "--device", "cuda",
            "--no-progress", "--out", str(out)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "dia_ode", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_torchrun_with_one_process_per_gpu_trains_on_the_gpu(tmp_path):
    done = _torchrun_cuda(tmp_path, 1)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 1 and summary["device"] == "cuda"
    assert math.isfinite(summary["test_loss"])


def test_more_ranks_than_gpus_is_one_line_naming_the_option(tmp_path):
    done = _torchrun_cuda(tmp_path, torch.cuda.device_count() + 1)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "one process per GPU (--nproc_per_node)" in line]
    assert lines and all(line.startswith("Error: Invalid value for --device:") for line in lines), done.stderr[-3000:]
