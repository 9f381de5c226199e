#!/bin/bash
# Issue #21's GPU runs, one after another: the `fast` preset as shipped (its time and accuracy on a GPU), then
# the wide airbench96-style recipe. Keras on whatever backend KERAS_BACKEND names (jax on a machine without
# TensorFlow); sidecars and logs land in $RUNS (default runs/). Each run stops after $LIMIT seconds at most.
set -u
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpeg.tar.gz}
RUNS=${RUNS:-runs}
LIMIT=${LIMIT:-600}
mkdir -p "$RUNS"
train() { name=$1; shift; timeout "$LIMIT" python3 train.py --data "$DATA" --arch fast "$@" --out "$RUNS/$name" \
          2>&1 | grep -v '^[0-9]*/[0-9]* - ' > "$RUNS/$name.log"; tail -4 "$RUNS/$name.log"; }
# airbench96's changes to fast: the same recipe as `--arch wide` (these runs predate that preset's name)
WIDE=(--set "widths=(128,512,512)" --set depth=3 --set cutout=12 --set translate=4 --set lr=1.17)
for run in ${GPU_RUNS:-gpu_fast wide_e40}; do
  case $run in
    gpu_fast) train gpu_fast ;;                            # the preset as shipped: 15 epochs
    gpu_fast_seed1) train gpu_fast_seed1 --seed 1 ;;
    gpu_fast_cut8) train gpu_fast_cut8 --set cutout=8 ;;                        # augmentation that costs no
    gpu_fast_cut12_t4) train gpu_fast_cut12_t4 --set cutout=12 --set translate=4 ;; # CPU time per epoch
    gpu_muon_cut8) train gpu_muon_cut8 --arch muon --set cutout=8 ;;
    wide_e*) train "$run" "${WIDE[@]}" --epochs "${run#wide_e}" ;;   # wide_e40: airbench96's 40 epochs
    wide_s1_e*) train "$run" "${WIDE[@]}" --epochs "${run#wide_s1_e}" --seed 1 ;;
    *) echo "unknown run $run"; exit 2 ;;
  esac
done
