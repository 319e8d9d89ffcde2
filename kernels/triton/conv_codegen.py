"""Source generators for the edge-conv kernel family.

The conv is the derivative of one 4-linear form over the graph,
    F(h, Y, R, g) = sum_e sum_c sum_{(k1,k2,k3,p,w)} w * g[recv_e,k3,c] * R[e,p,c] * h[send_e,k1,c] * Y[e,k2]
with (k1, k2, k3, p, w) the non-zero CG entries (component indices into node features [*, K_in, C],
harmonics [E, K_sh], output [*, K_out, C], path p, coefficient w). Three kernels compute all its
partial derivatives:
  node kernel, receiver segments:  dF/dg[i] = sum over edges into i   (the conv itself)
  node kernel, sender segments:    dF/dh[j] = sum over edges out of j (transposed graph, via send_perm)
  edge kernel:                     dF/dY[e] (sum over channels) and dF/dR[e] (per channel)
and one fused kernel for backward passes that need dF/dh together with per-edge derivatives:
  sender kernel:  dF/dh[j] over sender segments, and dF/dR[e], dF/dY[e] of the same edges, from one
                  gather of g[recv_e] per edge (h[j] is loaded once per segment, not per edge)
Each term list is emitted as straight-line code with the coefficients as constants; no
E x C x K intermediate is written, no atomics are used (each output element has one writer that
sums in a fixed order), so results are bitwise deterministic.
"""
from __future__ import annotations

from collections import defaultdict

from .codegen import lit

# term: (o, a, b, p, w) meaning out[o] += w * R[p] * X[a] * Y[b]   (node kernels)


def node_kernel_source(name: str, terms, KX: int, KY: int, P: int, KO: int) -> str:
    """Segment kernel: one program per (output node, channel block).

    X: gathered node tensor [N, KX, C] (row GIDX[eid]); Y: [E, KY]; R: [E, P, C];
    OUT: [N, KO, C]; PTR: [N+1] segment offsets into the edge order; PERM: edge ids in that
    order (used when USE_PERM, else the order is the identity).
    """
    outs = sorted({t[0] for t in terms})
    used_a = sorted({t[1] for t in terms})
    used_b = sorted({t[2] for t in terms})
    used_p = sorted({t[3] for t in terms})
    # group: (o, p) -> a -> list of (b, w)
    grp: dict = defaultdict(lambda: defaultdict(list))
    for o, a, b, p, w in terms:
        grp[(o, p)][a].append((b, w))
    L = []
    L.append("@triton.jit")
    L.append(f"def {name}(X, Y, R, OUT, PTR, PERM, GIDX, C, BE: tl.constexpr, BC: tl.constexpr, "
             "USE_PERM: tl.constexpr):")
    L.append("    node = tl.program_id(0).to(tl.int64)")
    L.append("    c = tl.program_id(1) * BC + tl.arange(0, BC)")
    L.append("    cm = c < C")
    L.append("    start = tl.load(PTR + node)")
    L.append("    end = tl.load(PTR + node + 1)")
    L.append("    dt = X.dtype.element_ty")
    for o in outs:
        L.append(f"    acc{o} = tl.zeros([BE, BC], dt)")
    L.append("    for e0 in range(start, end, BE):")
    L.append("        eo = e0 + tl.arange(0, BE)")
    L.append("        em = eo < end")
    L.append("        if USE_PERM:")
    L.append("            eid = tl.load(PERM + eo, mask=em, other=0)")
    L.append("        else:")
    L.append("            eid = eo")
    L.append("        src = tl.load(GIDX + eid, mask=em, other=0)")
    L.append("        m2 = em[:, None] & cm[None, :]")
    L.append(f"        xrow = X + src[:, None] * ({KX} * C) + c[None, :]")
    L.append(f"        rrow = R + eid[:, None] * ({P} * C) + c[None, :]")
    L.append(f"        yrow = Y + eid * {KY}")
    for a in used_a:
        L.append(f"        x{a} = tl.load(xrow + {a} * C, mask=m2, other=0.0)")
    for b in used_b:
        L.append(f"        y{b} = tl.load(yrow + {b}, mask=em, other=0.0)")
    for p in used_p:
        L.append(f"        r{p} = tl.load(rrow + {p} * C, mask=m2, other=0.0)")
    for (o, p), by_a in sorted(grp.items()):
        parts = []
        for a, bw in sorted(by_a.items()):
            coef = " + ".join(f"{lit(w)} * y{b}" for b, w in bw)  # [BE] (cheap: per edge)
            parts.append(f"x{a} * ({coef})[:, None]")
        L.append(f"        acc{o} += r{p} * ({' + '.join(parts)})")
    L.append(f"    orow = OUT + node * ({KO} * C) + c")
    for o in range(KO):
        val = f"tl.sum(acc{o}, 0)" if o in outs else "tl.zeros([BC], dt)"
        L.append(f"    tl.store(orow + {o} * C, {val}, mask=cm)")
    return "\n".join(L) + "\n"


