"""Edge conv on generated Triton kernels: CG tables -> kernels -> launchers (no autograd here).

Shapes: h [N, K_in, C], Y [E, K_sh], R [E, P, C], g [N, K_out, C]; graph = kernels.Graph
(receiver-sorted edges, recv_ptr [N+1], send_perm [E], send_ptr [N+1], all int64).
`ConvTable` is our adapter over kernels.cg's path tables: the flat list of non-zero entries
(k1, k2, k3, p, w) in global component indices, so that
    out[i, k3, c] = sum_{e -> i} sum_entries w * R[e, p, c] * h[send_e, k1, c] * Y[e, k2].
The three launchers conv_recv, conv_send and conv_edge are the partial derivatives of that 4-linear
form (conv_codegen.py); conv_sender fuses conv_send with conv_edge for backward passes that need both.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import torch

from .codegen import cached_hash, cdiv, load_source, next_pow2
from .conv_codegen import edge_kernel_source, node_kernel_source, sender_kernel_source
from . import autotune
from .launch import launch
from .tuning import knob, knobs_changed  # noqa: F401 (knobs_changed: for the tests and bench/kernels.py)


@dataclass(frozen=True)
class ConvTable:
    K_in: int
    K_sh: int
    K_out: int
    P: int
    entries: tuple  # ((k1, k2, k3, p, w), ...) float64 coefficients

    def __hash__(self):
        return cached_hash(self, self.K_in, self.K_sh, self.K_out, self.P, self.entries)

    @cached_property
    def key(self) -> str:  # names the generated kernels and the autotune problems
        import hashlib
        return hashlib.sha1(repr((self.K_in, self.K_sh, self.K_out, self.P, self.entries)).encode()).hexdigest()[:12]


@lru_cache(maxsize=None)
def table_for(lmax_in: int, lmax_sh: int, lmax_out: int) -> ConvTable:
    """Flatten kernels.cg's sparse path tables for ConvSpec(lmax_in, lmax_sh, lmax_out)."""
    from .cg_adapter import conv_entries
    return ConvTable((lmax_in + 1) ** 2, (lmax_sh + 1) ** 2, (lmax_out + 1) ** 2, *conv_entries(lmax_in, lmax_sh, lmax_out))


@lru_cache(maxsize=None)
def _recv_kernel(tab: ConvTable):
    terms = [(k3, k1, k2, p, w) for k1, k2, k3, p, w in tab.entries]
    name = f"conv_recv_{tab.key}"
    return load_source(node_kernel_source(name, terms, tab.K_in, tab.K_sh, tab.P, tab.K_out), name)


@lru_cache(maxsize=None)
def _send_kernel(tab: ConvTable):
    terms = [(k1, k3, k2, p, w) for k1, k2, k3, p, w in tab.entries]
    name = f"conv_send_{tab.key}"
    return load_source(node_kernel_source(name, terms, tab.K_out, tab.K_sh, tab.P, tab.K_in), name)


@lru_cache(maxsize=None)
def _edge_kernel(tab: ConvTable):
    name = f"conv_edge_{tab.key}"
    return load_source(edge_kernel_source(name, tab.entries, tab.K_in, tab.K_sh, tab.K_out, tab.P), name)


def _sender_kernel(tab: ConvTable):
    return _sender_kernel_in_form(tab, sender_by_component(tab.K_in))


@lru_cache(maxsize=None)
def _sender_kernel_in_form(tab: ConvTable, by_component: bool):
    name = f"conv_sender_{tab.key}{'_c' if by_component else ''}"
    return load_source(sender_kernel_source(name, tab.entries, tab.K_in, tab.K_sh, tab.K_out, tab.P, by_component),
                       name)


def sender_by_component(K_in: int) -> bool:
    """Whether the sender pass's loop takes one g component at a time (conv_codegen._sender_terms_by_component)
    or loads them all first (_by_output). TUMBLER_CONV_SENDER_FORM: auto | component | output."""
    form = knob("TUMBLER_CONV_SENDER_FORM", "auto")
    return K_in > 1 if form == "auto" else form == "component"


