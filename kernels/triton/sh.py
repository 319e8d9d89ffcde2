"""Spherical harmonics (any lmax; l <= 3 in the model) as generated Triton kernels: forward, first and second derivative.

Convention (CONTRACT kernels): real harmonics of the unit vector u = v/|v|, e3nn order
(l major, m = -l..l), "component" normalisation (each l block has squared norm 2l+1).
Every Y_lm is a homogeneous polynomial of degree l in (ux, uy, uz) (e3nn's formulas), built
here as a table {(a, b, c): coeff} for ux^a uy^b uz^c. The generators below emit one
straight-line Triton kernel per lmax from those tables:
  forward:  Y[e, k]  = P_k(u)                                  [E, (lmax+1)**2]
  backward: gv[e, :] = (1/|v|) (I - u u^T) sum_k gY[e, k] grad_u P_k(u)      [E, 3]
  pullback: (dv [E, 3], dgY [E, K]) of gv = J(v)^T gY for an upstream ggv [E, 3]: force training's second derivative
At v = 0 we set u = 0 (1/|v| -> 0): Y = (1, 0, ..., 0) and the derivatives are exactly 0, never NaN.
Third derivatives are taken by torch autograd over `sh_torch`, a torch evaluation of the same polynomial
tables (documented in autograd.py).
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

from .codegen import cdiv, lit, load_source, next_pow2
from .launch import launch

Poly = dict  # {(a, b, c): coeff} for ux^a uy^b uz^c



def _mul(p: Poly, q: Poly) -> Poly:
    out: Poly = {}
    for (a, b, c), x in p.items():
        for (d, e, f), y in q.items():
            k = (a + d, b + e, c + f)
            out[k] = out.get(k, 0.0) + x * y
    return {k: v for k, v in out.items() if v != 0.0}


def _add(*ps: Poly, w=None) -> Poly:
    out: Poly = {}
    for i, p in enumerate(ps):
        s = 1.0 if w is None else w[i]
        for k, v in p.items():
            out[k] = out.get(k, 0.0) + s * v
    return {k: v for k, v in out.items() if v != 0.0}


def _sc(s: float, p: Poly) -> Poly:
    return {k: s * v for k, v in p.items()}


@lru_cache(maxsize=None)
def sh_polys(lmax: int) -> tuple:
    """Tuple of (lmax+1)**2 polynomials: e3nn's `_spherical_harmonics` formulas for l <= 3, and above
    that the reference's recursion Y^{l+1}(u) = (Y^l(u) kron u) @ G_l (kernels.reference._sh_recursion)."""
    if lmax < 0:
        raise ValueError(f"kernels/triton/sh.py: lmax must be >= 0, got {lmax}")
    X, Y, Z = {(1, 0, 0): 1.0}, {(0, 1, 0): 1.0}, {(0, 0, 1): 1.0}
    out = [{(0, 0, 0): 1.0}]
    if lmax >= 1:
        out += [_sc(math.sqrt(3), X), _sc(math.sqrt(3), Y), _sc(math.sqrt(3), Z)]
    if lmax >= 2:
        y2 = _mul(Y, Y)
        x2z2 = _add(_mul(X, X), _mul(Z, Z))
        s20 = _sc(math.sqrt(15), _mul(X, Z))
        s24 = _sc(0.5 * math.sqrt(15), _add(_mul(Z, Z), _mul(X, X), w=[1.0, -1.0]))
        out += [s20, _sc(math.sqrt(15), _mul(X, Y)), _sc(math.sqrt(5), _add(y2, x2z2, w=[1.0, -0.5])),
                _sc(math.sqrt(15), _mul(Y, Z)), s24]
    if lmax >= 3:
        q = _add(_sc(4.0, y2), x2z2, w=[1.0, -1.0])  # 4 y^2 - (x^2 + z^2)
        out += [
            _sc(math.sqrt(42) / 6, _add(_mul(s20, Z), _mul(s24, X))),
            _sc(math.sqrt(7), _mul(s20, Y)),
            _sc(math.sqrt(168) / 8, _mul(q, X)),
            _sc(math.sqrt(7) / 2, _mul(Y, _add(_sc(2.0, y2), _sc(-3.0, x2z2)))),
            _sc(math.sqrt(168) / 8, _mul(q, Z)),
            _sc(math.sqrt(7), _mul(s24, Y)),
            _sc(math.sqrt(42) / 6, _add(_mul(s24, Z), _mul(s20, X), w=[1.0, -1.0])),
        ]
    if lmax >= 4:
        from ..reference import _sh_recursion
        u = (X, Y, Z)
        for l in range(3, lmax):
            g = _sh_recursion(l)  # [(2l+1)*3, 2l+3], row (i, a)
            prev = out[l * l:(l + 1) ** 2]
            out += [_add(*[_sc(float(g[3 * i + a, j]), _mul(prev[i], u[a]))
                           for i in range(2 * l + 1) for a in range(3) if g[3 * i + a, j] != 0.0])
                    for j in range(2 * l + 3)]
    return tuple(out[: (lmax + 1) ** 2])


