"""LAMMPS (the real one, built by tools/build_lammps.sh) against our ASE calculator, same structure, float64.

Each test runs LAMMPS in a child process (tests/lammps/driver.py, under mpirun for several ranks) with
`pair_style mliap unified FILE 1` and compares energy, forces, per-atom energies (compute pe/atom) and the virial
(compute pressure ... virial) with potential.Calculator to 1e-8 relative.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

from potential import Calculator

R_MAX, SKIN = 4.0, 1.0  # as in conftest.py
ELEMENTS = ["H", "C", "O", "Cu"]
RTOL = 1e-8


def comm_cutoff(num_interactions: int) -> float:
    """The rule of potential.lammps: num_interactions * r_max + skin."""
    return num_interactions * R_MAX + SKIN


def lammps_form(atoms: Atoms) -> Atoms:
    """The same structure with a lower-triangular cell (LAMMPS's form), rotated rigidly."""
    cell, rotation = atoms.cell.standard_form()
    out = atoms.copy()
    out.set_cell(cell, scale_atoms=False)
    out.positions = atoms.positions @ rotation.T
    return out


def cu_triclinic() -> Atoms:
    """4 Cu atoms in a strained, skewed cell whose shortest height (~2 Å) is far below 2 x r_max."""
    rng = np.random.default_rng(0)
    atoms = bulk("Cu", "fcc", a=3.61).repeat((2, 2, 1))
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.03 * rng.standard_normal((3, 3))), scale_atoms=True)
    atoms.positions += 0.08 * rng.standard_normal(atoms.positions.shape)
    return lammps_form(atoms)


