#!/usr/bin/env bash
# The prepared GPU check, for a session that is lent a device machine (the `device` tool):
#
#     run(command="bash benchmarks/gpu_check.sh", timeout_s=540)
#
# It needs no install there (the machine's python3 holds a CUDA torch; adaloss runs from src/)
# and no dataset (digits, built in). Each part has its own time limit and its own log under $OUT
# (here: ./gpu_check_out), and a failing part does not stop the next; the last lines printed
# are one "part: rc" summary. Not yet run on a GPU: the parts' limits add up to 530 s, inside the
# 540 s asked for above.
#   env.txt              torch, CUDA, device name
#   tests.log            the CUDA tests (skipped on CPU machines)
#   step_cost_cuda.json  benchmarks/step_cost.py on the GPU: exact/fast/double-backward ratios
#                        (CUDA-synchronised timings), torch.cuda.max_memory_allocated per step
#   train.log            `adaloss train` on CUDA, AdaLFL, then killed-and-resumed equality
#   nccl.log             torchrun, 1 rank, NCCL backend (one GPU: NCCL refuses 2 ranks on one device)
set -u
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu STEPS=120: a dry run of the train parts here
STEPS=${STEPS:-400}
summary=()
part() {  # part NAME LIMIT_S LOG COMMAND...
    local name=$1 limit=$2 log=$3
    shift 3
    local t0=$SECONDS
    timeout "$limit" "$@" >"$log" 2>&1
    local rc=$?
    summary+=("$name: rc=$rc ($((SECONDS - t0)) s)")
    echo "== $name rc=$rc ($((SECONDS - t0)) s)"; tail -n 5 "$log"
}

part env 30 "$OUT/env.txt" $PY -c "
import torch, adaloss
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())
print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
print('nccl', torch.cuda.nccl.version() if torch.cuda.is_available() else None)
print('adaloss', adaloss.__file__)"

part tests 90 "$OUT/tests.log" $PY -m pytest -p no:cacheprovider -rs \
    tests/learners/test_adalfl_core.py tests/learners/test_ala_core.py -k cuda

part step_cost 200 "$OUT/step_cost_cuda.err" sh -c \
    "$PY benchmarks/step_cost.py --device cuda --models mlp lenet5 --rounds 5 > '$OUT/step_cost_cuda.json'"

run_dir=/tmp/adaloss_gpu_check
rm -rf "$run_dir" "$run_dir.b" /tmp/adaloss_gpu_nccl
part train 120 "$OUT/train.log" sh -c "
set -e
args='method=adalfl device=$DEVICE steps=$STEPS method_args.init_steps=20 checkpoint_every=$((STEPS / 4)) eval_every=$((STEPS / 4)) progress=off'
$PY -m adaloss train \$args run_dir=$run_dir
# the same run killed (SIGKILL) once a checkpoint exists, then resumed: it must end in the same final metrics
$PY -m adaloss train \$args run_dir=$run_dir.b & pid=\$!
while kill -0 \$pid 2>/dev/null && ! [ -e $run_dir.b/checkpoints/last.pt ]; do sleep 0.05; done
kill -9 \$pid 2>/dev/null && echo killed || echo 'finished before the kill (too fast to test resume)'
wait \$pid || true
$PY -m adaloss train \$args run_dir=$run_dir.b --resume
$PY - <<EOF
import json
a = json.load(open('$run_dir/summary.json'))['final']
b = json.load(open('$run_dir.b/summary.json'))['final']
print('uninterrupted', a)
print('resumed      ', b)
print('resume reproduces the run:', a == b)
EOF"

part nccl 90 "$OUT/nccl.log" $PY -m torch.distributed.run --standalone --nproc_per_node=1 -m adaloss train \
    method=adalfl device=$DEVICE steps=100 method_args.init_steps=20 run_dir=/tmp/adaloss_gpu_nccl progress=off

echo "== summary"
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