def _per_edge_index(table):
    """The CG entries indexed for the per-edge derivatives: by_p p -> (a, o) -> [(b, w)] (for dF/dR) and
    by_b b -> p -> [(a, o, w)] (for dF/dY)."""
    by_p: dict = defaultdict(lambda: defaultdict(list))
    by_b: dict = defaultdict(lambda: defaultdict(list))
    for a, b, o, p, w in table:
        by_p[p][(a, o)].append((b, w))
        by_b[b][p].append((a, o, w))
    return by_p, by_b


def _dR_source(by_p, p) -> str:
    """dF/dR[e, p, c] = sum w * h[a] * g[o] * Y[b] over the entries of path p, as a [BE, BC] expression."""
    parts = []
    for (a, o), bw in sorted(by_p[p].items()):
        coef = " + ".join(f"{lit(w)} * y{b}" for b, w in bw)
        parts.append(f"h{a} * g{o} * ({coef})[:, None]")
    return " + ".join(parts)


def _dY_source(by_b, b) -> str:
    """The channel-resolved summand of dF/dY[e, b] (sum w * R[p] * h[a] * g[o]), a [BE, BC] expression that
    the kernel reduces over channels."""
    parts = []
    for p, aow in sorted(by_b[b].items()):
        inner = " + ".join(f"{lit(w)} * h{a} * g{o}" for a, o, w in aow)
        parts.append(f"r{p} * ({inner})")
    return " + ".join(parts)


def edge_kernel_source(name: str, table, KH: int, KY: int, KG: int, P: int) -> str:
    """Per-edge kernel: one program per block of BE edges, looping over channel blocks.

    table: (k1, k2, k3, p, w) CG entries. H: [N, KH, C] (row SEND[e]); G: [N, KG, C]
    (row RECV[e]); Y: [E, KY]; R: [E, P, C]. Writes DY [E, KY] = dF/dY when NEED_Y and
    DR [E, P, C] = dF/dR when NEED_R.
    """
    by_p, by_b = _per_edge_index(table)
    used_a = sorted({t[0] for t in table})
    used_b = sorted({t[1] for t in table})
    used_o = sorted({t[2] for t in table})
    used_p = sorted({t[3] for t in table})
    L = []
    L.append("@triton.jit")
    L.append(f"def {name}(H, G, Y, R, DY, DR, SEND, RECV, E, C, BE: tl.constexpr, BC: tl.constexpr, "
             "NEED_Y: tl.constexpr, NEED_R: tl.constexpr):")
    L.append("    e = tl.program_id(0).to(tl.int64) * BE + tl.arange(0, BE)")
    L.append("    em = e < E")
    L.append("    s = tl.load(SEND + e, mask=em, other=0)")
    L.append("    r = tl.load(RECV + e, mask=em, other=0)")
    L.append("    dt = H.dtype.element_ty")
    L.append("    if NEED_R:")
    for b in used_b:
        L.append(f"        y{b} = tl.load(Y + e * {KY} + {b}, mask=em, other=0.0)")
    L.append("    if NEED_Y:")
    for b in range(KY):
        L.append(f"        dy{b} = tl.zeros([BE], dt)")
    L.append("    for c0 in range(0, C, BC):")
    L.append("        c = c0 + tl.arange(0, BC)")
    L.append("        m2 = em[:, None] & (c < C)[None, :]")
    L.append(f"        hrow = H + s[:, None] * ({KH} * C) + c[None, :]")
    L.append(f"        grow = G + r[:, None] * ({KG} * C) + c[None, :]")
    L.append(f"        rrow = e[:, None] * ({P} * C) + c[None, :]")
    for a in used_a:
        L.append(f"        h{a} = tl.load(hrow + {a} * C, mask=m2, other=0.0)")
    for o in used_o:
        L.append(f"        g{o} = tl.load(grow + {o} * C, mask=m2, other=0.0)")
    L.append("        if NEED_R:")
    for p in used_p:
        L.append(f"            tl.store(DR + rrow + {p} * C, {_dR_source(by_p, p)}, mask=m2)")
    L.append("        if NEED_Y:")
    for p in used_p:
        L.append(f"            r{p} = tl.load(R + rrow + {p} * C, mask=m2, other=0.0)")
    for b in used_b:
        L.append(f"            dy{b} += tl.sum({_dY_source(by_b, b)}, 1)")
    L.append("    if NEED_Y:")
    for b in range(KY):
        L.append(f"        tl.store(DY + e * {KY} + {b}, dy{b}, mask=em)")
    return "\n".join(L) + "\n"