def _forced(env: str, C: int):
    """The tile a knob forces ("BE,BC,num_warps", BC capped at the channels), or None."""
    value = knob(env)
    if not value:
        return None
    be, bc, nw = (int(x) for x in value.split(","))
    return be, min(bc, next_pow2(C)), nw


def _fitting(default: tuple, tiles, C: int, per_thread: int) -> list:
    """The default, then those of the tiles (channels capped at next_pow2(C)) that give each thread at most
    `per_thread` tile elements and every thread at least one; duplicates dropped."""
    out = [default]
    for be, bc, nw in tiles:
        bc = min(bc, next_pow2(C))
        if 32 * nw <= be * bc <= 32 * nw * per_thread and (be, bc, nw) not in out:
            out.append((be, bc, nw))
    return out


def recv_config(C: int) -> tuple[int, int, int]:
    """(BE, BC, num_warps) of the receiver-segment kernel (the forward conv): the measured default.

    H200 sweep (docs/performance.md): two edges per tile and two channels per thread beat the 4 x 32 / 4 warp
    tile of the other segment kernels: 128 ch l<=1 at 300k edges 0.605 ms with (2, 32, 1) vs 0.716;
    64 ch l<=2 at 150k 0.306 ms with (2, 64, 2) vs 0.402. Fewer threads per edge compute the per-edge
    coupling coefficients (sum_b w Y[e, b]) fewer times over."""
    bc = 32 if C >= 128 else min(next_pow2(C), 64)
    return 2, bc, max(1, 2 * bc // 64)


def recv_candidates(C: int, K_out: int) -> list:
    """Autotune candidates of the receiver kernel: each thread holds K_out accumulators per tile element, so
    at most 32 accumulators per thread (two elements at l<=3 outputs)."""
    return _fitting(recv_config(C), [(4, 32, 4), (2, 64, 2), (2, 32, 1), (1, 32, 1)], C, max(1, 32 // K_out))


def node_config(C: int, K_acc: int) -> tuple[int, int, int]:
    """(edges per tile BE, channels per tile BC, num_warps) for the sender-segment kernels, which accumulate
    K_acc = K_in components per node: the measured default.

    Chosen from sm_90 register reports and H200 sweeps (docs/performance.md).
    K_acc > 1: one tile element per thread (4 edges x 32 channels, 4 warps) keeps the K accumulators and the
    gathered components in registers; more elements per thread spill or halve occupancy (128 ch l<=1 fwd+bwd
    at 20k edges, GPU time: 4 x 32 0.196 ms, 8 x 32 0.232, 4 x 64 0.216, 4 x 128 0.225).
    K_acc == 1 (an l=0 input, the first layer): little is live per element, so each thread takes four
    channels of one edge (4 x 128 at 128 ch). The loads vectorise, each edge's coupling coefficients and dY
    reductions are shared by four channels, and one channel block needs no dY sum over blocks: 128 ch l0
    fwd+bwd 0.074 ms, against 0.089 with 8 x 32 and 0.120 with 4 x 32.
    """
    if K_acc == 1:
        bc = min(next_pow2(C), 128)
        return min(16, 512 // bc), bc, 4
    bc = min(next_pow2(C), 32)
    return 4, bc, max(1, min(4, 4 * bc // 32))


def node_candidates(C: int, K_acc: int) -> list:
    """Autotune candidates of the sender-segment kernels: up to four elements per thread when one component
    is accumulated, one otherwise (the register reports above)."""
    if K_acc == 1:
        return _fitting(node_config(C, 1), [(8, 64, 4), (8, 32, 4), (16, 32, 8)], C, 4)
    return _fitting(node_config(C, K_acc), [(8, 32, 8), (2, 32, 2), (4, 64, 8)], C, 1)


def _stages() -> int:
    """Software-pipelining depth of the segment loops (Triton's num_stages; 3 is its default)."""
    return int(knob("TUMBLER_CONV_STAGES", "3"))


def fuse_sender(need_Y: bool) -> bool:
    """Whether a backward that needs dh with dY/dR takes the fused sender pass (conv_sender) or the
    separate conv_send and conv_edge. TUMBLER_CONV_SENDER: all | noY | off."""
    mode = knob("TUMBLER_CONV_SENDER", "all")
    return mode == "all" or (mode == "noY" and not need_Y)


def edge_config(C: int, K: int) -> tuple[int, int, int]:
    """(edges per tile, channels per tile, num_warps) for the per-edge kernel: one tile element per
    thread (it holds h, g, R and Y of an edge at once; K = max(K_in, K_out)): the measured default."""
    bc = min(next_pow2(C), 32)
    return 4, bc, max(1, min(4, 4 * bc // 32))


def edge_candidates(C: int, K: int) -> list:
    return _fitting(edge_config(C, K), [(8, 32, 8), (2, 32, 2), (4, 64, 8)], C, 1)


def _size_class(n: int) -> int:
    """Problems within a factor of two share a tuned tile."""
    return int(n).bit_length()


def _check(x: torch.Tensor, shape: tuple, what: str):
    if x.shape != shape:
        raise ValueError(f"kernels/triton/conv.py: {what} has shape {tuple(x.shape)}, expected {tuple(shape)}")


def _tile(env: str, launcher: str, problem: tuple, candidates, run, device) -> tuple:
    """The tile a knob forces, else autotune's choice among candidates() (autotune.py). problem: (table key,
    C, dtype, size classes and flags)."""
    C = problem[1]
    return _forced(env, C) or autotune.choose(launcher, problem, candidates, run, device)


def conv_recv(h, Y, R, graph, tab: ConvTable) -> torch.Tensor:
    """out[i] = sum over edges into i: [N, K_in, C] x [E, K_sh] x [E, P, C] -> [N, K_out, C]."""
    N, _, C = h.shape
    E = Y.shape[0]
    _check(h, (N, tab.K_in, C), "node_feats")
    _check(Y, (E, tab.K_sh), "edge_sh")
    _check(R, (E, tab.P, C), "edge_weights")
    out = h.new_empty(N, tab.K_out, C)  # (new_empty: half the host time of torch.empty with dtype and device)
    if N == 0 or C == 0:
        return out
    h, Y, R, kern = h.contiguous(), Y.contiguous(), R.contiguous(), _recv_kernel(tab)

    def run(tile):
        be, bc, nw = tile
        launch(kern, (N, cdiv(C, bc)), h, Y, R, out, graph.recv_ptr, graph.recv_ptr, graph.senders, C, BE=be, BC=bc,
               USE_PERM=False, num_warps=nw, num_stages=_stages())

    run(_tile("TUMBLER_CONV_RECV_CFG", "conv_recv", (tab.key, C, h.dtype, _size_class(N), _size_class(E)),
              lambda: recv_candidates(C, tab.K_out), run, h.device))
    return out


def conv_send(g, Y, R, graph, tab: ConvTable) -> torch.Tensor:
    """dh[j] = sum over edges out of j (transposed graph): [N, K_out, C] -> [N, K_in, C]."""
    N, _, C = g.shape
    _check(g, (N, tab.K_out, C), "grad_out")
    out = g.new_empty(N, tab.K_in, C)
    if N == 0 or C == 0:
        return out
    g, Y, R, kern = g.contiguous(), Y.contiguous(), R.contiguous(), _send_kernel(tab)

    def run(tile):
        be, bc, nw = tile
        launch(kern, (N, cdiv(C, bc)), g, Y, R, out, graph.send_ptr, graph.send_perm, graph.receivers, C,
               BE=be, BC=bc, USE_PERM=True, num_warps=nw, num_stages=_stages())

    run(_tile("TUMBLER_CONV_NODE_CFG", "conv_send", (tab.key, C, g.dtype, _size_class(N), _size_class(Y.shape[0])),
              lambda: node_candidates(C, tab.K_in), run, g.device))
    return out


def conv_edge(h, Y, R, g, graph, tab: ConvTable, need_Y: bool, need_R: bool):
    """Per-edge derivatives: dY [E, K_sh] (summed over channels) and dR [E, P, C]; None where not asked."""
    N, _, C = h.shape
    E = graph.senders.shape[0]
    dt, dev = h.dtype, h.device
    dY = h.new_empty(E, tab.K_sh) if need_Y else None
    dR = h.new_empty(E, tab.P, C) if need_R else None
    if E == 0 or not (need_Y or need_R):
        return dY, dR
    if C == 0:
        return (dY.zero_() if need_Y else None), dR
    h, g, kern = h.contiguous(), g.contiguous(), _edge_kernel(tab)
    Y = Y.contiguous() if need_R else h  # unread inputs and outputs: any pointer
    R = R.contiguous() if need_Y else h

    def run(tile):
        be, bc, nw = tile
        launch(kern, (cdiv(E, be),), h, g, Y, R, dY if need_Y else h, dR if need_R else h, graph.senders,
               graph.receivers, E, C, BE=be, BC=bc, NEED_Y=need_Y, NEED_R=need_R, num_warps=nw)

    run(_tile("TUMBLER_CONV_EDGE_CFG", "conv_edge", (tab.key, C, dt, _size_class(E), need_Y, need_R),
              lambda: edge_candidates(C, max(tab.K_in, tab.K_out)), run, dev))
    return dY, dR


def conv_sender(h, Y, R, g, graph, tab: ConvTable, need_Y: bool, need_R: bool):
    """dh = conv_send(g, Y, R) together with conv_edge's dY [E, K_sh] and dR [E, P, C] (None where not asked),
    from one pass over the sender segments: g[recv_e] is gathered once per edge instead of once per kernel."""
    N, _, C = h.shape
    E = graph.senders.shape[0]
    _check(g, (N, tab.K_out, C), "grad_out")
    dh = h.new_empty(N, tab.K_in, C)
    dR = h.new_empty(E, tab.P, C) if need_R else None
    if N == 0 or C == 0 or E == 0:
        dh.zero_()
        return dh, (h.new_zeros(E, tab.K_sh) if need_Y else None), dR
    h, g, Y, R, kern = h.contiguous(), g.contiguous(), Y.contiguous(), R.contiguous(), _sender_kernel(tab)

    def run(tile):
        be, bc, nw = tile
        parts = _dY_parts(h, E, C, tab, bc, need_Y)
        launch(kern, (N, cdiv(C, bc)), *_sender_tensors(h, g, Y, R, dh, parts, dR, graph), E, C, BE=be, BC=bc,
               NEED_H=True, NEED_Y=need_Y, NEED_R=need_R, num_warps=nw, num_stages=_stages())
        return _dY(parts)

    problem = (tab.key, C, h.dtype, _size_class(N), _size_class(E), need_Y, need_R)
    dY = run(_tile("TUMBLER_CONV_NODE_CFG", "conv_sender", problem, lambda: node_candidates(C, tab.K_in), run,
                   h.device))
    return dh, dY, dR


def _dY_parts(h, E: int, C: int, tab: ConvTable, bc: int, need_Y: bool):
    """The sender pass's dY output: one [E, K_sh] part per channel block of bc channels (None if not asked)."""
    if not need_Y:
        return None
    ncb = cdiv(C, bc)
    return h.new_empty((E, tab.K_sh) if ncb == 1 else (ncb, E, tab.K_sh))


def _dY(parts):
    """dY [E, K_sh] from the parts: their sum over channel blocks, in a fixed order."""
    return parts if parts is None or parts.dim() == 2 else parts.sum(0)


def _sender_tensors(h, g, Y, R, dh, parts, dR, graph) -> tuple:
    """The sender kernel's tensor arguments in parameter order (an output not asked for: any pointer, unwritten)."""
    return (h, g, Y, R, dh, dh if parts is None else parts, dh if dR is None else dR, graph.send_order,
            graph.send_ptr, graph.send_perm, graph.receivers)