def _deriv(p: Poly, axis: int) -> Poly:
    out: Poly = {}
    for k, v in p.items():
        if k[axis] > 0:
            kk = list(k)
            kk[axis] -= 1
            out[tuple(kk)] = out.get(tuple(kk), 0.0) + v * k[axis]
    return out


def _mono(k) -> str:
    f = [f"u{n}" for n, e in zip("xyz", k) for _ in range(e)]
    return " * ".join(f) if f else "one"


def _poly_expr(p: Poly) -> str:
    if not p:
        return "zero"
    return " + ".join(f"{lit(v)} * {_mono(k)}" for k, v in sorted(p.items()))


_PRE = """
@triton.jit
def {name}(V, A, B, E, BLOCK: tl.constexpr, KP: tl.constexpr):
    # V: [E, 3] vectors; {io}
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    em = e < E
    c4 = tl.arange(0, 4)
    vx = tl.load(V + e * 3, mask=em, other=0.0)
    vy = tl.load(V + e * 3 + 1, mask=em, other=0.0)
    vz = tl.load(V + e * 3 + 2, mask=em, other=0.0)
    r2 = vx * vx + vy * vy + vz * vz
    inv = tl.where(r2 > 0.0, 1.0 / tl.sqrt(tl.where(r2 > 0.0, r2, 1.0)), 0.0)
    ux = vx * inv
    uy = vy * inv
    uz = vz * inv
    one = tl.full(ux.shape, 1.0, ux.dtype)
    zero = tl.zeros(ux.shape, ux.dtype)
    kk = tl.arange(0, KP)
"""


@lru_cache(maxsize=None)
def fwd_kernel(lmax: int):
    polys = sh_polys(lmax)
    K = len(polys)
    name = f"sh_fwd_l{lmax}"
    src = _PRE.format(name=name, io=f"A: out [E, {K}]; B unused")
    src += "    out = tl.zeros([BLOCK, KP], ux.dtype)\n"
    for k, p in enumerate(polys):
        src += f"    out = tl.where(kk[None, :] == {k}, ({_poly_expr(p)})[:, None], out)\n"
    src += f"    tl.store(A + e[:, None] * {K} + kk[None, :], out, mask=em[:, None] & (kk[None, :] < {K}))\n"
    return load_source(src, name)


@lru_cache(maxsize=None)
def bwd_kernel(lmax: int):
    polys = sh_polys(lmax)
    K = len(polys)
    name = f"sh_bwd_l{lmax}"
    src = _PRE.format(name=name, io=f"A: gY [E, {K}]; B: out gv [E, 3]")
    gu = {0: [], 1: [], 2: []}
    for k, p in enumerate(polys):
        if k == 0:
            continue
        src += f"    g{k} = tl.load(A + e * {K} + {k}, mask=em, other=0.0)\n"
        for ax in range(3):
            d = _deriv(p, ax)
            if d:
                gu[ax].append(f"g{k} * ({_poly_expr(d)})")
    for ax, n in enumerate("xyz"):
        src += f"    gu{n} = {' + '.join(gu[ax]) if gu[ax] else 'zero'}\n"
    src += "    ug = ux * gux + uy * guy + uz * guz\n"
    src += "    gx = inv * (gux - ux * ug)\n    gy = inv * (guy - uy * ug)\n    gz = inv * (guz - uz * ug)\n"
    src += ("    res = tl.where(c4[None, :] == 0, gx[:, None], tl.where(c4[None, :] == 1, gy[:, None], gz[:, None]))\n"
            "    tl.store(B + e[:, None] * 3 + c4[None, :], res, mask=em[:, None] & (c4[None, :] < 3))\n")
    return load_source(src, name)


