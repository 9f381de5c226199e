#!/bin/bash
# Re-train the experiments of session 6 (README, "What blocks 94 %"), one after another: about 1 h 25 min
# on 2 CPU cores. Each changes one thing against the preset; compare with front_e10 or fast6.
set -e
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpeg.tar.gz}
train() { name=$1; shift; python train.py --data "$DATA" --arch fast "$@" --out "runs/$name" > "runs/$name.log" 2>&1; }
train wf_e10 --epochs 10 --set whiten_float32=True --set whiten_eps=5e-3  # vs front_e10: whitening noise floor
train f32_e10 --epochs 10 --precision float32                             # vs front_e10: bfloat16 while training
train t3 --set translate=3                                                # vs fast6: stronger augmentation
python bench_frontier.py results/front_e10.json results/fast6.json runs/wf_e10.json runs/f32_e10.json runs/t3.json
