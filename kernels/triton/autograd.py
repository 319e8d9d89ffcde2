"""Autograd wiring that closes each Triton op family under differentiation.

Edge conv. The conv is the derivative of the 4-linear form
    F(h, Y, R, g) = sum_{e,c,entries} w * g[recv_e,k3,c] R[e,p,c] h[send_e,k1,c] Y[e,k2],
out = dF/dg. `ConvForm(outs, h, Y, R, g)` returns dF/ds for every slot s in `outs`, evaluated at
the other slots. Its pullback is again a sum of such derivatives: for an upstream gradient G_s
of output s, <G_s, dF/ds> = F(slots with s := G_s), so the gradient with respect to slot t is
dF/dt evaluated with s := G_s. Backward therefore calls ConvForm itself, which makes every
derivative order (backward, double backward for force training, and beyond) run on the same
fused kernels (receiver-segment sum, sender-segment sum through send_perm, per-edge, and the sender
segments with the per-edge derivatives of the same edges in one pass).

Symmetric contraction. Same idea for a polynomial: `PolyForm` evaluates a sparse polynomial
term list (poly.py); its derivative with respect to any input is another term list obtained by
symbolic differentiation, evaluated by a generated kernel, so all orders are closed too.

Spherical harmonics. Forward, first derivative and the second derivative (the pullback of the
first-derivative op, as force training needs it) are fused kernels (sh.py); third order
(a pullback taken with create_graph) goes through torch autograd over `sh_torch`, the same
polynomial tables in torch ops.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from . import contraction as _sc
from . import conv as _conv
from . import sh as _sh

SLOTS = ("h", "Y", "R", "g")


def _tracked(t):
    """t, or a view of it if it is a leaf that requires grad: a view puts a node of its own in front of the
    leaf (no copy, no kernel), and `used_slots` can ask the engine about that node. PolyForm uses it for the
    contraction's weights (parameters, whose gradient the force pass does not use); the conv's inputs are
    computed tensors in the model, and a view costs host time in the small passes."""
    return t.view_as(t) if t is not None and t.requires_grad and t.grad_fn is None else t


def used_slots(ctx, slots) -> tuple:
    """For each forward input in `slots` (tensors or None, in order): whether this backward's gradient for it
    will be used. ctx.needs_input_grad only says that an input requires grad; the force pass
    autograd.grad(E, positions) runs none of the weight branches, so their gradients are skipped here.
    ctx.next_functions lists the forward's tensor inputs in order (None inputs have no entry)."""
    nodes = iter(ctx.next_functions)
    return tuple(t is not None and _will_run(next(nodes)[0]) for t in slots)


def _will_run(node) -> bool:
    """Whether the input behind `node` gets a gradient: every input that requires grad does (it has a node).
    Which of them the running backward will actually use is known only to torch's engine, through no public API,
    so the force pass also computes the weights' gradients that it does not use."""
    return node is not None


def _run_form(outs, graph, tab, slots):
    """dF/ds for each slot name s in outs, at slots = (h, Y, R, g); a tuple in the order of outs."""
    h, Y, R, g = slots
    res = {}
    if "g" in outs:
        res["g"] = _conv.conv_recv(h, Y, R, graph, tab)
    need_Y, need_R = "Y" in outs, "R" in outs
    if "h" in outs and (need_Y or need_R) and _conv.fuse_sender(need_Y):  # one pass for all
        res["h"], res["Y"], res["R"] = _conv.conv_sender(h, Y, R, g, graph, tab, need_Y, need_R)
    else:
        if "h" in outs:
            res["h"] = _conv.conv_send(g, Y, R, graph, tab)
        if need_Y or need_R:
            res["Y"], res["R"] = _conv.conv_edge(h, Y, R, g, graph, tab, need_Y, need_R)
    return tuple(map(res.__getitem__, outs))


_SLOT = {s: i for i, s in enumerate(SLOTS)}


@lru_cache(maxsize=None)
def _targets(s: int, need: tuple) -> tuple:
    """The slots whose gradients a pullback through output slot s gives: every slot but s whose gradient is used
    (F is linear in each slot, so dF/ds does not depend on s itself); as names and as indices."""
    names = tuple(SLOTS[t] for t in range(4) if t != s and need[t])
    return names, tuple(_SLOT[t] for t in names)


