#!/usr/bin/env bash
# The probability-flow ODE of a trained dia_unet_s on both engines: NFE per sample, per-sample vs batch
# steps, at FID with its floor.
#
#     bash experiments/integrator/sampler_backends.sh OUT [RUN]
#
# Trains `dia-ode train --task diffusion --model dia_unet_s` (the task's recipe, seed 0) into OUT unless a
# trained RUN is given, then samples 1,000 images (seed 0) with dopri5 at rtol = atol = 1e-3 and 1e-4 on
# torchdiffeq, on dia_ode with one step for the batch, and on dia_ode with each sample's own steps
# (controllers i and pi), and prints one row per setting from the sample runs' summary.json. Run it on a
# quiet machine: each command uses every core.
set -euo pipefail
OUT=${1:?usage: sampler_backends.sh OUT [RUN]}
RUN=${2:-}
mkdir -p "$OUT"
if [[ -z "$RUN" ]]; then
  dia-ode train --task diffusion --model dia_unet_s --out "$OUT/train" --no-progress
  RUN=$(ls -d "$OUT"/train/*-train-dia_unet_s*digits | tail -1)
fi
for tol in 1e-3 1e-4; do
  dia-ode sample "$RUN" --sampler ode --rtol $tol --out "$OUT/samples" --no-progress --name "torchdiffeq-$tol"
  dia-ode sample "$RUN" --sampler ode --rtol $tol --backend dia_ode --batch-steps --out "$OUT/samples" \
    --no-progress --name "batch-i-$tol"
  dia-ode sample "$RUN" --sampler ode --rtol $tol --backend dia_ode --per-sample --out "$OUT/samples" \
    --no-progress --name "per-sample-i-$tol"
  dia-ode sample "$RUN" --sampler ode --rtol $tol --backend dia_ode --per-sample --controller pi \
    --out "$OUT/samples" --no-progress --name "per-sample-pi-$tol"
done
python - "$OUT/samples" <<'PY'
import json, sys
from pathlib import Path
print("| setting | NFE per sample | most | FID | floor | ratio | confident | seconds |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for run in sorted(Path(sys.argv[1]).iterdir()):
    row = json.loads((run / "summary.json").read_text())
    name = json.loads((run / "config.json").read_text()).get("name", run.name)
    q = row["quality"]
    print(f"| {name} | {row['nfe']:.1f} | {row.get('solver', {}).get('nfe_max', float('nan')):.0f} | {q['fid']:.3g} | {q['fid_floor']:.3g} | "
          f"{q['fid_ratio']:.2f} | {q['confident']:.3f} | {row.get('seconds', float('nan')):.1f} |")
PY
