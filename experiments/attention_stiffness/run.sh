#!/usr/bin/env bash
# E1: are per-block attentions correlated across layers, and do step sizes follow stiffness?
# Trains se_resnet56 and dia_resnet56 on digits (and Fashion-MNIST when Debian's dataset-fashion-mnist
# is installed), then runs correlate, stiffness and stepsize on each run and prints one table.
# Usage: bash experiments/attention_stiffness/run.sh [OUT] [FASHION_EPOCHS]
set -euo pipefail
out=${1:-runs/attention_stiffness}
fashion_epochs=${2:-1}
here=$(dirname "$0")

datasets=(digits)
[ -d /usr/share/datasets/fashion-mnist ] && datasets+=(fashion-mnist)
for dataset in "${datasets[@]}"; do
  epochs=30
  [ "$dataset" = fashion-mnist ] && epochs=$fashion_epochs
  for model in se_resnet56 dia_resnet56; do
    dia-ode train --model "$model" --dataset "$dataset" --epochs "$epochs" --no-progress --out "$out/train"
  done
done
for run in "$out"/train/*-train-*; do
  dia-ode correlate "$run" --no-progress --out "$out/analysis"
  dia-ode stepsize "$run" --no-progress --out "$out/analysis"
  dia-ode stiffness "$run" --no-progress --out "$out/analysis"
done
python "$here/summarize.py" "$out"
