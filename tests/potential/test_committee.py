"""potential.Committee: means equal the members run alone, spreads equal their standard deviations, members
must agree; the ASE calculator and evaluate expose the spreads (float64, CPU; one CUDA test at the end)."""

import numpy as np
import pytest
import torch

from potential import Calculator, Committee, evaluate, load_committee, save_model

ELEMENTS = [1, 6, 8]


def _members(build_model, **kw):
    """Three members of different widths and depths (same elements, r_max, dtype), different weights."""
    return [build_model(seed=1, **kw), build_model(seed=2, channels=4, atomic_energies=[-13.0, -1029.0, -2041.0], **kw),
            build_model(seed=3, num_interactions=1, shift=-1.0, **kw)]


@pytest.fixture
def members(make_model):
    return _members(make_model)


@pytest.fixture
def structures(props, rng):
    return [props.random_crystal(rng, 4, ELEMENTS), props.random_cluster(rng, 5, ELEMENTS),
            props.random_crystal(rng, 3, ELEMENTS)]


def _spreads(energies, forces, n):
    """Reference statistics with numpy: energies [M] eV, forces [M, n, 3] eV/Å."""
    mean = forces.mean(0)
    per_atom = np.sqrt(((forces - mean) ** 2).sum(-1).mean(0))
    return np.std(energies / n), per_atom, per_atom.max()


def test_mean_and_spread_equal_the_members_alone(members, structures):
    alone = [evaluate(structures, m, stress=True) for m in members]
    together = evaluate(structures, models=members, stress=True)
    for b, s in enumerate(structures):
        r = together[b]
        energies = np.array([a[b]["energy"] for a in alone])
        forces = np.stack([a[b]["forces"] for a in alone])
        assert r["energy"] == pytest.approx(energies.mean(), rel=1e-13)
        assert np.allclose(r["forces"], forces.mean(0), rtol=0, atol=1e-12)
        assert np.allclose(r["member_energies"], energies, rtol=1e-13, atol=0)
        if alone[0][b]["stress"] is not None:
            stress = np.stack([a[b]["stress"] for a in alone])
            assert np.allclose(r["stress"], stress.mean(0), rtol=0, atol=1e-12)
        e_std, spread, worst = _spreads(energies, forces, len(s))
        assert e_std > 1e-3  # the members really differ, so the check below is not 0 == 0
        assert r["energy_per_atom_std"] == pytest.approx(e_std, rel=1e-10)
        assert np.allclose(r["force_spread"], spread, rtol=1e-10, atol=1e-13)
        assert r["max_force_spread"] == pytest.approx(worst, rel=1e-10)
        assert r["max_force"] == pytest.approx(np.linalg.norm(forces.mean(0), axis=1).max(), rel=1e-12)


def test_identical_members_have_zero_spread(members, structures):
    twin = Committee([members[0], members[0]])
    for r, a in zip(evaluate(structures, twin), evaluate(structures, members[0])):
        assert r["energy"] == pytest.approx(a["energy"], rel=1e-14)
        assert r["energy_per_atom_std"] == 0.0 and r["max_force_spread"] == 0.0


def test_calculator_from_files(members, structures, tmp_path):
    paths = []
    for k, m in enumerate(members):
        paths.append(tmp_path / f"model_{k}.pt")
        save_model(m, paths[-1])
    crystal = structures[0]
    ref = evaluate([crystal], models=members, stress=True)[0]
    for static in (False, True):  # eager Verlet list, and the padded StaticStep path (eager on the CPU)
        atoms = crystal.copy()
        atoms.calc = Calculator.from_file(paths, static=static)
        assert isinstance(atoms.calc.model, Committee) and len(atoms.calc.model) == 3
        assert atoms.get_potential_energy() == pytest.approx(ref["energy"], rel=1e-12)
        assert np.allclose(atoms.get_forces(), ref["forces"], rtol=0, atol=1e-10)
        assert np.allclose(atoms.get_stress(voigt=False), ref["stress"], rtol=0, atol=1e-10)
        calc = atoms.calc
        assert calc.get_property("energy_per_atom_std", atoms) == pytest.approx(ref["energy_per_atom_std"], rel=1e-9)
        assert np.allclose(calc.get_property("force_spread", atoms), ref["force_spread"], rtol=1e-9, atol=1e-12)
        assert calc.get_property("max_force_spread", atoms) == pytest.approx(ref["max_force_spread"], rel=1e-9)
        member_forces = calc.get_property("member_forces", atoms)  # [M, N, 3]: not hidden
        assert member_forces.shape == (3, len(atoms), 3)
        assert np.allclose(member_forces.mean(0), atoms.get_forces(), rtol=0, atol=1e-12)
    assert np.allclose(evaluate([crystal], models=paths)[0]["forces"], ref["forces"], rtol=0, atol=1e-12)