def cu_cubic() -> Atoms:
    """32 Cu atoms (2 x 2 x 2 conventional cells, 7.2 Å), rattled."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.positions += 0.1 * np.random.default_rng(1).standard_normal(atoms.positions.shape)
    return atoms


def molecule_in_box(name: str = "CH3CH2OH") -> Atoms:
    """A molecule in the middle of a 12 Å box, not periodic (LAMMPS: boundary f f f)."""
    atoms = molecule(name)
    atoms.positions += 0.05 * np.random.default_rng(2).standard_normal(atoms.positions.shape)
    atoms.set_cell(np.eye(3) * 12.0)
    atoms.center()
    atoms.pbc = False
    return atoms


def reference(model, atoms: Atoms) -> dict:
    """Our ASE calculator: energy, forces, per-atom energies and the virial W = sum_pairs r_ij (x) f_ij (eV),
    which is -stress * volume for a periodic cell and sum_i x_i (x) F_i for a finite system."""
    atoms = atoms.copy()
    atoms.calc = Calculator(model)
    out = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
           "energies": atoms.get_potential_energies()}
    if atoms.pbc.all():
        out["virial"] = -atoms.get_stress(voigt=False) * atoms.get_volume()
    else:
        out["virial"] = atoms.positions.T @ out["forces"]
    return out


def assert_matches(got: dict, want: dict, rtol: float = RTOL) -> None:
    """Every quantity to rtol relative to its largest entry."""
    for key in ("energy", "forces", "energies", "virial"):
        a, b = np.asarray(got[key], dtype=float), np.asarray(want[key], dtype=float)
        assert a.shape == b.shape, (key, a.shape, b.shape)
        scale = max(float(np.abs(b).max()), 1e-12)
        err = float(np.abs(a - b).max())
        assert err <= rtol * scale, f"{key}: max |LAMMPS - ASE| = {err:.3e} > {rtol:g} x {scale:.3e}"


@pytest.mark.parametrize("num_interactions, ghostneigh", [(1, 0), (1, 1), (2, 1)])
@pytest.mark.parametrize("structure", [cu_triclinic, molecule_in_box], ids=["cu-triclinic", "molecule"])
def test_single_rank_matches_ase(lmp, models, tmp_path, structure, num_interactions, ghostneigh):
    model, exported = models[num_interactions]
    atoms = structure()
    got = lmp.run(tmp_path, atoms, exported, ELEMENTS, ghostneigh=ghostneigh, skin=SKIN,
                  comm_cutoff=comm_cutoff(num_interactions))
    want = reference(model, atoms)
    assert_matches(got, want)
    assert np.abs(got["forces"]).max() > 1e-3  # a structure with real forces, not a trivial match
    assert np.abs(got["energies"] - got["energies"].mean()).max() > 1e-6  # and atoms that differ


@pytest.mark.parametrize("nprocs, processors, structure", [
    (2, "2 1 1", cu_cubic), (4, "1 2 2", cu_cubic), (4, "2 2 1", cu_triclinic), (2, "1 1 2", molecule_in_box)],
    ids=["np2-cu", "np4-cu", "np4-cu-triclinic", "np2-molecule"])
def test_mpi_ranks_match_one_rank(lmp, models, tmp_path, nprocs, processors, structure):
    """Domain splits that cut through the system (and, for the 4-atom cell, ranks that own no atom) give the
    numbers of one rank, and of ASE, for the two-layer model."""
    model, exported = models[2]
    atoms = structure()
    kwargs = dict(ghostneigh=1, skin=SKIN, comm_cutoff=comm_cutoff(2))
    many = lmp.run(tmp_path, atoms, exported, ELEMENTS, nprocs=nprocs, processors=processors, **kwargs)
    one = lmp.run(tmp_path, atoms, exported, ELEMENTS, **kwargs)
    assert int(many["nprocs"]) == nprocs and int(one["nprocs"]) == 1
    assert_matches(many, one)
    assert_matches(many, reference(model, atoms))


def test_nve_conserves_energy_like_ase(lmp, models, tmp_path):
    """20 velocity-Verlet steps of 1 fs in LAMMPS (fix nve) and in ASE from the same state: the same potential
    energies step by step, and the total energy conserved as well as ASE conserves it."""
    model, exported = models[2]
    atoms = cu_cubic()
    MaxwellBoltzmannDistribution(atoms, temperature_K=600, rng=np.random.default_rng(3))  # noqa
    Stationary(atoms)
    steps = 20
    got = lmp.run(tmp_path, atoms, exported, ELEMENTS, skin=SKIN, comm_cutoff=comm_cutoff(2), nve_steps=steps,
                  timestep_ps=0.001)

    md_atoms = atoms.copy()
    md_atoms.set_velocities(atoms.get_velocities())
    md_atoms.calc = Calculator(model)
    pe, etotal = [], []

    def record():
        pe.append(md_atoms.get_potential_energy())
        etotal.append(pe[-1] + md_atoms.get_kinetic_energy())

    dyn = VelocityVerlet(md_atoms, timestep=1.0 * units.fs)
    dyn.attach(record, interval=1)  # ASE calls it before the first step and after each step
    dyn.run(steps)
    pe, etotal = np.array(pe), np.array(etotal)
    assert got["pe"].shape == (steps + 1,) and pe.shape == (steps + 1,)
    drift_lammps = np.abs(got["etotal"] - got["etotal"][0]).max()
    drift_ase = np.abs(etotal - etotal[0]).max()
    print(f"NVE {steps} steps: pe moves {np.ptp(pe):.3e} eV; max |pe LAMMPS - ASE| "
          f"{np.abs(got['pe'] - pe).max():.3e} eV; etotal drift LAMMPS {drift_lammps:.3e}, ASE {drift_ase:.3e} eV")
    assert np.ptp(pe) > 5e-3  # the atoms move: the potential energy changes
    np.testing.assert_allclose(got["pe"], pe, rtol=0, atol=1e-6)  # the two codes follow the same trajectory
    assert drift_lammps <= 2 * drift_ase + 1e-6 and drift_lammps < 1e-4, (drift_lammps, drift_ase)


def test_unknown_element_stops_lammps_naming_it(lmp, models, tmp_path):
    _, exported = models[1]
    atoms = molecule_in_box("CH3CN")  # N: the model knows H, C, O, Cu
    proc = lmp.run(tmp_path, atoms, exported, ["H", "C", "N"], ghostneigh=0, expect_failure=True)
    output = proc.stdout + proc.stderr
    assert "unknown element(s) N (Z=7)" in output, output[-3000:]


def test_two_layers_without_ghostneigh_is_an_error(lmp, models, tmp_path):
    _, exported = models[2]
    proc = lmp.run(tmp_path, cu_triclinic(), exported, ELEMENTS, ghostneigh=0, expect_failure=True)
    output = proc.stdout + proc.stderr
    assert "ghostneigh" in output and "comm_modify cutoff 8" in output, output[-3000:]


@pytest.mark.gpu
def test_model_on_cuda_in_a_cpu_lammps(lmp, models, tmp_path):
    """The plain (CPU) LAMMPS build with the model on the GPU (fused Triton kernels via the "auto" backend)."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model, exported = models[2]
    atoms = cu_cubic()
    got = lmp.run(tmp_path, atoms, exported, ELEMENTS, skin=SKIN, comm_cutoff=comm_cutoff(2), nprocs=2,
                  processors="2 1 1", device="cuda")
    assert_matches(got, reference(model, atoms))