def sender_kernel_source(name: str, table, KH: int, KY: int, KG: int, P: int, by_component: bool) -> str:
    """Sender-segment kernel: one program per (sender node j, channel block cb).

    table: (k1, k2, k3, p, w) CG entries. H: [N, KH, C]; G: [N, KG, C] (row RECV[e]); Y: [E, KY];
    R: [E, P, C]; PTR [N+1] / PERM [E]: the sender segments (send_ptr, send_perm), ORDER [N] the order in which
    the programs take the nodes (send_order: longest segment first). Writes, as asked:
    DH [N, KH, C] = dF/dh (NEED_H); DR [E, P, C] = dF/dR (NEED_R); DY [NCB, E, KY] = the channel block's
    part of dF/dY (NEED_Y; the launcher sums the NCB blocks in a fixed order). by_component picks the loop
    body: one g component at a time (_sender_terms_by_component) or all of them first (_by_output).
    """
    used_a = sorted({t[0] for t in table})
    L = []
    L.append("@triton.jit")
    L.append(f"def {name}(H, G, Y, R, DH, DY, DR, ORDER, PTR, PERM, RECV, E, C, BE: tl.constexpr, BC: tl.constexpr, "
             "NEED_H: tl.constexpr, NEED_Y: tl.constexpr, NEED_R: tl.constexpr):")
    L.append("    node = tl.load(ORDER + tl.program_id(0))  # longest segments first")
    L.append("    cb = tl.program_id(1)")
    L.append("    c = cb * BC + tl.arange(0, BC)")
    L.append("    cm = c < C")
    L.append("    start = tl.load(PTR + node)")
    L.append("    end = tl.load(PTR + node + 1)")
    L.append("    dt = H.dtype.element_ty")
    L.append(f"    hrow = H + node * ({KH} * C) + c")
    for a in used_a:
        L.append(f"    h{a} = tl.load(hrow + {a} * C, mask=cm, other=0.0)[None, :]")
    for a in used_a:
        L.append(f"    acc{a} = tl.zeros([BE, BC], dt)")
    L.append("    for e0 in range(start, end, BE):")
    L.append("        eo = e0 + tl.arange(0, BE)")
    L.append("        em = eo < end")
    L.append("        eid = tl.load(PERM + eo, mask=em, other=0)")
    L.append("        r = tl.load(RECV + eid, mask=em, other=0)")
    L.append("        m2 = em[:, None] & cm[None, :]")
    L.append(f"        grow = G + r[:, None] * ({KG} * C) + c[None, :]")
    L.append(f"        rrow = eid[:, None] * ({P} * C) + c[None, :]")
    L += (_sender_terms_by_component if by_component else _sender_terms_by_output)(table, KY)
    L.append("    if NEED_H:")
    L.append(f"        orow = DH + node * ({KH} * C) + c")
    for a in range(KH):
        val = f"tl.sum(acc{a}, 0)" if a in used_a else "tl.zeros([BC], dt)"
        L.append(f"        tl.store(orow + {a} * C, {val}, mask=cm)")
    return "\n".join(L) + "\n"


def _edge_loads(table, KY: int) -> list:
    """Loop-body loads of the sender pass that are not g: the edge harmonics y[b] ([BE]) and the radial
    weights r[p] ([BE, BC])."""
    L = [f"        y{b} = tl.load(Y + eid * {KY} + {b}, mask=em, other=0.0)" for b in sorted({t[1] for t in table})]
    L.append("        if NEED_H or NEED_Y:")
    L += [f"            r{p} = tl.load(R + rrow + {p} * C, mask=m2, other=0.0)" for p in sorted({t[3] for t in table})]
    return L


