"""Autotuning of the Triton tiles (kernels/triton/autotune.py).

On CPU the choice logic runs with its GPU parts replaced: a fake timer (each candidate's "time" is given), a fake
GPU name, and the device check forced on. On a GPU the real conv is tuned into a temporary cache
and must give the reference's numbers.
"""
from __future__ import annotations

import json

import pytest
import torch

from tests.kernels._triton_common import GPU, requires_triton

pytestmark = requires_triton


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """autotune with an empty memory and its cache in tmp_path."""
    from kernels.triton import autotune, tuning
    monkeypatch.setenv("TUMBLER_AUTOTUNE_CACHE", str(tmp_path))
    monkeypatch.delenv("TUMBLER_AUTOTUNE", raising=False)
    tuning.knobs_changed()
    monkeypatch.setattr(autotune, "_CHOICES", {})
    monkeypatch.setattr(autotune, "_STORED", {})
    yield autotune
    tuning.knobs_changed()


@pytest.fixture
def tuner(fresh, monkeypatch):
    """`fresh`, with fake GPU parts: returns (module, the configs timed)."""
    autotune = fresh
    monkeypatch.setattr(autotune, "_can_time", lambda device: True)
    monkeypatch.setattr(autotune, "_gpu_name", lambda: "Fake GPU 9000")
    timed = []
    times = {(4, 32, 4): 3.0, (8, 32, 8): 1.0, (2, 32, 2): 2.0}

    def fake_time(run, config):
        run(config)
        timed.append(config)
        return times[config]

    monkeypatch.setattr(autotune, "_time", fake_time)
    return autotune, timed


CANDIDATES = [(4, 32, 4), (8, 32, 8), (2, 32, 2)]


def compiling() -> bool:
    """Whether the launches of the moment are only recorded, to be compiled (kernels/triton/launch.py)."""
    from kernels.triton import launch
    return launch.compiling()
CPU = torch.device("cpu")


def test_fastest_is_chosen_remembered_and_stored(tuner, tmp_path):
    autotune, timed = tuner
    ran = []
    problem = ("tab", 128, torch.float32, 15)

    def run(config):  # (config, whether the launchers only compile)
        ran.append((config, compiling()))

    assert autotune.choose("conv_recv", problem, lambda: CANDIDATES, run, CPU) == (8, 32, 8)
    # every candidate compiled first, all at once, then each timed on the call's own buffers
    assert ran == [(c, True) for c in CANDIDATES] + [(c, False) for c in CANDIDATES]
    assert timed == CANDIDATES
    # a second call takes the choice from memory: no timing, no candidate list
    assert autotune.choose("conv_recv", problem, lambda: pytest.fail("listed again"), run, CPU) == (8, 32, 8)
    assert len(timed) == 3 and len(ran) == 6
    (path,) = tmp_path.glob("autotune-Fake-GPU-9000-triton*.json")
    data = json.loads(path.read_text())
    assert data["gpu"] == "Fake GPU 9000"
    assert data["choices"] == {"conv_recv tab,128,torch.float32,15": [8, 32, 8]}
    assert not list(tmp_path.glob("*.tmp"))  # written under a temporary name, then renamed


def test_next_process_recalls_the_stored_choice(tuner, monkeypatch):
    autotune, timed = tuner
    problem = ("tab", 64, torch.float32, 12)
    autotune.choose("conv_sender", problem, lambda: CANDIDATES, lambda c: None, CPU)
    monkeypatch.setattr(autotune, "_CHOICES", {})  # a new process: empty memory, same file
    monkeypatch.setattr(autotune, "_STORED", {})
    assert autotune.choose("conv_sender", problem, lambda: CANDIDATES, lambda c: None, CPU) == (8, 32, 8)
    assert len(timed) == 3  # recalled, not timed again
    # a stored tile that is no longer a candidate is tuned again
    monkeypatch.setattr(autotune, "_CHOICES", {})
    assert autotune.choose("conv_sender", problem, lambda: [(4, 32, 4), (2, 32, 2)], lambda c: None, CPU) == (2, 32, 2)
    assert len(timed) == 5


