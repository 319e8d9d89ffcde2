"""Kernel benchmark on one GPU: our Triton ops against cuEquivariance, OpenEquivariance and e3nn, one process.

    python bench/kernels.py --peers cueq,oeq          # the README's kernel table (about 5-8 minutes on an H200)
    python bench/kernels.py conv --cfg 3 --pass fwd   # one op, one config, one pass
    python bench/kernels.py --table bench/results/kernels-NVIDIA-H200-2026-11-22T092134.json   # print a saved run

What it measures, float32, for each op and config (see docs/performance.md, "Kernels"):
  ops        spherical harmonics l<=3 (20k, 2M edges); the conv (gather, CG tensor product with per-edge radial
             weights, scatter-sum) at 32ch l<=3 20k, 128ch l0 20k, 128ch l<=1 20k and 300k, 64ch l<=2 150k edges;
             the symmetric contraction 128ch l<=3 -> l<=1 and -> l0, correlation 3, 10 elements, 5k nodes.
  passes     fwd (no grad); fwdbwd (gradients of every input for a random cotangent); dbl, "force-train"
             (SH(vec) -> op -> E; F = dE/dvec with create_graph; a loss on F backpropagated to the weights; for the
             contraction, the gradient of its input instead of F).
  timings    synced call: median CUDA-event time of 40 calls, each followed by a synchronize (mostly host time
             for small passes; the 20k-edge conv rows alternate ours and the peers over 3 rounds); GPU: the sum
             of the call's kernel times (torch.profiler); graph: one call captured in a CUDA graph, median of
             7 x 20 replays (the GPU's time without launch gaps, as the MD engine runs the model); peak memory;
             the memory floor (every input read once, every output written once) and the achieved GB/s.
Peers (optional): MACE's wrappers (mace-torch) around cuequivariance-torch, openequivariance and e3nn; a peer
that does not import is listed as unavailable and skipped. Before timing, every kernel the run needs is compiled
in parallel worker processes (--warm-jobs; TUMBLER_AUTOTUNE=compile), so the timed process only tunes tiles.
Writes bench/results/kernels-<GPU>-<UTC time>.json (and $OUT/ when set) and prints the table last.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from result_file import header, write_result  # noqa: E402 (bench/ is still on the path here)

# this file is bench/kernels.py: drop its folder from the path so `import kernels` is the package
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import kernels  # noqa: E402


def _peers():
    import importlib.util
    if "tumbler_bench_peers" not in sys.modules:
        spec = importlib.util.spec_from_file_location("tumbler_bench_peers", _HERE / "peers.py")
        sys.modules["tumbler_bench_peers"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["tumbler_bench_peers"])
    return sys.modules["tumbler_bench_peers"]

DEV = torch.device("cuda")
F4 = 4  # bytes per float32
CONV = [  # (name, lmax_in, channels, nodes, neighbours per node): the peers' baseline configs
    ("32ch_l3_20k", 3, 32, 1000, 20),
    ("128ch_l0_20k", 0, 128, 1000, 20),
    ("128ch_l1_20k", 1, 128, 1000, 20),
    ("128ch_l1_300k", 1, 128, 10000, 30),
    ("64ch_l2_150k", 2, 64, 5000, 30),
]
SC = [("128ch_l3in_l1out_5k", 3, 1, 128, 5000, 10), ("128ch_l3in_l0out_5k", 3, 0, 128, 5000, 10)]
SH = [20_000, 2_000_000]


OPTS = {"cfg": None, "pass": None, "warm": False, "profile": False, "graph": True}


def _select(cfgs, quick):
    if OPTS["cfg"] is not None:
        return [cfgs[i] for i in OPTS["cfg"]]
    return cfgs[:1] if quick else cfgs


def _passes(pairs):
    return [pair for pair in pairs if OPTS["pass"] is None or pair[0] in OPTS["pass"].split(",")]


def _measure(r, pairs, measure, floor):
    """pairs: (pass, fn) or (pass, fn, graph_fn), graph_fn the same pass in a form a CUDA graph can capture."""
    for p, fn, *graph_fn in _passes(pairs):
        t0 = time.time()
        fn()
        torch.cuda.synchronize()
        r[p + "_first_s"] = time.time() - t0  # includes compilation (unless the cache was warm)
        if OPTS["warm"]:
            continue
        r.update((p + k, v) for k, v in measure(fn, *graph_fn).items())
        r[p + "_floor_MB"] = floor[p] / 1e6
        r[p + "_GBps"] = floor[p] / 1e6 / r[p]
        if OPTS["profile"]:
            profile(fn, f"{r['op']} {r['cfg']} {p}")


def profile(fn, title, runs=5):
    """Per-kernel GPU time of fn (sum over `runs` calls, so divide by runs for one call)."""
    from torch.profiler import ProfilerActivity
    with torch.profiler.profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(runs):
            fn()
        torch.cuda.synchronize()
    print(f"--- profile: {title} ({runs} runs)")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))


def gpu_ms(fn, runs=10):
    """GPU time of one call: the sum of its kernels' times (torch.profiler), without the host time between
    launches that the CUDA-event time of a small pass is made of."""
    from torch.profiler import ProfilerActivity
    with torch.profiler.profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(runs):
            fn()
        torch.cuda.synchronize()
    return sum(e.self_device_time_total for e in prof.key_averages()) / runs / 1e3


LAST_HOST_MS = [float("nan")]  # host part of the last med_ms call (median of its reps)


def med_ms(fn, warm=10, rep=40):
    """Median CUDA-event time of one synced call. Also keeps, in LAST_HOST_MS, the median host time from the
    first event's record to the second's: if a pass's event time varies with it, the variation is the host's."""
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts, hs = [], []
    for _ in range(rep):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        a.record()
        fn()
        b.record()
        hs.append((time.perf_counter() - t0) * 1e3)
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    LAST_HOST_MS[0] = float(np.median(hs))
    return float(np.median(ts))


def peak_mib(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def graph_ms(fn, reps=20, rounds=7):
    """Median CUDA-event time of one call replayed from a CUDA graph: fn (warm) is captured once, then
    `rounds` times `reps` replays are timed back to back. This is the GPU's time for the call without the
    host's launch gaps, as our MD engine runs it (potential/static_step.py captures the whole evaluation,
    autograd included). NaN when fn cannot be captured; the reason is in LAST_GRAPH_ERROR."""
    LAST_GRAPH_ERROR[0] = None
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up on the capture's stream (what torch.cuda.graph asks for)
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        g.replay()
        torch.cuda.synchronize()
    except Exception as e:  # a peer whose call syncs or allocates outside torch cannot be captured
        torch.cuda.synchronize()
        LAST_GRAPH_ERROR[0] = repr(e)[:200]
        return float("nan")
    ts = []
    for _ in range(rounds):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(reps):
            g.replay()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b) / reps)
    del g
    torch.cuda.empty_cache()
    return float(np.median(ts))


LAST_GRAPH_ERROR = [None]


def measure(fn, graph_fn=None) -> dict:
    """The figures of one pass, by key suffix: "" median ms of synced calls (CUDA events), "_host" their host
    part, "_gpu" the sum of the call's kernel times, "_peak_MiB" peak memory, "_graph" ms of one call replayed
    from a CUDA graph (of graph_fn if given; OPTS["graph"]; "_graph_error" if it could not be captured)."""
    out = {"": med_ms(fn), "_host": LAST_HOST_MS[0], "_gpu": gpu_ms(fn), "_peak_MiB": peak_mib(fn)}
    if OPTS["graph"]:
        out["_graph"] = graph_ms(graph_fn or fn)
        if LAST_GRAPH_ERROR[0]:
            out["_graph_error"] = LAST_GRAPH_ERROR[0]
    return out


def graph(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    recv = torch.arange(n).repeat_interleave(k)
    send = torch.randint(0, n, (n * k,), generator=g)
    return send.to(DEV), recv.to(DEV)


def conv_floor(N, E, K_in, K_sh, K_out, P, C):
    h, y, r, o = N * K_in * C * F4, E * K_sh * F4, E * P * C * F4, N * K_out * C * F4
    idx = E * 8 + (N + 1) * 8
    return {"fwd": h + y + r + o + idx,                         # read h, Y, R; write out
            "fwdbwd": 2 * (h + y + r + o) + 2 * idx + E * 8,   # + read g; write dh, dY, dR
            "dbl": E * 12 + 2 * (h + r) + o + 2 * idx + E * 8}  # read vec, h, R, g; write dh, dR


ROUNDS = 3  # the launch-bound configs (20k edges) are timed in alternating rounds, ours then each peer


def over_rounds(per_round: list) -> list:
    """One row per backend from alternating rounds (lists of rows, same backends in the same order): each
    figure's median over the rounds, the rounds' values under "<figure>_rounds". The host's speed drifts by up
    to 2x between minutes on these machines, and host time is most of a small pass: alternating gives ours and
    the peers the same conditions."""
    if len(per_round) == 1:
        return per_round[0]
    out = []
    for rows in zip(*per_round):
        row = dict(rows[0])
        for p in ("fwd", "fwdbwd", "dbl"):
            for k in (p, p + "_host", p + "_gpu", p + "_graph"):
                vals = [r.get(k) for r in rows]
                if all(isinstance(v, float) for v in vals):
                    row[k + "_rounds"] = vals
                    row[k] = float(np.median(vals))
            if p in row and p + "_floor_MB" in row:
                row[p + "_GBps"] = row[p + "_floor_MB"] / row[p]
        out.append(row)
    return out


def conv_passes(ops, spec, gr, x, vec, w, Yd, g) -> tuple:
    """The conv's three passes on node features x, edge vectors vec (harmonics Yd, detached), weights w and a
    cotangent g: fwd (no grad), fwdbwd (gradients of x, Yd, w) and dbl (force training: SH(vec) -> conv; forces
    with create_graph; a loss on them backpropagated to x and w)."""
    def fwd():
        with torch.no_grad():
            return ops.edge_conv(x, Yd, w, gr, spec)

    def fwdbwd():
        torch.autograd.grad(ops.edge_conv(x, Yd, w, gr, spec), [x, Yd, w], g)

    def dbl():
        Yv = ops.spherical_harmonics(vec, 3)
        (f,) = torch.autograd.grad((ops.edge_conv(x, Yv, w, gr, spec) * g).sum(), vec, create_graph=True)
        torch.autograd.grad((f * f).sum(), [x, w])
    return fwd, fwdbwd, dbl


def bench_conv(ops, peers_on, measure, quick):
    rows = []
    for name, lmax_in, C, n, k in _select(CONV, quick):
        spec = kernels.ConvSpec(lmax_in, 3, 3)
        send, recv = graph(n, k)
        gr = kernels.make_graph(send, recv, n)
        E = send.shape[0]
        torch.manual_seed(0)
        x = torch.randn(n, spec.dim_in, C, device=DEV, requires_grad=True)
        vec = torch.randn(E, 3, device=DEV, requires_grad=True)
        w = torch.randn(E, spec.num_paths, C, device=DEV, requires_grad=True)
        Yd = ops.spherical_harmonics(vec, 3).detach().requires_grad_(True)
        g = torch.randn(n, spec.dim_out, C, device=DEV)

        fwd, fwdbwd, dbl = conv_passes(ops, spec, gr, x, vec, w, Yd, g)
        floor = conv_floor(n, E, spec.dim_in, spec.dim_sh, spec.dim_out, spec.num_paths, C)
        per_round = []
        for _ in range(ROUNDS if peers_on and E <= 20_000 and not OPTS["warm"] else 1):
            r = dict(op="conv", cfg=name, backend="tumbler", nodes=n, edges=E, channels=C, paths=spec.num_paths)
            _measure(r, (("fwd", fwd), ("fwdbwd", fwdbwd), ("dbl", dbl)), measure, floor)
            got = [r]
            if peers_on:
                got += [dict(op="conv", cfg=name, nodes=n, edges=E, channels=C, **pr)
                        for pr in _peers().conv_rows(lmax_in, C, send, recv, n, peers_on, measure)]
            per_round.append(got)
        for row in over_rounds(per_round):
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def bench_sh(ops, peers_on, measure, quick):
    rows = []
    for E in _select(SH, quick):
        vec = torch.randn(E, 3, device=DEV)
        r = dict(op="sh_l3", cfg=f"{E}", backend="tumbler", edges=E)
        vg = vec.clone().requires_grad_(True)
        gy = torch.randn(E, 16, device=DEV)
        floor = {"fwd": E * (12 + 16 * F4), "fwdbwd": E * (2 * 12 + 2 * 16 * F4)}
        _measure(r, (("fwd", lambda: ops.spherical_harmonics(vec, 3)),
                     ("fwdbwd", lambda: torch.autograd.grad(ops.spherical_harmonics(vg, 3), vg, gy))), measure, floor)
        if OPTS["warm"]:
            continue
        rows.append(r)
        print(json.dumps(r), flush=True)
        if peers_on:
            peers = _peers()
            for pr in peers.sh_rows(vec, peers_on, measure):
                rows.append(dict(op="sh_l3", cfg=f"{E}", edges=E, **pr))
    return rows


def bench_sc(ops, peers_on, measure, quick):
    rows = []
    for name, lmax_in, lmax_out, C, n, n_el in _select(SC, quick):
        spec = kernels.ContractionSpec(lmax_in, lmax_out, 3)
        g = torch.Generator().manual_seed(0)
        species = torch.randint(0, n_el, (n,), generator=g).to(DEV)
        x = torch.randn(n, spec.dim_in, C, generator=g).to(DEV).requires_grad_(True)
        W = torch.randn(n_el, spec.num_weights, C, generator=g).to(DEV).requires_grad_(True)
        go = torch.randn(n, spec.dim_out, C, generator=g).to(DEV)
        # every call makes its species plan (one launch; synced calls also read its range check back), as the
        # peers' calls turn their one-hot attributes into indices
        def passes(sc):
            def fwd():
                with torch.no_grad():
                    sc(x, species, W, spec)

            def fwdbwd():
                torch.autograd.grad(sc(x, species, W, spec), [x, W], go)

            def dbl():
                (gx,) = torch.autograd.grad((sc(x, species, W, spec) * go).sum(), x, create_graph=True)
                torch.autograd.grad((gx * gx).sum(), [W])
            return fwd, fwdbwd, dbl
        xb, ob, wb = n * spec.dim_in * C * F4, n * spec.dim_out * C * F4, n_el * spec.num_weights * C * F4
        floor = {"fwd": xb + ob + wb + n * 8, "fwdbwd": 2 * xb + 2 * ob + 2 * wb + n * 8,
                 "dbl": xb + ob + 2 * wb + n * 8}
        r = dict(op="symmetric_contraction", cfg=name, backend="tumbler", nodes=n, channels=C, elements=n_el,
                 weights=spec.num_weights)
        _measure(r, tuple(zip(("fwd", "fwdbwd", "dbl"), passes(ops.symmetric_contraction))), measure, floor)
        rows.append(r)
        print(json.dumps(r), flush=True)
        if peers_on:
            peers = _peers()
            for pr in peers.sc_rows(lmax_in, lmax_out, C, species, n_el, 3, peers_on, measure):
                rows.append(dict(op="symmetric_contraction", cfg=name, nodes=n, channels=C, **pr))
                print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows) -> str:
    """One line per (op, cfg, pass): ours, best peer, ratio (peer/ours: > 1 means we are faster), memory; then
    the same comparison by CUDA-graph replay (the GPU's time without the host's launch gaps)."""
    nan = float("nan")
    out = [f"{'op':<8} {'config':<22} {'pass':<7} {'ours ms':>9} {'GPU ms':>7} {'best peer':>16} {'x faster':>8} "
           f"{'our MiB':>8} {'peer MiB':>8} {'floor MB':>9} {'GB/s':>7} {'graph ms':>9} {'best peer graph':>16} "
           f"{'x graph':>7}"]
    keys = []
    for r in rows:
        if (r["op"], r["cfg"]) not in keys:
            keys.append((r["op"], r["cfg"]))
    for op, cfg in keys:
        group = [r for r in rows if r["op"] == op and r["cfg"] == cfg]
        ours = next((r for r in group if r.get("backend") == "tumbler"), None)
        if ours is None:
            continue
        for p in ("fwd", "fwdbwd", "dbl"):
            if p not in ours:
                continue
            peers = [r for r in group if r is not ours and p in r]
            best = min(peers, key=lambda r: r[p]) if peers else None
            bp = f"{best[p]:.3f} {best['backend']}" if best else "-"
            ratio = f"{best[p] / ours[p]:.2f}" if best else "-"
            pm = f"{best.get(p + '_peak_MiB', nan):.0f}" if best else "-"
            pg = p + "_graph"
            graphed = [r for r in peers if r.get(pg, nan) == r.get(pg, nan) and pg in r]
            bg = min(graphed, key=lambda r: r[pg]) if graphed else None
            out.append(f"{op[:8]:<8} {cfg:<22} {p:<7} {ours[p]:>9.3f} {ours.get(p + '_gpu', nan):>7.3f} "
                       f"{bp:>16} {ratio:>8} "
                       f"{ours.get(p + '_peak_MiB', nan):>8.0f} {pm:>8} "
                       f"{ours.get(p + '_floor_MB', nan):>9.1f} {ours.get(p + '_GBps', nan):>7.0f} "
                       f"{ours.get(pg, nan):>9.3f} {(f'{bg[pg]:.3f} ' + bg['backend']) if bg else '-':>16} "
                       f"{(f'{bg[pg] / ours[pg]:.2f}') if bg and pg in ours else '-':>7}")
    return "\n".join(out)




def show(paths) -> str:
    """Table from saved JSON files: for each (op, cfg) the latest row of each backend (files in order)."""
    rows: dict = {}
    devices = set()
    for path in paths:
        d = json.loads(Path(path).read_text())
        devices.add(f"{d['device']}, {d['date'][:10]}")
        for r in d["rows"]:
            if "backend" in r:
                rows[(r["op"], r["cfg"], r["backend"])] = r
    return "=== " + "; ".join(sorted(devices)) + "  (x faster = best peer ms / ours ms)\n" + table(list(rows.values()))


PARTS = {"sh": SH, "conv": CONV, "sc": SC}


def warm_up(parts, args) -> None:
    """Compile every kernel the timed run needs, one worker process per (op, config, pass), in parallel: Triton
    compiles on the CPU, one kernel at a time per process. TUMBLER_AUTOTUNE=compile compiles every tile candidate
    too, so the timed process tunes without compiling."""
    jobs = []
    for part in parts:
        cfgs = args.cfg if args.cfg is not None else range(1 if args.quick else len(PARTS[part]))
        for c in cfgs:
            for ps in ((args.passes,) if args.passes else ("fwd", "fwdbwd") if part == "sh" else ("fwd", "fwdbwd", "dbl")):
                jobs.append([sys.executable, __file__, part, "--cfg", str(c), "--pass", ps, "--warm"])
    env = {**os.environ, "TUMBLER_AUTOTUNE": os.environ.get("TUMBLER_AUTOTUNE", "compile")}
    t0 = time.perf_counter()

    def run(cmd):
        try:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.warm_timeout)
        except subprocess.TimeoutExpired:
            return f"{' '.join(cmd[2:])}: still compiling after {args.warm_timeout} s"
        return None if r.returncode == 0 else f"{' '.join(cmd[2:])}: exit {r.returncode}: {r.stderr[-300:]}"

    with ThreadPoolExecutor(args.warm_jobs) as pool:
        failed = [f for f in pool.map(run, jobs) if f]
    print(f"warm-up: {len(jobs)} processes, {time.perf_counter() - t0:.0f} s" + "".join("\n  " + f for f in failed),
          flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("parts", nargs="*", metavar="{sh,conv,sc}", help="ops to time (default: all three)")
    p.add_argument("--peers", nargs="?", const="e3nn,cueq,oeq", default="",
                   help="time these peers too (default list when given alone: %(const)s)")
    p.add_argument("--quick", action="store_true", help="first config of each op only")
    p.add_argument("--cfg", type=lambda v: [int(i) for i in v.split(",")], help="config indices, e.g. 0,3")
    p.add_argument("--pass", dest="passes", help="passes, e.g. fwd,fwdbwd (default: all)")
    p.add_argument("--profile", action="store_true", help="also print each pass's GPU kernels (torch.profiler)")
    p.add_argument("--no-graph", action="store_true", help="skip the CUDA-graph replay timing")
    p.add_argument("--no-warm-up", action="store_true", help="skip the parallel compilation before timing")
    p.add_argument("--warm-jobs", type=int, default=max(1, min(14, (os.cpu_count() or 2) - 2)),
                   help="worker processes of the warm-up (default %(default)s)")
    p.add_argument("--warm-timeout", type=float, default=300, help="seconds per warm-up process")
    p.add_argument("--warm", action="store_true", help="internal: run the selected passes once, untimed, and exit")
    p.add_argument("--table", nargs="+", metavar="JSON", help="print the table of saved runs and exit")
    args = p.parse_args(argv)
    if args.table:
        print(show(args.table))
        return
    parts = args.parts or list(PARTS)
    if set(parts) - set(PARTS):
        p.error(f"unknown ops {sorted(set(parts) - set(PARTS))}: choose from sh, conv, sc")
    OPTS.update(cfg=args.cfg, warm=args.warm, profile=args.profile, graph=not args.no_graph)
    OPTS["pass"] = args.passes
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU (the reference ops on the CPU are the tests' oracle, not a benchmark)")
    if not args.warm and not args.no_warm_up:
        warm_up(parts, args)
    peers_on, info = [], {}
    if args.peers and not args.warm:
        info = _peers().available()
        peers_on = [k for k, v in info.items() if v is True and k in args.peers.split(",")]
    ops = kernels.get_ops("triton")
    res = header(torch.cuda.get_device_name(0))
    res.update(triton=__import__("triton").__version__, argv=sys.argv[1:], peers=info, rows=[])
    if not args.warm:
        print(json.dumps({k: v for k, v in res.items() if k != "rows"}), flush=True)
    for part, fn in (("sh", bench_sh), ("conv", bench_conv), ("sc", bench_sc)):
        if part in parts:
            res["rows"] += fn(ops, peers_on, measure, args.quick)
    if args.warm:
        return
    from kernels.triton import autotune
    res["autotune"] = autotune.choices()  # the tiles the timed calls ran with (candidates[0]: the defaults)
    path = write_result("kernels", res)
    print(f"\n=== {res['device']}, {res['date']}  (x faster = best peer ms / ours ms; {path})")
    print(table(res["rows"]))


if __name__ == "__main__":
    main()
