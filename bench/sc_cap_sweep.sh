# temporary: the contraction's register cap (TUMBLER_SC_MAXNREG), ours only; compile in parallel, then time each
mkdir -p $OUT
for v in 128 168 none; do for c in 0 1; do for p in fwd fwdbwd dbl; do
  echo "TUMBLER_SC_MAXNREG=${v/none/} python3 bench/kernels.py sc --cfg=$c --pass=$p --warm"; done; done; done \
  | timeout 240 xargs -P 14 -I{} sh -c '{}' > $OUT/sweep_warm.log 2>&1
echo "warm done"
for v in none 128 168; do
  echo "== TUMBLER_SC_MAXNREG=$v"; TUMBLER_SC_MAXNREG=${v/none/} timeout 120 python3 bench/kernels.py sc 2>&1 | grep "^symmetri"
done | tee $OUT/sweep_sc_cap.log
