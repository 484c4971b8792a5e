#!/usr/bin/env bash
# A 2-node stage's group restart, as on a cluster where one node's pod dies mid-stage: two
# torchrun agents with the pods' own settings (PET_*: c10d rendezvous, --max-restarts) train the
# one-shot stage; after the first epoch's checkpoint, node 1's agent and worker are SIGKILLed
# (as a killed pod) and a new agent joins under the same settings (as the Job's replacement pod).
# Node 0's agent must restart the worker group, both must meet in the next rendezvous round,
# resume from epoch-0001.pt and finish every planned step.
#
# With CUDA the trainer uses NCCL (one GPU per node: needs 2 GPUs, benchmarks/gpu_check.sh runs
# it when there are); on CPU it uses gloo, which is how tests/node/test_multinode.py meets it.
# Usage: benchmarks/group_restart_check.sh [FASHION_MNIST_DIR] [WORKDIR]
set -euo pipefail
data=$(realpath "${1:-/usr/share/datasets/fashion-mnist}")
work=${2:-$(mktemp -d)}
mkdir -p "$work" && work=$(realpath "$work")
python=${PYTHON:-python3}
gpus=$("$python" -c 'import torch; print(torch.cuda.device_count())')
if [ "$gpus" -ge 2 ]; then images=16384 batch=256; else images=1024 batch=64; fi
steps_per_epoch=$(( images / (batch * 2) ))
cat > "$work/restart.yaml" <<YAML
apiVersion: stepshot.dev/v1alpha1
kind: SupernetTraining
metadata: {name: restart-check}
spec:
  space: resnet48-fmnist
  dataset: {kind: fashion-mnist, path: $data, trainLimit: $images}
  resources: {nodes: 2, procsPerNode: 1}
  training: {batchSize: $batch, seed: 0, randomSubnets: 1}
  oneShot: {epochs: 3, lr: 0.1, warmupEpochs: 0}
  fewShot: {mode: none}
  metricsPort: 0
YAML
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The pods' settings (stepshot/manifests/training.py). TORCH_DISABLE_SHARE_RDZV_TCP_STORE=0
# shows why the pods set it: the replacement then waits for a key the surviving rank 0 never
# writes, and both agents time out (torch 2.13).
export PET_NNODES=2 PET_NPROC_PER_NODE=1 PET_RDZV_BACKEND=c10d PET_RDZV_ENDPOINT=127.0.0.1:$port \
  PET_RDZV_ID=restart-check PET_MAX_RESTARTS=3 TORCH_DISABLE_SHARE_RDZV_TCP_STORE=${TORCH_DISABLE_SHARE_RDZV_TCP_STORE:-1} \
  OMP_NUM_THREADS=1 STEPSHOT_NO_PROGRESS=1 PYTHONUNBUFFERED=1
agent() {  # node log: one torchrun agent in a session of its own (its workers follow it); sets $pid
  local node=$1 log=$2
  CUDA_VISIBLE_DEVICES=$([ "$gpus" -ge 2 ] && echo "$node" || echo "") \
    setsid "$python" -m torch.distributed.run -m stepshot.cli train "$work/restart.yaml" --stage oneshot \
    --workdir "$work/run" > "$log" 2>&1 &
  pid=$!
}
cleanup() {  # every agent of this check and its workers
  local p
  for p in ${node0:-} ${node1:-} ${node1b:-}; do kill -9 "$p" $(ps -o pid= --ppid "$p") 2>/dev/null || true; done
}
trap cleanup EXIT
agent 0 "$work/node0.log"; node0=$pid
# Node 0 hosts the rendezvous store, as in the pods (only pod <job>-0 has the endpoint's address;
# here both agents match 127.0.0.1 and the first to bind hosts it): node 1 starts once it listens.
"$python" - "$port" <<'PY'
import socket, sys, time
for _ in range(600):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close(); sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit("node 0's rendezvous store did not listen within 60 s")
PY
agent 1 "$work/node1.log"; node1=$pid
deadline=$((SECONDS + 600))
until [ -e "$work/run/oneshot/checkpoints/epoch-0001.json" ]; do
  [ $SECONDS -lt $deadline ] || { echo "group-restart: no first checkpoint in 600 s" >&2; exit 1; }
  sleep 0.2
done
# Node 1's pod dies: agent and worker at once (torchrun starts its workers in sessions of their own).
kill -9 "$node1" $(ps -o pid= --ppid "$node1")
agent 1 "$work/node1b.log"; node1b=$pid    # the Job's replacement pod
rc=0
timeout 600 tail --pid "$node0" -f /dev/null || rc=$?    # a hung group fails here, bounded
[ "$rc" = 0 ] && { wait "$node0" || rc=$?; }
[ "$rc" = 0 ] && { timeout 60 tail --pid "$node1b" -f /dev/null && wait "$node1b" || rc=$?; }
[ "$rc" = 0 ] || { echo "group-restart: FAILED (rc $rc); logs in $work" >&2; tail -n 30 "$work"/node0.log "$work"/node1b.log >&2; exit 1; }
grep -qh "resumed from epoch-0001.pt" "$work/node0.log" "$work/node1b.log"
"$python" - "$work/run/oneshot/checkpoints/epoch-0003.json" $((3 * steps_per_epoch)) <<'PY'
import json, sys
step = json.load(open(sys.argv[1]))["step"]
assert step == int(sys.argv[2]), f"final checkpoint at step {step}, planned {sys.argv[2]}"
PY
echo "group-restart: node 1 killed after epoch 1, group restarted and resumed to step $((3 * steps_per_epoch)) ($([ "$gpus" -ge 2 ] && echo NCCL || echo gloo))"