def test_other_problems_and_processes_keep_their_entries(tuner, tmp_path, monkeypatch):
    autotune, _ = tuner
    autotune.choose("conv_recv", ("a", 1), lambda: CANDIDATES, lambda c: None, CPU)
    monkeypatch.setattr(autotune, "_STORED", {})  # another process wrote meanwhile: its entry must survive
    (path,) = tmp_path.glob("*.json")
    data = json.loads(path.read_text())
    data["choices"]["conv_edge x,2"] = [2, 32, 2]
    path.write_text(json.dumps(data))
    autotune.choose("conv_recv", ("b", 2), lambda: CANDIDATES, lambda c: None, CPU)
    assert set(json.loads(path.read_text())["choices"]) == {"conv_recv a,1", "conv_recv b,2", "conv_edge x,2"}


def test_corrupt_cache_warns_and_tunes_again(tuner, tmp_path):
    autotune, timed = tuner
    path = autotune._file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    with pytest.warns(RuntimeWarning, match="ignoring the autotune cache"):
        assert autotune.choose("conv_recv", ("t",), lambda: CANDIDATES, lambda c: None, CPU) == (8, 32, 8)
    assert len(timed) == 3
    assert json.loads(path.read_text())["choices"] == {"conv_recv t": [8, 32, 8]}


def test_failing_candidate_is_skipped_but_a_failing_default_raises(tuner, monkeypatch):
    autotune, _ = tuner

    def run(config):
        if config != (4, 32, 4):
            raise RuntimeError("out of resources")

    with pytest.warns(RuntimeWarning, match="failed"):
        assert autotune.choose("conv_edge", ("p",), lambda: CANDIDATES, run, CPU) == (4, 32, 4)

    def bad_default(config):
        raise RuntimeError("compile error")

    with pytest.raises(RuntimeError, match="compile error"):
        autotune.choose("conv_edge", ("q",), lambda: CANDIDATES, bad_default, CPU)


def test_modes(tuner, monkeypatch, tmp_path):
    autotune, timed = tuner
    from kernels.triton import tuning
    ran = []
    monkeypatch.setenv("TUMBLER_AUTOTUNE", "0")
    tuning.knobs_changed()
    assert autotune.choose("conv_recv", ("m0",), lambda: CANDIDATES, ran.append, CPU) == (4, 32, 4)
    assert ran == [] and timed == []
    monkeypatch.setenv("TUMBLER_AUTOTUNE", "compile")  # every candidate compiled, the default kept, nothing stored
    tuning.knobs_changed()
    assert autotune.choose("conv_recv", ("m1",), lambda: CANDIDATES,
                           lambda c: ran.append((c, compiling())), CPU) == (4, 32, 4)
    assert ran == [(c, True) for c in CANDIDATES] and timed == [] and not list(tmp_path.glob("*.json"))
    monkeypatch.setenv("TUMBLER_AUTOTUNE", "yes")
    tuning.knobs_changed()
    with pytest.raises(ValueError, match="TUMBLER_AUTOTUNE='yes'"):
        autotune.choose("conv_recv", ("m2",), lambda: CANDIDATES, ran.append, CPU)


def test_no_timing_off_the_gpu_or_while_capturing(tuner, monkeypatch):
    autotune, timed = tuner
    monkeypatch.setattr(autotune, "_can_time", lambda device: False)
    assert autotune.choose("conv_recv", ("cap",), lambda: CANDIDATES, lambda c: None, CPU) == (4, 32, 4)
    assert timed == [] and autotune.choices() == {}  # not remembered: a later eager call may still tune


