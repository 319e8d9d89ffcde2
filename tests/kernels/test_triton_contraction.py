"""Triton symmetric_contraction vs the reference: values, first and second derivatives (float64),
gradcheck and gradgradcheck, absent species, float32 error bound, bitwise determinism.
CPU (interpreter) budget: ~20 s on 2 cores; on a GPU the same tests run at real sizes."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import kernels

_spec = importlib.util.spec_from_file_location("tumbler_triton_common", Path(__file__).with_name("_triton_common.py"))
T = sys.modules.setdefault("tumbler_triton_common", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(T)

pytestmark = T.requires_triton
N, C, S = (5003, 33, 4) if T.GPU else (11, 3, 3)
SPECS = [(1, 1, 3), (2, 1, 2), (3, 1, 3)]


def _inputs(spec, dtype=torch.float64, seed=0, n=N):
    x = T.randn(n, spec.dim_in, C, seed=seed, dtype=dtype, requires_grad=True)
    w = T.randn(S, spec.num_weights, C, seed=seed + 1, dtype=dtype, requires_grad=True)
    g = torch.Generator().manual_seed(seed + 2)
    species = torch.randint(0, S - 1, (n,), generator=g).to(T.DEVICE)  # species S-1 is absent
    return x, species, w


def _derivatives(ops, spec, x, species, w):
    out = ops.symmetric_contraction(x, species, w, spec)
    g = T.randn(*out.shape, seed=21, dtype=out.dtype)
    first = torch.autograd.grad(out, (x, w), g, create_graph=True)
    probes = [T.randn(*f.shape, seed=22 + i, dtype=f.dtype) for i, f in enumerate(first)]
    scalar = sum((f * p).sum() for f, p in zip(first, probes))
    second = torch.autograd.grad(scalar, (x, w))
    return out, first, second


@pytest.mark.parametrize("lmaxes", SPECS, ids=lambda s: "in{}-out{}-corr{}".format(*s))
def test_matches_reference_to_second_order(lmaxes):
    spec = kernels.ContractionSpec(*lmaxes)
    x, species, w = _inputs(spec)
    out, first, second = _derivatives(T.ops(), spec, x, species, w)
    out_r, first_r, second_r = _derivatives(T.ref(), spec, x, species, w)
    assert T.rel_err(out, out_r) < 1e-13
    for a, b in zip(first + second, first_r + second_r):
        assert T.rel_err(a, b) < 1e-12
    assert torch.all(first[1][S - 1] == 0)  # an absent species gets no weight gradient


def test_gradcheck_and_gradgradcheck():
    spec = kernels.ContractionSpec(1, 1, 2)
    x, species, w = _inputs(spec, n=4)
    x = x.detach()[:, :, :2].contiguous().requires_grad_(True)
    w = w.detach()[:, :, :2].contiguous().requires_grad_(True)
    f = lambda a, b: T.ops().symmetric_contraction(a, species, b, spec)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, w), fast_mode=not T.GPU)
    assert torch.autograd.gradgradcheck(f, (x, w), fast_mode=not T.GPU)


def test_bad_species_and_empty():
    spec = kernels.ContractionSpec(1, 1, 2)
    x, species, w = _inputs(spec)
    with pytest.raises(ValueError, match="species must lie in"):
        T.ops().symmetric_contraction(x, species + S, w, spec)
    x0 = x[:0].detach().requires_grad_(True)
    out = T.ops().symmetric_contraction(x0, species[:0], w, spec)
    assert out.shape == (0, spec.dim_out, C)
    gx, gw = torch.autograd.grad(out.sum(), (x0, w))
    assert gx.shape == x0.shape and torch.all(gw == 0)


@pytest.mark.parametrize("n, num_species", [(0, 3), (1, 1), (130, 10), (9000 if T.GPU else 700, 2)])
def test_species_plan_is_a_stable_sort_cut_into_chunks(n, num_species):
    """perm and ptr as torch.sort(stable) and searchsorted give them, across several blocks of the kernel;
    each species' chunks follow the previous species' ones; the per-species sum adds each species' chunks."""
    from kernels.triton.species_plan import species_plan, species_sum
    species = torch.randint(0, num_species, (n,), generator=torch.Generator().manual_seed(n)).to(T.DEVICE)
    plan = species_plan(species, num_species, ch=4)
    sorted_species, want = torch.sort(species, stable=True)
    assert torch.equal(plan.perm, want)
    assert torch.equal(plan.ptr, torch.searchsorted(sorted_species, torch.arange(num_species + 1, device=T.DEVICE)))
    chunk_ptr = [0] + torch.cumsum((torch.bincount(species, minlength=num_species) + 3) // 4, 0).tolist()
    assert chunk_ptr[-1] <= plan.nchunk
    partials = T.randn(plan.nchunk, 2, 3, seed=1)
    sums = species_sum(partials, plan)
    for s in range(num_species):
        assert torch.allclose(sums[s], partials[chunk_ptr[s]:chunk_ptr[s + 1]].sum(0), rtol=1e-12, atol=0)


def test_species_plan_counts_out_of_range_species():
    from kernels.triton.species_plan import species_plan
    plan = species_plan(torch.tensor([0, 3, 1, -1, 2, 1, 2**32 + 1], device=T.DEVICE), 3, ch=1)
    assert plan.ptr.tolist() == [0, 1, 3, 4]  # ptr[S] = 4 of 7 atoms in range (2**32 + 1 is not species 1)
    assert plan.perm[:4].tolist() == [0, 2, 5, 4]


@pytest.mark.skipif(not T.GPU, reason="CUDA-graph capture needs a GPU")
def test_contraction_captures_in_a_cuda_graph():
    """The public op (species plan included) reads nothing back inside a capture, and the replay follows new
    species written into the captured tensor."""
    spec = kernels.ContractionSpec(1, 1, 3)
    x, species, w = _inputs(spec, dtype=torch.float32)
    x, w = x.detach(), w.detach()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        T.ops().symmetric_contraction(x, species, w, spec)  # compile outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = T.ops().symmetric_contraction(x, species, w, spec)
    species.copy_(torch.flip(species, (0,)))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, T.ops().symmetric_contraction(x, species, w, spec))


