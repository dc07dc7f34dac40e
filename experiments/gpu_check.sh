#!/usr/bin/env bash
# The CUDA paths in one go, on a machine with a GPU (CI and the project's CPU machines have none):
# the gpu-marked tests (tests/test_cuda.py), the quick start on cuda and on the CPU, the ViT and a
# continuous-depth model on cuda, the train-step benchmark on cuda (eager fp32, then the ResNet-56 and
# ResNet-164 families in bf16 and compiled), and the whole suite under the machine's own torch. Logs go
# to $OUT (default gpu-check/), the settings benches' run directories to $OUT/bench. About 5 minutes on
# one H200 without the settings benches, which add one compilation per compiled model and setting (8).
#   bash experiments/gpu_check.sh
set -uo pipefail
OUT=${OUT:-gpu-check}
RUNS=${RUNS:-/tmp/gpu-check-runs}  # outside $OUT: only the logs come back
mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
# the machine's torch stays: install the project alone, offline
$PY -m pip install -q --no-deps --no-build-isolation -e . >/tmp/dia-ode-install.log 2>&1 || export PYTHONPATH=$PWD
step() {  # step NAME SECONDS COMMAND...: one timed command, its log in $OUT/NAME.log
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "== $name: rc $rc, $((SECONDS - start)) s"
    tail -n 4 "$OUT/$name.log"
}
$PY -c "import torch, torchdiffeq; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU', 'torchdiffeq', torchdiffeq.__version__)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
step gpu-tests 240 $PY -m pytest -m gpu -rs -p no:cacheprovider tests/test_cuda.py
step quickstart-cuda 240 $PY -m dia_ode train --device cuda --no-progress --out "$RUNS"
step quickstart-cpu 240 $PY -m dia_ode train --device cpu --no-progress --out "$RUNS"
step vit-cuda 180 $PY -m dia_ode train --model dia_vit_tiny --epochs 5 --device cuda --no-progress --out "$RUNS"
step odenet-cuda 180 $PY -m dia_ode train --model dia_odenet --epochs 3 --device cuda --no-progress --out "$RUNS"
step bench-cuda 180 $PY -m dia_ode bench train-step --device cuda --out "$RUNS"
# the settings benches, one process per run so its ratios share one machine state: rounds 3 and steps 5
# keep the timing to seconds; compiling each compiled (model, precision) in the warm-up is most of their
# time, so SE stays eager and ResNet-164 is compiled in one mode only (8 compilations in all).
SETTINGS_BENCH=(bench train-step --device cuda --batch-size 128 --image-size 32 --in-channels 3 --rounds 3 --steps 5
                --out "$OUT/bench")
step bench-resnet56-settings 420 $PY -m dia_ode "${SETTINGS_BENCH[@]}" --models resnet56,dia_resnet56,se_resnet56 \
    --precision fp32,bf16
step bench-resnet56-compile 420 $PY -m dia_ode "${SETTINGS_BENCH[@]}" --models resnet56,dia_resnet56 \
    --precision fp32,bf16 --compile
for family in resnet56,dia_resnet56 resnet164,dia_resnet164; do
    step "bench-${family%%,*}-reduce-overhead" 300 $PY -m dia_ode "${SETTINGS_BENCH[@]}" --models "$family" \
        --compile --compile-mode reduce-overhead
done
step bench-resnet164-bf16 180 $PY -m dia_ode "${SETTINGS_BENCH[@]}" --models resnet164,dia_resnet164 --precision fp32,bf16
step suite 300 $PY -m pytest -q -p no:cacheprovider -n 12 --ignore tests/test_install.py
for s in "$RUNS"/*/summary.json; do
    echo "$s"; $PY -c "import json,sys; d=json.load(open(sys.argv[1])); \
print({k: d[k] for k in ('model','device','epochs','test_acc','seconds_per_epoch','peak_memory_mb') if k in d})" "$s"
done
