#!/bin/bash
# Re-train the experiments of sessions 6 and 7 (README, "What blocks 94 %"), one after another: about
# 2 h 35 min on 2 CPU cores. Each changes one thing against the preset; compare with front_e10 or fast6.
set -e
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpeg.tar.gz}
train() { name=$1; shift; python train.py --data "$DATA" --arch fast "$@" --out "runs/$name" > "runs/$name.log" 2>&1; }
train wf_e10 --epochs 10 --set whiten_float32=True --set whiten_eps=5e-3  # vs front_e10: whitening noise floor
train f32_e10 --epochs 10 --precision float32                             # vs front_e10: bfloat16 while training
train t3 --set translate=3                                                # vs fast6: stronger augmentation
train air15 --set bn_momentum=0.6 --set lr_warmup=0.23 --set lr_end=0.07  # vs fast6: airbench94's own values
for quality in 50 30; do                                                  # vs front_e10: compressing further
    python results/requantize.py "$DATA" "runs/cifar10-q$quality.tar.gz" --quality "$quality"
    DATA="runs/cifar10-q$quality.tar.gz" train "q${quality}_e10" --epochs 10
done
python bench_frontier.py results/front_e10.json results/fast6.json \
    runs/wf_e10.json runs/f32_e10.json runs/t3.json runs/air15.json runs/q50_e10.json runs/q30_e10.json
