#!/usr/bin/env bash
# One device call: fill Triton's kernel cache in parallel, time ours (and the peers), optionally a tile
# sweep and the GPU tests, then print the short table last. Usage (repo root, on the GPU machine), logs and JSON to $OUT:
#   PEERS=cueq,oeq bash bench/run_gpu.sh            # everything, ours and the peers
#   PARTS="sh conv" NO_PEERS=1 SWEEP=1 NO_TESTS=1 bash bench/run_gpu.sh
#   SWEEP=1 SWEEP_ARGS="--sweep=TUMBLER_CONV_NODE_CFG --cfg=0,1,2" ...   (some knobs, some configs)
# Carry .tcache, .peers and .whl (ASE and vesin wheels, for the whole-model test).
#   TCACHE_OUT=1 ...   also writes Triton's kernel cache to $OUT/tcache.tgz (carry it back as .tcache/tcache.tgz)
set -uo pipefail
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1 TRITON_CACHE_DIR=/tmp/tc
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/tc
[ -f .tcache/tcache.tgz ] && tar xzf .tcache/tcache.tgz -C /tmp  # Triton's cache from an earlier run, if carried
PARTS=${PARTS:-"sh conv sc"}
T0=$(date +%s)
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.used --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
# the whole-model GPU test builds its structures with ASE: install the carried wheels (.whl), if any
ls .whl/*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD
if [ -z "${NO_PEERS:-}" ] && [ -f .peers/peers.tar.xz ]; then mkdir -p /tmp/peers && tar xJf .peers/peers.tar.xz -C /tmp/peers & fi
# 1. compile every kernel the timed runs need, in parallel processes (each one pass of one config)
jobs=()
for part in $PARTS; do
  case $part in
    conv) for c in 0 1 2 3 4; do for p in fwd fwdbwd dbl; do jobs+=("python3 bench/kernels.py conv --cfg=$c --pass=$p --warm"); done; done ;;
    sc) for c in 0 1; do for p in fwd fwdbwd dbl; do jobs+=("python3 bench/kernels.py sc --cfg=$c --pass=$p --warm"); done; done ;;
    sh) jobs+=("python3 bench/kernels.py sh --cfg=0 --warm") ;;
  esac
done
if [ -n "${SWEEP:-}" ]; then mapfile -t -O ${#jobs[@]} jobs < <(python3 bench/kernels.py --sweep-warm-jobs ${SWEEP_ARGS:-}); fi
if [ -n "${QUICK_TESTS:-}" ]; then jobs+=("TUMBLER_AUTOTUNE=0 python3 -m pytest $QUICK_TESTS -q -p no:cacheprovider > $OUT/quick_tests.log 2>&1; echo quick tests rc \$? >> $OUT/quick_tests.log"); fi
# (TUMBLER_AUTOTUNE=compile: every autotune candidate is compiled here, in parallel; the timed run below then
# tunes without compiling, alone on the machine)
printf '%s\n' "${jobs[@]}" | TUMBLER_AUTOTUNE=compile timeout ${WARM_S:-200} xargs -P 14 -I{} sh -c '{}' > "$OUT/warm.log" 2>&1
echo "warm stage: $(( $(date +%s) - T0 )) s"; grep -i "error\|Traceback" "$OUT/warm.log" | head -5
[ -f "$OUT/quick_tests.log" ] && tail -3 "$OUT/quick_tests.log"
wait
# 2. timed run, ours and the peers in one process (PEERS=cueq,oeq skips e3nn, never the best peer)
args=$PARTS; [ -z "${NO_PEERS:-}" ] && args="$args --peers"
PYTHONPATH=/tmp/peers:${PYTHONPATH:-} TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 timeout ${BENCH_S:-400} python3 bench/kernels.py $args 2>&1 \
  | grep -v "Warning\|warn(" | tee "$OUT/bench.log" | tail -40
echo "bench done: $(( $(date +%s) - T0 )) s"
[ -n "${TCACHE_OUT:-}" ] && tar czf "$OUT/tcache.tgz" -C /tmp tc
if [ -n "${SWEEP:-}" ]; then
  timeout ${SWEEP_S:-150} python3 bench/kernels.py --sweep ${SWEEP_ARGS:-} 2>&1 | grep "^sweep" | tee "$OUT/sweep.log"
  echo "sweep done: $(( $(date +%s) - T0 )) s"
fi
# 3. GPU tests at real sizes, with what time is left
left=$(( 575 - ($(date +%s) - T0) ))
if [ $left -gt 40 ] && [ -z "${NO_TESTS:-}" ]; then
  timeout $left python3 -m pytest tests/kernels/test_triton_sh.py tests/kernels/test_triton_conv.py \
    tests/kernels/test_triton_contraction.py tests/kernels/test_triton_autotune.py tests/kernels/test_triton_model.py \
    -q -n 8 -p no:cacheprovider > "$OUT/tests.log" 2>&1; echo "tests rc $?"; tail -25 "$OUT/tests.log"
fi
# 4. the short table last: this run's comparison, and what the checks said
ls "$OUT"/kernels-*.json >/dev/null 2>&1 && python3 bench/kernels.py --combine "$OUT"/kernels-*.json
[ -f "$OUT/tests.log" ] && echo "GPU tests: $(grep -E '[0-9]+ (passed|failed)' "$OUT/tests.log" | tail -1)"
echo "total: $(( $(date +%s) - T0 )) s"