def test_static_steps_match_the_eager_committee(make_model, members, structures):
    """Members of one size share one StackedStep (one list, one step, members stacked); others get a
    CommitteeStep (a StaticStep each). Both equal Committee.forward; the calculator moves atoms in between."""
    from potential.committee import CommitteeStep, StackedStep

    same = Committee([make_model(seed=5), make_model(seed=6, shift=-1.1), make_model(seed=7, scale=0.5)])
    assert same.same_size() and not Committee(members).same_size()
    for committee, kind in ((same, StackedStep), (Committee(members), CommitteeStep)):
        atoms = structures[0].copy()
        atoms.calc = Calculator(committee, static=True)
        for _ in range(2):
            atoms.positions += 0.05 * np.random.default_rng(0).normal(size=atoms.positions.shape)
            ref = evaluate([atoms], committee, stress=True)[0]
            assert atoms.get_potential_energy() == pytest.approx(ref["energy"], rel=1e-12)
            assert np.allclose(atoms.get_forces(), ref["forces"], rtol=0, atol=1e-10)
            assert np.allclose(atoms.get_stress(voigt=False), ref["stress"], rtol=0, atol=1e-10)
            assert np.allclose(atoms.calc.results["force_spread"], ref["force_spread"], rtol=1e-9, atol=1e-12)
            assert atoms.calc.results["energy_per_atom_std"] == pytest.approx(ref["energy_per_atom_std"], rel=1e-9)
            assert atoms.get_potential_energies().sum() == pytest.approx(ref["energy"], rel=1e-12)
        assert type(atoms.calc.step) is kind


def test_single_model_calculator_has_no_spread(members, structures):
    atoms = structures[1].copy()
    atoms.calc = Calculator(members[0])
    atoms.get_potential_energy()
    assert "max_force_spread" not in atoms.calc.results


def test_members_must_agree(make_model, tmp_path):
    a = make_model(seed=1)
    with pytest.raises(ValueError, match=r"member 1 has elements \[1, 6\], but member 0 has elements \[1, 6, 8\]"):
        Committee([a, make_model(seed=2, elements=[1, 6], atomic_energies=[])])
    with pytest.raises(ValueError, match=r"member 2 has r_max 4.0, but member 0 has r_max 3.0"):
        Committee([a, make_model(seed=2), make_model(seed=3, r_max=4.0)])
    with pytest.raises(ValueError, match="at least 2 members"):
        Committee([a])
    save_model(a, tmp_path / "a.pt")
    save_model(make_model(seed=4, r_max=3.5), tmp_path / "b.pt")
    with pytest.raises(ValueError, match=r"b\.pt has r_max 3\.5, but .*a\.pt has r_max 3\.0"):
        load_committee([tmp_path / "a.pt", tmp_path / "b.pt"])
    with pytest.raises(ValueError, match="either model or models"):
        evaluate([], a, models=[a, a])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("same_size", [True, False])
def test_cuda_committee_calculator_matches_cpu(make_model, structures, same_size):
    """On CUDA the calculator's static path (StackedStep: one captured graph for all members; or CommitteeStep:
    one per member) and its eager path equal the CPU committee, over a few moves (graph replays)."""
    from potential.committee import CommitteeStep, StackedStep

    def build(**kw):
        if same_size:
            return [make_model(seed=5, **kw), make_model(seed=6, shift=-1.1, **kw), make_model(seed=7, scale=0.5, **kw)]
        return _members(make_model, **kw)

    cpu, cuda = Committee(build()), Committee(build(backend="auto")).to("cuda")
    for static in (True, False):
        atoms = structures[0].copy()
        atoms.calc = Calculator(cuda, static=static)
        for step in range(3):
            atoms.positions += 0.05 * np.random.default_rng(step).normal(size=atoms.positions.shape)
            ref = evaluate([atoms], cpu, stress=True)[0]
            assert atoms.get_potential_energy() == pytest.approx(ref["energy"], rel=1e-9)
            assert np.allclose(atoms.get_forces(), ref["forces"], rtol=0, atol=1e-8)
            assert np.allclose(atoms.get_stress(voigt=False), ref["stress"], rtol=0, atol=1e-8)
            assert atoms.calc.results["max_force_spread"] == pytest.approx(ref["max_force_spread"], rel=1e-7)
        if static:
            assert type(atoms.calc.step) is (StackedStep if same_size else CommitteeStep)
