#!/bin/bash
# Re-train the current `fast` recipe's frontier runs one after another (never two at once on a CPU), then
# print the tables: about 2 h 15 min on 2 CPU cores. Sidecars land in runs/ (copy them here to publish).
set -e
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpeg.tar.gz}
train() { name=$1; shift; python train.py --data "$DATA" --arch fast "$@" --out "runs/$name" > "runs/$name.log" 2>&1; }
train front_e5 --epochs 5      # the 10-minute budget
train front_e10 --epochs 10    # the 20-minute budget
train fast6                    # the preset as shipped: 15 epochs, the 30-minute budget
train front_e22 --epochs 22    # the 45-minute budget
train fast6_seed1 --seed 1     # the shipped recipe's seed spread
python bench_frontier.py runs/front_e5.json runs/front_e10.json runs/fast6.json runs/front_e22.json runs/fast6_seed1.json