def test_candidates_are_pruned_to_the_register_budget():
    from kernels.triton import contraction, conv
    for C in (8, 32, 64, 128, 256):
        for K_out in (1, 4, 9, 16):
            for tiles, per_thread in ((conv.recv_candidates(C, K_out), max(1, 32 // K_out)),
                                      (conv.node_candidates(C, 1), 4),
                                      (conv.node_candidates(C, K_out), 1 if K_out > 1 else 4),
                                      (conv.edge_candidates(C, K_out), 1)):
                assert len(set(tiles)) == len(tiles) <= 5
                for be, bc, nw in tiles[1:]:  # the alternatives (the default comes first, as measured)
                    assert bc <= max(C, 1) or bc == 1 << (C - 1).bit_length()
                    assert 32 * nw <= be * bc <= 32 * nw * per_thread
        assert conv.recv_candidates(C, 16)[0] == conv.recv_config(C)
        tiles = contraction.tile_candidates(C)
        assert tiles[0] == contraction.tile_config(C) and all(nb * bc == 32 * nw for nb, bc, nw in tiles)


@pytest.mark.skipif(not GPU, reason="tunes real kernels: needs a CUDA device (CPU runs the logic above)")
def test_tuned_kernels_match_the_reference(fresh, tmp_path):
    """Real timing and GPU name: the tuned conv equals the reference, and its choices are stored."""
    from tests.kernels._triton_common import ops, random_graph, ref
    import kernels
    torch.manual_seed(0)
    spec = kernels.ConvSpec(1, 3, 3)
    N, E, C = 500, 8000, 64
    graph = random_graph(N, E)
    h = torch.randn(N, spec.dim_in, C, device="cuda", requires_grad=True)
    Y = torch.randn(E, spec.dim_sh, device="cuda", requires_grad=True)
    R = torch.randn(E, spec.num_paths, C, device="cuda", requires_grad=True)
    g = torch.randn(N, spec.dim_out, C, device="cuda")
    got = torch.autograd.grad(ops().edge_conv(h, Y, R, graph, spec), (h, Y, R), g)
    want = torch.autograd.grad(ref().edge_conv(h, Y, R, graph, spec), (h, Y, R), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    tuned = fresh.choices()
    assert any(k.startswith("conv_recv ") for k in tuned) and any(k.startswith("conv_sender ") for k in tuned)
    (path,) = tmp_path.glob("autotune-*.json")
    assert json.loads(path.read_text())["choices"] == tuned
    again = torch.autograd.grad(ops().edge_conv(h, Y, R, graph, spec), (h, Y, R), g)
    assert all(torch.equal(a, b) for a, b in zip(got, again))  # the choice holds: bitwise the same


@pytest.fixture
def untuned(fresh, monkeypatch):
    """No timing: the tiles not forced by a test keep their defaults."""
    monkeypatch.setenv("TUMBLER_AUTOTUNE", "0")


def _forced(monkeypatch, env: str, tile: tuple):
    from kernels.triton import tuning
    monkeypatch.setenv(env, ",".join(map(str, tile)))
    tuning.knobs_changed()


_C = 64 if GPU else 37  # 37 channels: a partial channel block in every tile


@pytest.mark.parametrize("lmax_in", [0, 1])
def test_every_candidate_tile_matches_the_reference(lmax_in, monkeypatch, untuned):
    """Whatever tuning picks is correct: each candidate tile of each conv kernel, forced through its knob, gives
    the reference's value, gradients and force-training gradients (float64)."""
    import kernels
    from kernels.triton import conv
    from tests.kernels._triton_common import ops, randn, random_graph, ref, rel_err
    spec = kernels.ConvSpec(lmax_in, 2, 2)
    N, E = (300, 4000) if GPU else (7, 19)
    graph = random_graph(N, E, seed=5, isolated=1)
    h = randn(N, spec.dim_in, _C, seed=1, requires_grad=True)
    y = randn(E, spec.dim_sh, seed=2, requires_grad=True)
    w = randn(E, spec.num_paths, _C, seed=3, requires_grad=True)
    g = randn(N, spec.dim_out, _C, seed=4)

    def passes(o):
        out = o.edge_conv(h, y, w, graph, spec)
        first = torch.autograd.grad(out, (h, y, w), g, create_graph=True)
        return (out,) + first + torch.autograd.grad((first[1] ** 2).sum(), (h, w))  # the force-training pass

    want = passes(ref())
    tab = conv.table_for(lmax_in, 2, 2)
    for env, tiles in (("TUMBLER_CONV_RECV_CFG", conv.recv_candidates(_C, tab.K_out)),
                       ("TUMBLER_CONV_NODE_CFG", conv.node_candidates(_C, tab.K_in)),
                       ("TUMBLER_CONV_EDGE_CFG", conv.edge_candidates(_C, max(tab.K_in, tab.K_out)))):
        for tile in tiles:
            _forced(monkeypatch, env, tile)
            for a, b in zip(passes(ops()), want):
                assert rel_err(a, b) < 1e-12, (env, tile)
        monkeypatch.delenv(env)


def test_every_contraction_candidate_matches_the_reference(monkeypatch, untuned):
    import kernels
    from kernels.triton import contraction
    from tests.kernels._triton_common import DEVICE, ops, randn, ref, rel_err
    spec = kernels.ContractionSpec(2, 1, 3)
    N = 700 if GPU else 11
    x = randn(N, spec.dim_in, _C, seed=1, requires_grad=True)
    w = randn(3, spec.num_weights, _C, seed=2, requires_grad=True)
    species = torch.arange(N, device=DEVICE) % 3

    def passes(o):
        out = o.symmetric_contraction(x, species, w, spec)
        first = torch.autograd.grad(out, (x, w), randn(*out.shape, seed=3), create_graph=True)
        return (out,) + first + torch.autograd.grad((first[0] ** 2).sum(), (x, w))

    want = passes(ref())
    for tile in contraction.tile_candidates(_C):
        _forced(monkeypatch, "TUMBLER_SC_CFG", tile)
        for a, b in zip(passes(ops()), want):
            assert rel_err(a, b) < 1e-12, tile


def test_a_precompile_pass_compiles_the_candidates_and_chooses_nothing(tuner, tmp_path):
    """Under launch.precompile (the first step of a process, kernels.Ops.precompile) a new problem compiles every
    candidate and returns the default without timing or storing; the first real call then times them. A problem
    with a stored choice compiles only that choice."""
    autotune, timed = tuner
    from kernels.triton import launch
    ran = []

    def run(config):
        ran.append((config, compiling()))

    got = []

    def call():  # as a launcher does: choose, then launch the choice
        got.append(autotune.choose("conv_recv", ("p",), lambda: CANDIDATES, run, CPU))
        run(got[-1])

    launch.precompile(call)
    assert got == [(4, 32, 4)] and timed == [] and not list(tmp_path.glob("*.json"))
    assert sorted(ran) == sorted((c, True) for c in CANDIDATES)
    assert not compiling()
    assert autotune.choose("conv_recv", ("p",), lambda: CANDIDATES, run, CPU) == (8, 32, 8)  # tuned for real
    assert timed == CANDIDATES
    autotune._CHOICES.clear()  # a new process: the choice comes from the file
    ran.clear()
    got.clear()
    launch.precompile(call)
    assert got == [(8, 32, 8)] and ran == [((8, 32, 8), True)]


def test_precompile_runs_only_where_kernels_compile():
    import kernels
    from kernels.triton import launch
    ran = []
    assert kernels.get_ops("reference").precompile(lambda: ran.append(1), torch.device("cpu")) is False
    assert kernels.get_ops("triton").precompile(lambda: ran.append(1), torch.device("cpu")) is False
    assert ran == []
    inner = []
    launch.precompile(lambda: launch.precompile(lambda: inner.append(compiling())))  # nested: one pass
    assert inner == [True] and not compiling()
