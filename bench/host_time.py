"""Host time of our conv passes: the part of a small pass's time that no kernel can win back.

    TRITON_INTERPRET=1 python bench/host_time.py   # CPU: Triton launches replaced by no-ops
    python bench/host_time.py --gpu                # GPU: real launches at the 128ch l0 20k bench size
    python bench/host_time.py --gpu --parts        # GPU: the issue time of each piece of the pass
    python bench/host_time.py --gpu --timeline     # GPU: where a fwd+bwd call's host time goes, stage by stage
    python bench/host_time.py --gpu --after-peers  # GPU: the calls before and after importing the peers
    python bench/host_time.py --gpu --after-profiler   # GPU: before and after one torch.profiler session
    ... --spec=1,3,3                               # the 128ch l1 config instead

Prints the best of 25 rounds of 300 calls, in us per call, for the forward, the forward+backward, and an
autograd Function of the same arity that does nothing (the floor of any op called through autograd). The GPU
mode issues the calls without syncing (host time, as long as the GPU keeps up), then prints the CUDA-event
median of one call as bench/kernels.py times it, and the Python functions that take the host time (cProfile).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kernels  # noqa: E402
from kernels.triton import conv as triton_conv  # noqa: E402


class _NoLaunch:
    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


class _Noop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, Y, R):
        ctx.shapes = h, Y, R
        return torch.empty(h.shape[0], 16, h.shape[2], device=h.device)

    @staticmethod
    def backward(ctx, g):
        return tuple(torch.empty_like(t) for t in ctx.shapes)


def best_us(fn, rounds=25, calls=300):
    for _ in range(50):
        fn()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t) / calls * 1e6)
    return best


def event_ms(fn):
    """CUDA-event median of one call, synced after each: bench/kernels.py's timer (loaded by path, since the
    name `kernels` is the package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("tumbler_bench_kernels", Path(__file__).with_name("kernels.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.med_ms(fn, warm=5, rep=200)


def host_profile(fn, calls=300, rows=22):
    import cProfile
    import pstats
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    torch.cuda.synchronize()
    pstats.Stats(prof).sort_stats("tottime").print_stats(rows)


def main():
    gpu = "--gpu" in sys.argv
    if not gpu:
        stub = _NoLaunch()  # one object: launch.py keys its binders by kernel
        for name in ("_recv_kernel", "_send_kernel", "_edge_kernel", "_sender_kernel"):
            setattr(triton_conv, name, lambda tab: stub)
    ops = kernels.get_ops("triton")
    # the 128ch l0 benchmark config (--spec=1,3,3: 128ch l1): 1000 nodes (100 on CPU) x 20 neighbours
    spec = kernels.ConvSpec(*next((map(int, a[7:].split(",")) for a in sys.argv if a.startswith("--spec=")), (0, 3, 3)))
    n, k, C = (1000 if gpu else 100), 20, 128
    dev = torch.device("cuda" if gpu else "cpu")
    graph = kernels.make_graph(torch.randint(0, n, (n * k,), device=dev),
                               torch.arange(n, device=dev).repeat_interleave(k), n)
    h = torch.randn(n, spec.dim_in, C, device=dev, requires_grad=True)
    Y = torch.randn(n * k, spec.dim_sh, device=dev, requires_grad=True)
    R = torch.randn(n * k, spec.num_paths, C, device=dev, requires_grad=True)
    g = torch.randn(n, spec.dim_out, C, device=dev)

    def fwd():
        with torch.no_grad():
            ops.edge_conv(h, Y, R, graph, spec)

    def fwdbwd():
        torch.autograd.grad(ops.edge_conv(h, Y, R, graph, spec), [h, Y, R], g)

    def floor():
        torch.autograd.grad(_Noop.apply(h, Y, R), [h, Y, R], g)

    def torch_mul():  # a plain torch op of the same arity through autograd, for scale
        torch.autograd.grad((h * 2).sum() + Y.sum() + R.sum(), [h, Y, R])

    def report(fns, tag=""):
        for fn in fns:
            line = f"{fn.__name__ + tag:<14} {best_us(fn):7.1f} us per call"
            if gpu:
                torch.cuda.synchronize()
                line += f"   event median {event_ms(fn) * 1e3:7.1f} us"
            print(line, flush=True)

    if "--after-peers" in sys.argv:  # the same calls before and after importing the peers (PYTHONPATH: the bundle)
        report((fwd, fwdbwd, floor, torch_mul))
        print("state before:", _torch_state(), flush=True)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import peers
        print("peers:", peers.available(), flush=True)
        print("state after: ", _torch_state(), flush=True)
        report((fwd, fwdbwd, floor, torch_mul), " (peers)")
        return
    if "--after-profiler" in sys.argv:  # the same calls before and after one torch.profiler session (CUDA)
        report((fwd, fwdbwd, floor, torch_mul))
        from torch.profiler import ProfilerActivity
        with torch.profiler.profile(activities=[ProfilerActivity.CUDA if gpu else ProfilerActivity.CPU]):
            fwdbwd()
        report((fwd, fwdbwd, floor, torch_mul), " (profiled)")
        return
    if "--timeline" in sys.argv:
        _timeline(h, Y, R, g, graph, spec)
        return
    if "--parts" in sys.argv:
        report(_parts(h, Y, R, g, graph, spec) + (fwd, fwdbwd, floor))
        return
    report((fwd, fwdbwd, floor) + ((torch_mul,) if gpu else ()))
    if gpu:
        host_profile(fwdbwd)


def _torch_state() -> dict:
    """Process-wide torch settings an imported package can change, and that cost host time per op."""
    c = torch._C
    import ctypes
    import threading
    flags = ctypes.c_uint(0)
    for lib in ("libcudart.so.13", "libcudart.so.12", "libcudart.so"):  # flags: Spin 1, Yield 2, BlockingSync 4
        try:
            ctypes.CDLL(lib).cudaGetDeviceFlags(ctypes.byref(flags))
            break
        except OSError:
            flags.value = 99  # no runtime library found
    return dict(threads=[t.name for t in threading.enumerate()], cuda_device_flags=flags.value,
                default_dtype=str(torch.get_default_dtype()), anomaly=torch.is_anomaly_enabled(),
                torch_function_modes=c._len_torch_function_stack(), dispatch_modes=c._len_torch_dispatch_stack(),
                deterministic=torch.are_deterministic_algorithms_enabled(),
                grad_mode=torch.is_grad_enabled(), profiler=torch.autograd.profiler._is_profiler_enabled,
                saved_tensor_hooks=c._autograd._top_saved_tensors_default_hooks(False) is not None)


def _timeline(h, Y, R, g, graph, spec, calls=3000):
    """Mean host time of each stage of a fwd+bwd call, ours, probe_direct_launch.py's minimal Function's (the same
    two launches from a bare Function) and the no-op Function's: the forward, the engine up to the backward's
    first line, the backward, the engine after it, and releasing the graph."""
    from kernels import autograd as ka
    ops = kernels.get_ops("triton")
    stamps = {}

    def timed(cls):
        real = cls.backward

        def backward(ctx, *grads):
            stamps["b0"] = time.perf_counter()
            res = real(ctx, *grads)
            stamps["b1"] = time.perf_counter()
            return res
        return real, backward

    import importlib.util
    probe_file = Path(__file__).with_name("probe_direct_launch.py")
    probe_spec = importlib.util.spec_from_file_location("tumbler_probe", probe_file)
    probe = importlib.util.module_from_spec(probe_spec)
    probe_spec.loader.exec_module(probe)
    minimal = probe._minimal(lambda: torch.autograd.grad(ops.edge_conv(h, Y, R, graph, spec), [h, Y, R], g)).function
    for name, cls, fwd in (("ours", ka.ConvForm, lambda: ops.edge_conv(h, Y, R, graph, spec)),
                           ("minimal", minimal, lambda: minimal.apply(h, Y, R)),
                           ("floor", _Noop, lambda: _Noop.apply(h, Y, R))):
        real, patched = timed(cls)
        cls.backward = staticmethod(patched)
        sums = [0.0] * 5
        try:
            for i in range(calls + 100):
                t0 = time.perf_counter()
                out = fwd()
                t1 = time.perf_counter()
                torch.autograd.grad(out, [h, Y, R], g)
                t4 = time.perf_counter()
                del out
                t5 = time.perf_counter()
                if i >= 100:
                    for k, v in enumerate((t1 - t0, stamps["b0"] - t1, stamps["b1"] - stamps["b0"], t4 - stamps["b1"],
                                           t5 - t4)):
                        sums[k] += v
        finally:
            cls.backward = staticmethod(real)
        print(f"timeline {name:<6}" + "".join(f" {k} {v / calls * 1e6:6.1f} us" for k, v in zip(
            ("forward", "to_backward", "backward", "after_backward", "release"), sums)), flush=True)


def _parts(h, Y, R, g, graph, spec):
    """The pieces of a fwd+bwd pass, each alone: allocation, the dY sum, each kernel launch through Triton's
    JITFunction, each launcher of kernels/triton/conv.py, the argument check, the forward through autograd."""
    from kernels import checks
    tab = triton_conv.table_for(spec.lmax_in, spec.lmax_sh, spec.lmax_out)
    n, _, C = h.shape
    E = Y.shape[0]
    hd, Yd, Rd = h.detach(), Y.detach(), R.detach()
    out = torch.empty(n, tab.K_out, C, device=h.device)
    be, bc, nw = triton_conv.recv_config(C)
    sbe, sbc, snw = triton_conv.node_config(C, tab.K_in)
    ncb = triton_conv.cdiv(C, sbc)
    dh, dR = torch.empty_like(hd), torch.empty_like(Rd)
    parts = torch.empty(ncb, E, tab.K_sh, device=h.device)

    def empty():
        torch.empty(n, tab.K_out, C, device=h.device)

    def dY_sum():
        parts.sum(0)

    def launch_recv():
        triton_conv._recv_kernel(tab)[(n, triton_conv.cdiv(C, bc))](
            hd, Yd, Rd, out, graph.recv_ptr, graph.recv_ptr, graph.senders, C, BE=be, BC=bc, USE_PERM=False,
            num_warps=nw, num_stages=3)

    def launch_sender():
        triton_conv._sender_kernel(tab)[(n, ncb)](
            hd, g, Yd, Rd, dh, parts, dR, graph.send_order, graph.send_ptr, graph.send_perm, graph.receivers, E, C,
            BE=sbe, BC=sbc,
            NEED_H=True, NEED_Y=True, NEED_R=True, num_warps=snw, num_stages=3)

    def conv_recv():
        triton_conv.conv_recv(hd, Yd, Rd, graph, tab)

    def conv_sender():
        triton_conv.conv_sender(hd, Yd, Rd, g, graph, tab, True, True)

    def check():
        checks.check_edge_conv(h, Y, R, graph, spec)

    def launch_empty_1arg():  # Triton's own cost per launch, and its part that grows with the arguments
        _empty_1arg[(1,)](hd)

    def launch_empty_17args():
        _empty_17args[(1,)](hd, g, Yd, Rd, dh, parts, dR, graph.send_ptr, graph.send_perm, graph.receivers, E, C,
                            BE=sbe, BC=sbc, NEED_H=True, NEED_Y=True, NEED_R=True)

    def torch_add():  # one ATen kernel launch, for scale
        torch.add(hd, hd, out=dh)

    def fwd_recorded():
        kernels.get_ops("triton").edge_conv(h, Y, R, graph, spec)

    ops = kernels.get_ops("triton")
    out = ops.edge_conv(h, Y, R, graph, spec)
    out_floor = _Noop.apply(h, Y, R)

    def bwd_only():  # the backward of one recorded forward, again and again
        torch.autograd.grad(out, [h, Y, R], g, retain_graph=True)

    def bwd_only_floor():
        torch.autograd.grad(out_floor, [h, Y, R], g, retain_graph=True)

    def bwd_only_no_kernels():  # our backward's Python and the engine, the sender launcher replaced
        real = triton_conv.conv_sender
        triton_conv.conv_sender = lambda *a: (dh, parts[0], dR)
        try:
            torch.autograd.grad(out, [h, Y, R], g, retain_graph=True)
        finally:
            triton_conv.conv_sender = real

    return (empty, dY_sum, launch_recv, launch_sender, conv_recv, conv_sender, check, fwd_recorded,
            launch_empty_1arg, launch_empty_17args, torch_add, bwd_only, bwd_only_floor, bwd_only_no_kernels)


@triton.jit
def _empty_1arg(X):
    pass


@triton.jit
def _empty_17args(H, G, Y, R, DH, DY, DR, PTR, PERM, RECV, E, C, BE: tl.constexpr, BC: tl.constexpr,
                  NEED_H: tl.constexpr, NEED_Y: tl.constexpr, NEED_R: tl.constexpr):
    pass


if __name__ == "__main__":
    main()
