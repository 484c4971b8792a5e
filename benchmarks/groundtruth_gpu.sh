#!/usr/bin/env bash
# Extend the committed ground truth with more seeds on one CUDA GPU, in time-limited slices.
#   benchmarks/groundtruth_gpu.sh SEEDS TIME_LIMIT_S [FASHION_MNIST_DIR] [JOBS]
# Workers share the GPU (CUDA MPS when the driver allows it). Runs already in
# benchmarks/groundtruth/resnet48-fmnist.runs/ are kept, so each call trains only what is
# missing and a slice cut by TIME_LIMIT_S leaves whole architectures; call it again to go on.
# With $OUT set (a device machine), the runs and the outputs are copied there too.
# Seeds 0-2 of the committed file took ~360 s on an H200 with 14 jobs (~2 s per run).
set -uo pipefail
seeds=${1:?number of seeds, e.g. 8}
limit=${2:?time limit in seconds}
data=$(realpath "${3:-/usr/share/datasets/fashion-mnist}")
cores=$(nproc)  # before OMP_NUM_THREADS is set: GNU nproc honours it
jobs=${4:-$(( cores - 2 ))}
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD:$PWD/trainer PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
gt=benchmarks/groundtruth/resnet48-fmnist
if nvidia-cuda-mps-control -d 2>/dev/null; then echo "CUDA MPS on"; fi
python3 -m stepshot.cli groundtruth --space resnet48-fmnist --archs benchmarks/archs/resnet48-fmnist-64.json \
  --out $gt.json --seeds "$seeds" --epochs 5 --batch-size 256 --lr 0.1 --device cuda --jobs "$jobs" \
  --data "$data" --time-limit "$limit" \
  --note "Seeds 3-$((seeds - 1)): benchmarks/groundtruth_gpu.sh on one $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1) ($cores CPU cores, $jobs worker processes sharing the GPU), in time-limited slices."
rc=$?
echo quit | nvidia-cuda-mps-control 2>/dev/null
if [ -n "${OUT:-}" ]; then tar -czf "$OUT/groundtruth.tar.gz" $gt.json $gt.summary.json $gt.runs 2>/dev/null; fi
exit $rc  # 3: the time limit cut it; call again to continue