def _sender_terms_by_output(table, KY: int) -> list:
    """The sender pass's loop-body arithmetic for an l=0 input (one h component): every g component is
    loaded first, then each output (dh, dR[p], dY[b]) is one expression. Little is live per element, so
    each thread holds four channels (kernels/triton/conv.py node_config)."""
    by_p, by_b = _per_edge_index(table)
    by_hp: dict = defaultdict(lambda: defaultdict(list))  # (a, p) -> o -> [(b, w)]  (for dF/dh)
    for a, b, o, p, w in table:
        by_hp[(a, p)][o].append((b, w))
    L = [f"        g{o} = tl.load(grow + {o} * C, mask=m2, other=0.0)" for o in sorted({t[2] for t in table})]
    L += _edge_loads(table, KY)
    L.append("        if NEED_H:")
    for (a, p), by_o in sorted(by_hp.items()):
        parts = []
        for o, bw in sorted(by_o.items()):
            coef = " + ".join(f"{lit(w)} * y{b}" for b, w in bw)
            parts.append(f"g{o} * ({coef})[:, None]")
        L.append(f"            acc{a} += r{p} * ({' + '.join(parts)})")
    L.append("        if NEED_R:")
    for p in sorted(by_p):
        L.append(f"            tl.store(DR + rrow + {p} * C, {_dR_source(by_p, p)}, mask=m2)")
    return L + _dY_stores(KY, {b: _dY_source(by_b, b) for b in by_b})


def _sender_terms_by_component(table, KY: int) -> list:
    """The same for an input with several components (l >= 1): one g component at a time, its products
    accumulated into dh, dR[p] and the channel-resolved dY[b] at once. Each per-edge coupling coefficient is
    used where it is formed and g[o] * coef is shared by dh and dR. H200, GPU time of fwd+bwd (v9): 32ch l<=3
    at 20k 0.160 -> 0.137 ms, 64ch l<=2 at 150k 1.402 -> 1.237 ms, 128ch l<=1 unchanged; at l=0 it made the
    force-train pass slower (0.146 -> 0.179 ms), hence the other form there."""
    by_o: dict = defaultdict(lambda: defaultdict(list))  # o -> (a, p) -> [(b, w)]
    for a, b, o, p, w in table:
        by_o[o][(a, p)].append((b, w))
    used_b = sorted({t[1] for t in table})
    used_p = sorted({t[3] for t in table})
    L = _edge_loads(table, KY)
    L += ["        if NEED_R:"] + [f"            dr{p} = tl.zeros([BE, BC], dt)" for p in used_p]
    L += ["        if NEED_Y:"] + [f"            dyc{b} = tl.zeros([BE, BC], dt)" for b in used_b]
    for o, by_ap in sorted(by_o.items()):
        L.append(f"        g{o} = tl.load(grow + {o} * C, mask=m2, other=0.0)")
        L.append("        if NEED_H or NEED_R:")
        for (a, p), bw in sorted(by_ap.items()):
            coef = " + ".join(f"{lit(w)} * y{b}" for b, w in bw)
            L += [f"            t = g{o} * ({coef})[:, None]",
                  "            if NEED_H:", f"                acc{a} += r{p} * t",
                  "            if NEED_R:", f"                dr{p} += h{a} * t"]
        by_b_here: dict = defaultdict(list)  # b -> [(a, p, w)]: the dY terms of this g component
        for (a, p), bw in by_ap.items():
            for b, w in bw:
                by_b_here[b].append((a, p, w))
        L.append("        if NEED_Y:")
        for b, apw in sorted(by_b_here.items()):
            L.append(f"            dyc{b} += g{o} * ({' + '.join(f'{lit(w)} * r{p} * h{a}' for a, p, w in apw)})")
    L += ["        if NEED_R:"] + [f"            tl.store(DR + rrow + {p} * C, dr{p}, mask=m2)" for p in used_p]
    return L + _dY_stores(KY, {b: f"dyc{b}" for b in used_b})


def _dY_stores(KY: int, summands: dict) -> list:
    """The sender pass's dY stores: for each b, the channel sum of summands[b] ([BE, BC]), zero where absent."""
    L = ["        if NEED_Y:", f"            dyrow = DY + (cb * E + eid) * {KY}"]
    for b in range(KY):
        val = f"tl.sum({summands[b]}, 1)" if b in summands else "tl.zeros([BE], dt)"
        L.append(f"            tl.store(dyrow + {b}, {val}, mask=em)")
    return L