class ConvForm(torch.autograd.Function):
    """outs: tuple of slot names; h [N,K_in,C], Y [E,K_sh], R [E,P,C], g [N,K_out,C] (None if unused).
    The small passes are host-bound, so this is written for few Python operations per call."""

    @staticmethod
    def forward(ctx, outs, graph, tab, h, Y, R, g):
        ctx.outs, ctx.graph, ctx.tab = outs, graph, tab
        ctx.save_for_backward(h, Y, R, g)
        if outs == ("g",):  # the conv itself, the commonest call
            return (_conv.conv_recv(h, Y, R, graph, tab),)
        return _run_form(outs, graph, tab, (h, Y, R, g))

    @staticmethod
    def backward(ctx, *grads):
        saved = ctx.saved_tensors  # unpacked once: torch.utils.checkpoint (the chunked step) allows no second unpack
        need = used_slots(ctx, saved)  # False for None slots
        if ctx.outs == ("g",) and need[0] and not torch.is_grad_enabled() and (need[1] or need[2]) \
                and _conv.fuse_sender(need[1]):  # the conv's own backward: the loop below, spelt out (host time)
            h, Y, R, _ = saved
            dh, dY, dR = _conv.conv_sender(h, Y, R, grads[0].contiguous(), ctx.graph, ctx.tab, need[1], need[2])
            return None, None, None, dh, dY, dR, None
        acc = [None, None, None, None]  # gradients of h, Y, R, g
        for s, G in zip(ctx.outs, grads):
            if G is None:
                continue
            i = _SLOT[s]
            targets, indices = _targets(i, need)
            if not targets:
                continue
            slots = list(saved)
            slots[i] = G.contiguous()
            if torch.is_grad_enabled():  # create_graph: the derivatives are themselves differentiable
                vals = ConvForm.apply(targets, ctx.graph, ctx.tab, *slots)
            else:  # the kernels alone, without a graph node (host time of the small passes)
                vals = _run_form(targets, ctx.graph, ctx.tab, slots)
            for j, v in zip(indices, vals):
                acc[j] = v if acc[j] is None else acc[j] + v
        return (None, None, None, *acc)


def edge_conv(node_feats, edge_sh, edge_weights, graph, spec):
    """Autograd-enabled conv: [N,K_in,C], [E,K_sh], [E,P,C] -> [N,K_out,C] (CONTRACT kernels)."""
    tab = _conv.table_for(spec.lmax_in, spec.lmax_sh, spec.lmax_out)
    dt = node_feats.dtype
    edge_sh = edge_sh if edge_sh.dtype == dt else edge_sh.to(dt)  # .to costs host time even as a no-op
    edge_weights = edge_weights if edge_weights.dtype == dt else edge_weights.to(dt)
    if not (torch.is_grad_enabled() and (node_feats.requires_grad or edge_sh.requires_grad
                                         or edge_weights.requires_grad)):  # _records, spelt out: host time
        return _conv.conv_recv(node_feats, edge_sh, edge_weights, graph, tab)
    (out,) = ConvForm.apply(("g",), graph, tab, node_feats, edge_sh, edge_weights, None)
    return out