BLOCK = 256


def _launch(kern, v, a, b, lmax):
    E = v.shape[0]
    if E == 0:
        return
    K = (lmax + 1) ** 2
    kp = 4 if K <= 4 else next_pow2(K)
    launch(kern, (cdiv(E, BLOCK),), v, a, b, E, BLOCK=BLOCK, KP=kp, num_warps=4)


def sh_forward(vectors: torch.Tensor, lmax: int) -> torch.Tensor:
    """[E, 3] -> [E, (lmax+1)**2] through the generated forward kernel (no autograd)."""
    v = vectors.contiguous()
    out = torch.empty(v.shape[0], (lmax + 1) ** 2, dtype=v.dtype, device=v.device)
    if lmax == 0:
        return out.fill_(1.0)
    _launch(fwd_kernel(lmax), v, out, out, lmax)
    return out


def sh_backward(vectors: torch.Tensor, grad_sh: torch.Tensor, lmax: int) -> torch.Tensor:
    """Vector-Jacobian product: ([E, 3], [E, K]) -> [E, 3] (no autograd)."""
    v = vectors.contiguous()
    g = grad_sh.contiguous().to(v.dtype)
    out = torch.empty_like(v)
    if lmax == 0:
        return out.zero_()
    _launch(bwd_kernel(lmax), v, g, out, lmax)
    return out


# Second derivatives (force training) as one generated kernel. The pullback of the first-derivative op
# gv = J(v)^T gY (sh_backward) with respect to (v, gY), for an
# upstream ggv = w [E, 3], is
#     dgY[e, k] = dY_k/dv . w                      (a Jacobian-vector product)          [E, K]
#     dv[e, :]  = sum_k gY[e, k] (d^2 Y_k / dv^2) w (a Hessian-vector product)          [E, 3]
# Each P_k is homogeneous of degree l (e3nn's polynomials), so with u = v/r, Y_k(v) = P_k(u) and
#     dY/dv     = (1/r)   [q - l P u]                                   q = grad P(u)
#     d2Y/dv2   = (1/r^2) [H - l (q u^T + u q^T) - l P I + l (l+2) P u u^T]   H = hess P(u)
# (Euler: u . q = l P). At v = 0 we take 1/r = 0, so both are exactly 0 (gradient-safe, as above).
# This kernel is the force-training path: F = -dE/dvec needs gv, and a loss on F needs its pullback.

_PULLBACK_PRE = """
@triton.jit
def {name}(V, GY, W, DV, DGY, E, BLOCK: tl.constexpr, KP: tl.constexpr):
    # V, W, DV: [E, 3]; GY, DGY: [E, {K}]
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    em = e < E
    c4 = tl.arange(0, 4)
    m3 = em[:, None] & (c4[None, :] < 3)
    vx = tl.load(V + e * 3, mask=em, other=0.0)
    vy = tl.load(V + e * 3 + 1, mask=em, other=0.0)
    vz = tl.load(V + e * 3 + 2, mask=em, other=0.0)
    wx = tl.load(W + e * 3, mask=em, other=0.0)
    wy = tl.load(W + e * 3 + 1, mask=em, other=0.0)
    wz = tl.load(W + e * 3 + 2, mask=em, other=0.0)
    r2 = vx * vx + vy * vy + vz * vz
    inv = tl.where(r2 > 0.0, 1.0 / tl.sqrt(tl.where(r2 > 0.0, r2, 1.0)), 0.0)
    ux = vx * inv
    uy = vy * inv
    uz = vz * inv
    uw = ux * wx + uy * wy + uz * wz
    one = tl.full(ux.shape, 1.0, ux.dtype)
    zero = tl.zeros(ux.shape, ux.dtype)
    kk = tl.arange(0, KP)
    km = em[:, None] & (kk[None, :] < {K})
    dg = tl.zeros([BLOCK, KP], ux.dtype)
"""


