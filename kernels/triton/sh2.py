"""Second derivatives of the spherical harmonics as one generated Triton kernel.

The pullback of the first-derivative op gv = J(v)^T gY (sh.py) with respect to (v, gY), for an
upstream ggv = w [E, 3], is
    dgY[e, k] = dY_k/dv . w                      (a Jacobian-vector product)          [E, K]
    dv[e, :]  = sum_k gY[e, k] (d^2 Y_k / dv^2) w (a Hessian-vector product)          [E, 3]
Each P_k is homogeneous of degree l (e3nn's polynomials), so with u = v/r, Y_k(v) = P_k(u) and
    dY/dv     = (1/r)   [q - l P u]                                   q = grad P(u)
    d2Y/dv2   = (1/r^2) [H - l (q u^T + u q^T) - l P I + l (l+2) P u u^T]   H = hess P(u)
(Euler: u . q = l P). At v = 0 we take 1/r = 0, so both are exactly 0 (gradient-safe, as sh.py).
This kernel is the force-training path: F = -dE/dvec needs gv, and a loss on F needs its pullback.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

from .codegen import lit, load_source, next_pow2
from .sh import _deriv, _poly_expr, sh_polys

_PRE = """
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
    src = _PRE.format(name=name, K=K)
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


BLOCK = 128


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
    pullback_kernel(lmax)[((E + BLOCK - 1) // BLOCK,)](v, g, w, dv, dg, E, BLOCK=BLOCK, KP=max(4, next_pow2(K)),
                                                      num_warps=4)
    return dv, dg