def test_float32_error_bound_and_determinism():
    spec = kernels.ContractionSpec(3, 1, 3)
    x, species, w = _inputs(spec, seed=7)
    out64, first64, _ = _derivatives(T.ref(), spec, x, species, w)
    x32, w32 = (t.detach().float().requires_grad_(True) for t in (x, w))
    runs = []
    for _ in range(2):
        out = T.ops().symmetric_contraction(x32, species, w32, spec)
        g = T.randn(*out.shape, seed=21, dtype=torch.float32)
        runs.append((out, torch.autograd.grad(out, (x32, w32), g)))
    (out, first), (out2, first2) = runs
    # float32 bound: cubic monomials summed over hundreds of couplings, relative error a few eps
    assert T.rel_err(out, out64) < 2e-6
    for a, b in zip(first, first64):
        assert T.rel_err(a, b) < 2e-6
    assert torch.equal(out, out2)  # bitwise, run to run (weight gradients: per-chunk partials, fixed order)
    for a, b in zip(first, first2):
        assert torch.equal(a, b)


def test_generated_sums_stay_shallow_for_large_forms():
    """The second-order form of (lmax_in 3 -> lmax_out 2, correlation 3), the AcAc/3BPA model size, once came
    out as one expression of hundreds of terms, and Triton's code generator (one recursion per binary
    operator) hit Python's recursion limit compiling it on a GPU. The interpreter never compiles, so check
    the generated source itself: no expression nests deeper than two
    chunked sums."""
    import ast

    from kernels.triton import contraction as sc
    from kernels.triton.poly import SUM_CHUNK, kernel_source

    def depth(node) -> int:  # nesting depth of binary operators: what the code generator recurses over
        below = max((depth(child) for child in ast.iter_child_nodes(node)), default=0)
        return below + isinstance(node, ast.BinOp)

    second = sc.pullback(sc.pullback(sc.base_form(3, 2, 3), 2), 0)
    tree = ast.parse(kernel_source("probe", second, (0, 1, 3)))
    deepest = max(depth(statement) for statement in ast.walk(tree) if isinstance(statement, (ast.Assign, ast.Expr)))
    assert deepest <= 2 * SUM_CHUNK + 8  # an outer sum of parenthesised inner sums, plus index arithmetic


def test_weight_slots_load_and_store_once_per_program():
    """Triton's coalescing pass walks the whole kernel once per load and store, so each weight slot is one
    [BC, K] load split into components, and each weight output one [BC, K] store (poly._split_lines): in the
    second-order l<=3 -> l<=1 kernels that was 8 of 39 s of sm_90 compilation. Node slots keep one load per
    component (packing them cost run time). Counted in the generated source of every kernel of the plan."""
    from kernels.triton import contraction as sc
    from kernels.triton.poly import kernel_source

    second = sc.pullback(sc.pullback(sc.base_form(3, 1, 3), 2), 0)  # slots: x, W, g, G_out, G_x
    weight_slots = [i for i, (kind, _) in enumerate(second.slots) if kind == "weight"]
    for part, comps in sc.launch_plan(second, (0, 1, 3)):
        src = kernel_source("probe", second, part, comps)
        for t in weight_slots:
            assert src.count(f"tl.load(S{t} +") <= 1, (part, comps, t)
        for j, s in enumerate(part):
            if s in weight_slots:
                assert src.count(f"tl.store(O{j} +") == 1, (part, comps, s)


@pytest.fixture
def small_kernels(monkeypatch):
    """Kernels capped at 20 monomials, so that every derivative form splits into per-slot and per-component
    kernels (contraction.launch_plan) as the l<=3 -> l<=2 second order does at the real cap."""
    from kernels.triton import contraction as sc
    monkeypatch.setattr(sc, "MAX_MONOMIALS", 20)
    sc.launch_plan.cache_clear()
    yield sc
    sc.launch_plan.cache_clear()


def test_split_kernels_match_reference_to_second_order(small_kernels):
    sc = small_kernels
    spec = kernels.ContractionSpec(1, 1, 3)
    second_order = sc.pullback(sc.pullback(sc.base_form(1, 1, 3), 2), 0)
    plan = sc.launch_plan(second_order, (0, 1))
    assert len(plan) >= 3 and any(comps is not None for _, comps in plan)
    split = [c for part, c in plan if part == (0,)]  # the node slot's components, each written by one kernel
    assert sorted(i for c in split for i in c) == list(range(spec.dim_in))
    x, species, w = _inputs(spec)
    got = _derivatives(T.ops(), spec, x, species, w)
    want = _derivatives(T.ref(), spec, x, species, w)
    assert T.rel_err(got[0], want[0]) < 1e-13
    for a, b in zip(got[1] + got[2], want[1] + want[2]):
        assert T.rel_err(a, b) < 1e-12
