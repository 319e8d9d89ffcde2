#!/usr/bin/env bash
# One device call for issue #6: the GPU tests of the engine and the whole model, then bench/md.py (ours and MACE).
# Carry .whl (ase, vesin wheels), .peers (peers.tar.xz) and .bench_data (3bpa_first.xyz); logs and JSON go to $OUT.
# Triton's cache is packed to $OUT/tcache.tgz; carry it back as .tcache/tcache.tgz to skip compiling next time.
#   bash bench/run_md_gpu.sh                  # tests + bench
#   NO_TESTS=1 MD_ARGS="--parts engine" bash bench/run_md_gpu.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 TRITON_CACHE_DIR=/tmp/tc
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/tc
T0=$(date +%s)
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.used --format=csv | tee "$OUT/gpu.txt"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
[ -f .tcache/tcache.tgz ] && tar xzf .tcache/tcache.tgz -C /tmp
(mkdir -p /tmp/peers && tar xJf .peers/peers.tar.xz -C /tmp/peers) &
# compile the bench model's kernels (one process per op) while the tests run; every autotune candidate is
# compiled here, and the timed run tunes alone (kernels/triton/autotune.py)
printf 'sh\nconv0\nconv1\nsc1\nsc0\n' | TUMBLER_AUTOTUNE=compile timeout ${WARM_S:-180} xargs -P 5 -I{} python3 bench/md.py --warm {} \
  > "$OUT/warm.log" 2>&1 &
if [ -z "${NO_TESTS:-}" ]; then
  timeout ${TESTS_S:-240} python3 -m pytest ${TESTS:-tests/dynamics/test_gpu.py tests/md/test_engine_gpu.py \
    tests/kernels/test_triton_model.py} -q -p no:warnings -p no:cacheprovider > "$OUT/gpu_tests.log" 2>&1 &
fi
wait
echo "tests and warm-up: $(( $(date +%s) - T0 )) s"; grep -i "error\|Traceback" "$OUT/warm.log" | head -5
[ -f "$OUT/gpu_tests.log" ] && tail -15 "$OUT/gpu_tests.log"
left=$(( ${TOTAL_S:-570} - ($(date +%s) - T0) - 30 ))
PYTHONPATH=/tmp/peers:$PYTHONPATH timeout $left python3 bench/md.py --budget-s $(( left - 20 )) \
  --bpa .bench_data/3bpa_first.xyz ${MD_ARGS:-} 2>&1 | grep -v "Warning\|warn(" | tee "$OUT/md.log" | tail -32
tar czf "$OUT/tcache.tgz" -C /tmp tc
echo "total: $(( $(date +%s) - T0 )) s"