def _records(*inputs) -> bool:
    """Whether autograd records an op on these inputs. When it does not (inference under no_grad, or no input
    that requires grad) the ops call their kernels directly: an autograd Function costs host time even then,
    and the small passes are host-bound."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in inputs)


class SHForm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vectors, lmax):
        ctx.lmax = lmax
        ctx.save_for_backward(vectors)
        return _sh.sh_forward(vectors, lmax)

    @staticmethod
    def backward(ctx, gY):
        (v,) = ctx.saved_tensors
        return SHVjp.apply(v, gY, ctx.lmax), None


class SHVjp(torch.autograd.Function):
    """gv = (dY/dv)^T gY on the fused kernel (sh.py). Its pullback (the force-training second derivative)
    is one fused kernel (sh.py sh_pullback: a Hessian-vector and a Jacobian-vector product); only when that pullback
    must itself be differentiable (create_graph, third order) it runs through torch autograd over sh_torch."""

    @staticmethod
    def forward(ctx, v, gY, lmax):
        ctx.lmax = lmax
        ctx.save_for_backward(v, gY)
        return _sh.sh_backward(v, gY, lmax)

    @staticmethod
    def backward(ctx, ggv):
        v, gY = ctx.saved_tensors
        if not torch.is_grad_enabled():
            dv, dg = _sh.sh_pullback(v, gY, ggv, ctx.lmax)
            return dv, dg, None
        with torch.enable_grad():  # differentiable in v, gY and ggv (the saved tensors keep their graphs)
            v_ = v if v.requires_grad else v.detach().requires_grad_(True)
            gY_ = gY if gY.requires_grad else gY.detach().requires_grad_(True)
            (gv,) = torch.autograd.grad(_sh.sh_torch(v_, ctx.lmax), v_, gY_, create_graph=True)
            dv, dg = torch.autograd.grad(gv, (v_, gY_), ggv, create_graph=True, allow_unused=True)
        return (torch.zeros_like(v) if dv is None else dv), (torch.zeros_like(gY) if dg is None else dg), None


def spherical_harmonics(vectors, lmax):
    """Autograd-enabled SH: [E, 3] -> [E, (lmax+1)**2] (CONTRACT kernels)."""
    return SHForm.apply(vectors, lmax) if _records(vectors) else _sh.sh_forward(vectors, lmax)


class PolyForm(torch.autograd.Function):
    """dF/ds for s in outs of a poly.Form F at slot tensors (node [N,K,C] / weight [S,K,C]; None if unused).

    Pullback: for an upstream G_s, <G_s, dF/ds> is the form F_s = pullback(F, s) with G_s as a new slot,
    and the gradient with respect to any slot t is dF_s/dt, another PolyForm call."""

    @staticmethod
    def forward(ctx, form, outs, plan, *tensors):
        ctx.form, ctx.outs, ctx.plan = form, outs, plan
        ctx.save_for_backward(*tensors)
        return _sc.run_form(form, outs, tensors, plan)

    @staticmethod
    def backward(ctx, *grads):
        T = ctx.saved_tensors
        need = tuple(t for t, n in enumerate(used_slots(ctx, T)) if n)
        acc = {}
        for s, G in zip(ctx.outs, grads):
            if G is None or not need:
                continue
            form2 = _sc.pullback(ctx.form, s)
            if torch.is_grad_enabled():
                vals = PolyForm.apply(form2, need, ctx.plan, *map(_tracked, T), _tracked(G.contiguous()))
            else:
                vals = _sc.run_form(form2, need, (*T, G.contiguous()), ctx.plan)
            for t, v in zip(need, vals):
                acc[t] = v if t not in acc else acc[t] + v
        return (None, None, None) + tuple(acc.get(t) for t in range(len(T)))


def symmetric_contraction(node_feats, species, weights, spec):
    """Autograd-enabled contraction: [N,K_in,C], [N], [S,W,C] -> [N,K_out,C] (CONTRACT kernels)."""
    n, k, c = node_feats.shape
    if k != spec.dim_in or weights.dim() != 3 or weights.shape[1] != spec.num_weights or weights.shape[2] != c:
        raise ValueError(f"kernels/triton symmetric_contraction: node_feats {tuple(node_feats.shape)} and weights "
                         f"{tuple(weights.shape)} do not fit {spec} (K_in={spec.dim_in}, W={spec.num_weights})")
    if species.shape != (n,):
        raise ValueError(f"kernels/triton symmetric_contraction: species has shape {tuple(species.shape)}, expected ({n},)")
    return planned_contraction(node_feats, weights, spec, _sc.make_plan(species, weights.shape[0], c))


def planned_contraction(node_feats, weights, spec, plan):
    """The contraction with a species plan made beforehand (kernels/triton/contraction.py make_plan): no host
    reads, so it can be captured in a CUDA graph (kernels/fixed_species.py)."""
    form = _sc.base_form(spec.lmax_in, spec.lmax_out, spec.correlation, spec.tensor_product)
    weights = weights.to(node_feats.dtype)
    if not _records(node_feats, weights):
        return _sc.run_form(form, (2,), (node_feats, weights, None), plan)[0]
    (out,) = PolyForm.apply(form, (2,), plan, _tracked(node_feats), _tracked(weights), None)
    return out
