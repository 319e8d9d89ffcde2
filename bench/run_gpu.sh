#!/usr/bin/env bash
# One device call: fill Triton's kernel cache in parallel, time ours vs the peers, then the GPU tests.
# Usage (repo root, on the GPU machine): bash bench/run_gpu.sh [bench args...]; logs and JSON go to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
T0=$(date +%s)
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.used --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
if [ -f .peers/peers.tar.xz ]; then mkdir -p /tmp/peers && tar xJf .peers/peers.tar.xz -C /tmp/peers & fi
# 1. compile every kernel the timed run needs, in parallel processes (each one pass of one config)
jobs=(); for c in 0 1 2 3 4; do for p in fwd fwdbwd dbl; do jobs+=("conv --cfg=$c --pass=$p"); done; done
for c in 0 1; do for p in fwd fwdbwd dbl; do jobs+=("sc --cfg=$c --pass=$p"); done; done
jobs+=("sh --cfg=0")
printf '%s\n' "${jobs[@]}" | timeout 200 xargs -P 12 -I{} sh -c 'python3 bench/kernels.py {} --warm' > "$OUT/warm.log" 2>&1
echo "warm stage: $(( $(date +%s) - T0 )) s, rc $?"; grep -i "error\|Traceback" "$OUT/warm.log" | head -5
wait
# 2. timed run, ours and the peers in one process (PEERS=cueq,oeq skips e3nn, never the best peer)
PYTHONPATH=/tmp/peers TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 timeout 220 python3 bench/kernels.py --peers "$@" 2>&1 \
  | grep -v "Warning\|warn(" | tee "$OUT/bench.log" | tail -45
echo "bench done: $(( $(date +%s) - T0 )) s"
# 3. GPU tests at real sizes, with what time is left
left=$(( 575 - ($(date +%s) - T0) ))
if [ $left -gt 40 ] && [ -z "${NO_TESTS:-}" ]; then
  timeout $left python3 -m pytest tests/kernels/test_triton_sh.py tests/kernels/test_triton_conv.py \
    tests/kernels/test_triton_contraction.py tests/kernels/test_triton_model.py -q -n 8 -p no:cacheprovider \
    > "$OUT/tests.log" 2>&1; echo "tests rc $?"; tail -25 "$OUT/tests.log"
fi
echo "total: $(( $(date +%s) - T0 )) s"
