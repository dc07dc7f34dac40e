#!/usr/bin/env bash
# N1 (experiments/README.md): 1 vs 2 threads, and two jobs on one 2-core machine with and without --threads.
set -euo pipefail
out="${1:-/tmp/dia-ode-threads}"
python "$(dirname "$0")/agreement.py"                       # one training step, gradients compared
for t in 1 2; do dia-ode train --threads "$t" --out "$out/quick-start" --no-progress --name "t$t" | tail -1; done
for mode in default one; do                                   # two 5-epoch trainings at once
  threads=(); [ "$mode" = one ] && threads=(--threads 1)
  start=$(date +%s.%N)
  for job in 1 2; do dia-ode train --epochs 5 "${threads[@]}" --out "$out/$mode" --no-progress --name "j$job" >/dev/null & done
  wait
  echo "$mode: both jobs done in $(echo "$(date +%s.%N) - $start" | bc) s wall"
  for run in "$out/$mode"/*/; do python -c "import json; print('  train_seconds', json.load(open('$run/summary.json'))['train_seconds'])"; done
done
dia-ode train --epochs 5 --out "$out/alone" --no-progress | tail -1
