"""Peer implementations measured in bench/kernels.py's process: e3nn, cuEquivariance and OpenEquivariance,
each called through MACE's own wrappers (mace.modules.wrapper_ops, mace.modules.blocks), as MACE runs them.

Each function returns rows (dicts) with the same figures of the same passes bench/kernels.py times for ours.
The peers are optional: they need mace-torch, and cuequivariance-torch (with its CUDA ops package) or
openequivariance, importable; `available()` says which import and why the others do not.
"""
from __future__ import annotations

import traceback

import torch


def available() -> dict:
    have = {}
    try:
        from e3nn import o3  # noqa: F401
        from mace.modules.wrapper_ops import TensorProduct  # noqa: F401
        have["e3nn"] = True
    except Exception as e:  # the peers are optional: report why they are missing
        have["e3nn"] = f"unavailable: {e!r}"[:200]
    try:
        import cuequivariance_torch  # noqa: F401
        have["cueq"] = True
    except Exception as e:
        have["cueq"] = f"unavailable: {e!r}"[:200]
    try:
        import openequivariance  # noqa: F401
        have["oeq"] = True
    except Exception as e:
        have["oeq"] = f"unavailable: {e!r}"[:200]
    return have


def _configs(backend):
    from mace.modules.wrapper_ops import CuEquivarianceConfig, OEQConfig
    if backend == "cueq":
        return CuEquivarianceConfig(enabled=True, layout="ir_mul", group="O3_e3nn", optimize_all=True,
                                    conv_fusion=True), None
    if backend == "oeq":
        return None, OEQConfig(enabled=True, optimize_all=True, conv_fusion="atomic")
    return None, None


def sh_rows(vec, backends, measure):
    from e3nn import o3
    rows = []
    if "e3nn" in backends:
        rows.append(_timed_passes(dict(backend="e3nn"), measure, fwd=lambda: o3.spherical_harmonics(
            [0, 1, 2, 3], vec, normalize=True, normalization="component")))
    if "cueq" in backends:
        import cuequivariance_torch as cuet
        sh = cuet.SphericalHarmonics([0, 1, 2, 3], normalize=True, device=vec.device)
        rows.append(_timed_passes(dict(backend="cueq"), measure, fwd=lambda: sh(vec)))
    return rows


def conv_rows(lmax_in, C, send, recv, n_nodes, backends, measure):
    """MACE conv TP (uvu, per-edge weights, gather + scatter-sum) for node irreps C x (0e..lmax_in natural
    parity), sh l <= 3, targets l <= 3 of both parities (MACE's irreps_mid): fwd, fwd+bwd, force-train."""
    from e3nn import o3
    from mace.modules.irreps_tools import tp_out_irreps_with_instructions
    from mace.modules.wrapper_ops import TensorProduct
    dev = send.device
    node_irreps = o3.Irreps([(C, (l, (-1) ** l)) for l in range(lmax_in + 1)])
    sh_irreps = o3.Irreps.spherical_harmonics(3)
    target = o3.Irreps([(1, (l, p)) for l in range(4) for p in (1, -1)])
    irreps_mid, instr = tp_out_irreps_with_instructions(node_irreps, sh_irreps, target)
    ei = torch.stack([send, recv])
    E = send.shape[0]
    rows = []
    for backend in backends:
        try:
            cq, oq = _configs(backend)
            tp = TensorProduct(node_irreps, sh_irreps, irreps_mid, instructions=instr, shared_weights=False,
                               internal_weights=False, cueq_config=cq, oeq_config=oq).to(dev)
            if backend == "e3nn":
                from mace.modules.wrapper_ops import with_scatter_sum
                tp = with_scatter_sum(tp)
            x = torch.randn(n_nodes, node_irreps.dim, device=dev, requires_grad=True)
            vec = torch.randn(E, 3, device=dev, requires_grad=True)
            w = torch.randn(E, tp.weight_numel, device=dev, requires_grad=True)
            Yd = o3.spherical_harmonics([0, 1, 2, 3], vec, normalize=True, normalization="component").detach()
            Yd.requires_grad_(True)
            with torch.no_grad():
                g = torch.randn_like(tp(x, Yd, w, ei))

            def fwd():
                with torch.no_grad():
                    return tp(x, Yd, w, ei)

            def fwdbwd():
                torch.autograd.grad(tp(x, Yd, w, ei), [x, Yd, w], g)

            def dbl():
                Yv = o3.spherical_harmonics([0, 1, 2, 3], vec, normalize=True, normalization="component")
                (f,) = torch.autograd.grad((tp(x, Yv, w, ei) * g).sum(), vec, create_graph=True)
                torch.autograd.grad((f * f).sum(), [x, w])
            rows.append(_timed_passes(dict(backend=backend, paths=len(instr), weight_numel=tp.weight_numel), measure,
                                      fwd=fwd, fwdbwd=fwdbwd, dbl=dbl))
        except Exception as e:
            traceback.print_exc()
            rows.append(dict(backend=backend, error=repr(e)[:300]))
    return rows


def _timed_passes(row: dict, measure, **passes) -> dict:
    """row plus the figures of each pass (fwd, fwdbwd, dbl: forward, forward+backward, double backward) that
    bench/kernels.py's `measure` takes of ours, under the same keys."""
    for name, fn in passes.items():
        row.update((name + k, v) for k, v in measure(fn).items())
    return row


def sc_rows(lmax_in, lmax_out, C, species, n_el, corr, backends, measure):
    """The symmetric contraction of MACE's EquivariantProductBasisBlock for C x (l <= lmax_in) -> l <= lmax_out:
    the block's own forward (one-hot attributes to species indices, layout) with its linear replaced by the
    identity, so that it computes what our op computes. (Timing the whole block, linear included, would
    flatter our contraction.)"""
    from e3nn import o3
    from mace.modules.blocks import EquivariantProductBasisBlock
    dev = species.device
    irreps_in = o3.Irreps([(C, (l, (-1) ** l)) for l in range(lmax_in + 1)])
    irreps_out = o3.Irreps([(C, (l, (-1) ** l)) for l in range(lmax_out + 1)])
    K = irreps_in.dim // C
    n = species.shape[0]
    attrs = torch.nn.functional.one_hot(species, n_el).float()
    rows = []
    for backend in [b for b in backends if b != "oeq"]:
        try:
            cq, _ = _configs(backend)
            blk = EquivariantProductBasisBlock(irreps_in, irreps_out, corr, use_sc=False, num_elements=n_el,
                                               cueq_config=cq).to(dev)
            blk.linear = torch.nn.Identity()
            shape = (n, C, K) if backend == "e3nn" else (n, K, C)
            # drawn on the CPU: a capture that fails (bench/kernels.py graph_ms) can leave the CUDA generator unusable
            x = torch.randn(*shape).to(dev).requires_grad_(True)
            params = [p for p in blk.parameters() if p.requires_grad]
            with torch.no_grad():
                go = torch.randn(blk(x, None, attrs).shape).to(dev)

            def fwd():
                with torch.no_grad():
                    blk(x, None, attrs)

            def fwdbwd():
                torch.autograd.grad(blk(x, None, attrs), [x] + params, go)

            def dbl():
                (gx,) = torch.autograd.grad((blk(x, None, attrs) * go).sum(), x, create_graph=True)
                torch.autograd.grad((gx * gx).sum(), params)
            rows.append(_timed_passes(dict(backend=backend), measure, fwd=fwd, fwdbwd=fwdbwd, dbl=dbl))
        except Exception as e:
            traceback.print_exc()
            rows.append(dict(backend=backend, error=repr(e)[:300]))
    return rows