@lru_cache(maxsize=None)
def pullback_kernel(lmax: int):
    polys = sh_polys(lmax)
    K = len(polys)
    name = f"sh_pullback_l{lmax}"
    src = _PULLBACK_PRE.format(name=name, K=K)
    A = {a: [] for a in "xyz"}
    B = {a: [] for a in "xyz"}
    Bw, Cs, Ds = [], [], []
    for k, p in enumerate(polys):
        l = math.isqrt(k)
        if l == 0:
            continue
        src += f"    g{k} = tl.load(GY + e * {K} + {k}, mask=em, other=0.0)\n"
        src += f"    p{k} = {_poly_expr(p)}\n"
        for i, a in enumerate("xyz"):
            d = _deriv(p, i)
            src += f"    q{k}{a} = {_poly_expr(d)}\n"
            hw = [f"({_poly_expr(_deriv(d, j))}) * w{b}" for j, b in enumerate("xyz") if _deriv(d, j)]
            src += f"    h{k}{a} = {' + '.join(hw) if hw else 'zero'}\n"
            A[a].append(f"g{k} * h{k}{a}")
            B[a].append(f"{lit(l)} * g{k} * q{k}{a}")
        src += f"    qw{k} = q{k}x * wx + q{k}y * wy + q{k}z * wz\n"
        Bw.append(f"{lit(l)} * g{k} * qw{k}")
        Cs.append(f"{lit(l)} * g{k} * p{k}")
        Ds.append(f"{lit(l * (l + 2))} * g{k} * p{k}")
        src += f"    dg = tl.where(kk[None, :] == {k}, (inv * (qw{k} - {lit(l)} * p{k} * uw))[:, None], dg)\n"
    for a in "xyz":
        src += f"    A{a} = {' + '.join(A[a])}\n    B{a} = {' + '.join(B[a])}\n"
    src += f"    Bw = {' + '.join(Bw)}\n    Cs = {' + '.join(Cs)}\n    Ds = {' + '.join(Ds)}\n"
    for a in "xyz":
        src += f"    d{a} = inv * inv * (A{a} - B{a} * uw - u{a} * Bw - Cs * w{a} + Ds * u{a} * uw)\n"
    src += ("    res = tl.where(c4[None, :] == 0, dx[:, None], tl.where(c4[None, :] == 1, dy[:, None], dz[:, None]))\n"
            "    tl.store(DV + e[:, None] * 3 + c4[None, :], res, mask=m3)\n"
            f"    tl.store(DGY + e[:, None] * {K} + kk[None, :], dg, mask=km)\n")
    return load_source(src, name)


PULLBACK_BLOCK = 128  # edges per program of the pullback kernel


def sh_pullback(vectors: torch.Tensor, grad_sh: torch.Tensor, ggv: torch.Tensor, lmax: int):
    """(dv [E, 3], dgY [E, K]): the pullback of gv = J(v)^T gY for the upstream ggv (no autograd)."""
    v = vectors.contiguous()
    g = grad_sh.contiguous().to(v.dtype)
    w = ggv.contiguous().to(v.dtype)
    E, K = v.shape[0], (lmax + 1) ** 2
    dv = torch.empty_like(v)
    dg = torch.empty(E, K, dtype=v.dtype, device=v.device)
    if lmax == 0 or E == 0:
        return dv.zero_(), dg.zero_()
    launch(pullback_kernel(lmax), (cdiv(E, PULLBACK_BLOCK),), v, g, w, dv, dg, E, BLOCK=PULLBACK_BLOCK,
           KP=max(4, next_pow2(K)), num_warps=4)
    return dv, dg


def sh_torch(vectors: torch.Tensor, lmax: int) -> torch.Tensor:
    """The same polynomials in torch ops (twice differentiable); used for second derivatives."""
    r2 = (vectors * vectors).sum(-1, keepdim=True)
    pos = r2 > 0
    inv = torch.where(pos, torch.rsqrt(torch.where(pos, r2, torch.ones_like(r2))), torch.zeros_like(r2))
    u = vectors * inv
    ux, uy, uz = u.unbind(-1)
    cols = []
    for p in sh_polys(lmax):
        acc = ux * 0.0  # keeps the graph connected for l = 0
        for k, coef in p.items():
            term = torch.full_like(ux, coef)
            for comp, e in zip((ux, uy, uz), k):
                for _ in range(e):
                    term = term * comp
            acc = acc + term
        cols.append(acc)
    return torch.stack(cols, dim=-1)
