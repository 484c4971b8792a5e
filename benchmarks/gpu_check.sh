#!/usr/bin/env bash
# GPU smoke check and throughput figure, for a machine with one CUDA GPU and no cluster:
#   1. `stepshot run` of a tiny schedule: every stage goes through torchrun with the NCCL
#      backend on the GPU, then the snapshot and the evaluation on the GPU;
#   2. a preemption on the GPU: SIGTERM to `stepshot run` mid-epoch (the trainer writes
#      preempted.pt), then the same command resumes from it to the end;
#   3. with 2 GPUs, a 2-node stage's group restart over NCCL (benchmarks/group_restart_check.sh);
#   4. benchmarks/speed.py on the GPU (super-net path vs static subnet, images/s).
# Usage: benchmarks/gpu_check.sh [FASHION_MNIST_DIR] [WORKDIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
data=$(realpath "${1:-/usr/share/datasets/fashion-mnist}")
work=${2:-$(mktemp -d)}
mkdir -p "$work"
python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device")'
cat > "$work/gpu-check.yaml" <<YAML
apiVersion: stepshot.dev/v1alpha1
kind: SupernetTraining
metadata: {name: gpu-check}
spec:
  space: resnet48-fmnist
  dataset: {kind: fashion-mnist, path: $data, trainLimit: 4096}
  resources: {nodes: 1, procsPerNode: 1, gpusPerNode: 1}
  training: {batchSize: 256, seed: 0, randomSubnets: 2}
  oneShot: {epochs: 1, lr: 0.1, warmupEpochs: 0}
  fewShot: {mode: grouped, groups: [2], epochs: 1, lr: 0.01}
  evaluation:
    archs: $here/benchmarks/archs/resnet48-fmnist-64.json
    calibrationBatches: 2
    evalImages: 1000
YAML
start=$(date +%s)
python3 -m stepshot.cli run "$work/gpu-check.yaml" --workdir "$work/run"
echo "gpu-check: stepshot run (torchrun + NCCL, 2 stages, 64-arch evaluation) took $(( $(date +%s) - start )) s"
# One GPU cannot host two NCCL ranks, so the all-reduce path runs as a world of one under torchrun.
cat > "$work/nccl_check.py" <<'PY'
import torch, torch.distributed as dist
from stepshot_trainer.train import average_gradients
dist.init_process_group("nccl")
torch.cuda.set_device(0)
p = torch.nn.Parameter(torch.zeros(1000, device="cuda")); p.grad = torch.arange(1000.0, device="cuda")
average_gradients([p], dist.get_world_size())
assert torch.equal(p.grad.cpu(), torch.arange(1000.0)), "all-reduce changed a world-of-one gradient"
print(f"gpu-check: NCCL {torch.cuda.nccl.version()} all-reduce ok on {torch.cuda.get_device_name(0)}")
dist.destroy_process_group()
PY
python3 -m torch.distributed.run --standalone --nproc-per-node 1 "$work/nccl_check.py"
# A 2-node stage's group restart over NCCL (one GPU per node; checked with gloo in the node tests):
# node 1 killed after epoch 1, a replacement joins, the group resumes to the end.
if [ "$(python3 -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  bash "$here/benchmarks/group_restart_check.sh" "$data" "$work/group-restart"
else
  echo "gpu-check: group restart over NCCL skipped: it needs 2 GPUs (benchmarks/group_restart_check.sh)"
fi
# Preemption on the GPU: SIGTERM once the first epoch's checkpoint exists, then resume.
sed -e 's/name: gpu-check/name: gpu-preempt/' -e 's/trainLimit: 4096/trainLimit: 60000/' \
  -e 's/oneShot: {epochs: 1/oneShot: {epochs: 2/' "$work/gpu-check.yaml" > "$work/gpu-preempt.yaml"
python3 -m stepshot.cli run "$work/gpu-preempt.yaml" --workdir "$work/preempt" & runner=$!
until [ -e "$work/preempt/oneshot/checkpoints/epoch-0001.pt" ]; do sleep 0.2; done
sleep 2; kill -TERM "$runner"; wait "$runner" || true
test -e "$work/preempt/oneshot/checkpoints/preempted.pt"
python3 -m stepshot.cli run "$work/gpu-preempt.yaml" --workdir "$work/preempt" 2>&1 | tee "$work/preempt.log" >/dev/null
grep -q "resumed from preempted.pt" "$work/preempt.log" && echo "gpu-check: SIGTERM mid-epoch on the GPU, resumed from preempted.pt"
python3 "$here/benchmarks/speed.py" --device cuda --batch 256 --steps 20 --warmup 5 --json
python3 "$here/benchmarks/speed.py" --device cuda --batch 1024 --steps 20 --warmup 5 --json
