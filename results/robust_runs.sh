#!/bin/bash
# The served-model issue's runs after fast_kd (results/fast_kd*.json), one after another on a CPU: the same
# distillation with AugMix on half the training images, its int8 export and benchmarks, then the open-set protocol
# of bench_ood on the shipped model, stored in its sidecar and card. About 1 h on 2 CPU cores. Sidecars land in runs/ (copy them here to publish).
set -e
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpeg.tar.gz}
PY=${PY:-.venv/bin/python}
mkdir -p runs
$PY train.py --data "$DATA" --arch fast_oe --init model/cifar10_cnn.h5 --teacher model/best.h5 \
    --set outlier_exclude=noise --set augmix=0.5 --epochs 4 --out runs/fast_kd_augmix > runs/fast_kd_augmix.log 2>&1
$PY train.py export --model runs/fast_kd_augmix.h5 --data "$DATA" --formats int8 >> runs/fast_kd_augmix.log 2>&1
$PY benchmarks/bench_robustness.py --model runs/fast_kd_augmix_int8.tflite --data "$DATA" --write > runs/fast_kd_augmix_robustness.txt 2>&1
$PY benchmarks/bench_ood.py --model runs/fast_kd_augmix_int8.tflite --data "$DATA" --write > runs/fast_kd_augmix_ood.txt 2>&1
$PY benchmarks/bench_ood.py --model model/cifar10_cnn_int8.tflite --data "$DATA" --open-set --write > runs/open_set.txt 2>&1
