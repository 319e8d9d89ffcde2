"""Property checks every tumbler model must pass, as plain functions of a model (and structures).

Each ``check_*`` raises AssertionError with the measured error. They work for any ``potential.Potential``
(any config, float64 strongly recommended for the tight tolerances), so other test suites can run them on
their own models: load this file with ``importlib`` (see conftest.py, ``load_properties``).
Structures are tiny random ASE Atoms; units eV, Å.
"""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from ase.build import make_supercell

import data


# ----------------------------------------------------------------------------------------- structures
def random_positions(rng: np.random.Generator, n: int, box: np.ndarray, min_dist: float = 0.9,
                     periodic: bool = False) -> np.ndarray:
    """n points uniform in the box spanned by the rows of ``box`` (3x3), pairwise >= min_dist (Å) apart
    (minimum image when periodic)."""
    inv = np.linalg.inv(box)
    out = []
    while len(out) < n:
        p = rng.random(3) @ box
        ok = True
        for q in out:
            d = p - q
            if periodic:
                f = d @ inv
                d = (f - np.round(f)) @ box
            ok = ok and np.linalg.norm(d) >= min_dist
        if ok:
            out.append(p)
    return np.array(out)


def random_cluster(rng: np.random.Generator, n: int, elements, size: float = 3.0) -> Atoms:
    """Non-periodic cluster of n atoms in a size^3 Å^3 box (no cell)."""
    pos = random_positions(rng, n, np.eye(3) * size)
    return Atoms(numbers=rng.choice(elements, n), positions=pos, pbc=False)


def random_crystal(rng: np.random.Generator, n: int, elements, a: float = 3.2) -> Atoms:
    """3D-periodic cell of n atoms: a sheared a x a x a cell (Å) with random positions."""
    cell = np.eye(3) * a + rng.normal(scale=0.25, size=(3, 3))
    pos = random_positions(rng, n, cell, periodic=True)
    return Atoms(numbers=rng.choice(elements, n), positions=pos, cell=cell, pbc=True)


def random_orthogonal(rng: np.random.Generator, reflect: bool) -> np.ndarray:
    """Random 3x3 rotation, times -1 (an improper rotation: rotation + inversion) when reflect."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return -q if reflect else q


# ----------------------------------------------------------------------------------------- evaluation
def to_batch(model, atoms_list, cutoff: float | None = None):
    """data.Batch of the structures, neighbour lists at ``cutoff`` (default r_max), in the model's dtype."""
    device = next(model.parameters()).device
    return data.Batch.from_atoms(list(atoms_list), cutoff if cutoff is not None else model.r_max,
                                 device=device, dtype=model.dtype)


def evaluate(model, atoms_list, stress: bool = False, cutoff: float | None = None) -> dict:
    """Model outputs as float64 numpy arrays: energy [B], node_energy [N], forces [N,3], stress [B,3,3]."""
    out = model(to_batch(model, atoms_list, cutoff), forces=True, stress=stress)
    return {k: v.detach().cpu().double().numpy() for k, v in out.items()}


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


# ----------------------------------------------------------------------------------------- checks
def check_o3_equivariance(model, atoms: Atoms, rng: np.random.Generator, tol: float = 1e-10) -> None:
    """E invariant, F -> F R^T, stress -> R S R^T under a proper and an improper rotation R."""
    periodic = bool(atoms.pbc.all())
    ref = evaluate(model, [atoms], stress=periodic)
    for reflect in (False, True):
        rot = random_orthogonal(rng, reflect)
        moved = atoms.copy()
        moved.positions = atoms.positions @ rot.T
        if periodic:
            moved.cell = atoms.cell.array @ rot.T
        out = evaluate(model, [moved], stress=periodic)
        what = "reflection" if reflect else "rotation"
        assert _rel(out["energy"], ref["energy"]) < tol, f"{what}: energy rel err {_rel(out['energy'], ref['energy'])}"
        assert _rel(out["node_energy"], ref["node_energy"]) < tol, f"{what}: node energies differ"
        err = _rel(out["forces"], ref["forces"] @ rot.T)
        assert err < tol, f"{what}: forces rel err {err}"
        if periodic:
            err = _rel(out["stress"][0], rot @ ref["stress"][0] @ rot.T)
            assert err < tol, f"{what}: stress rel err {err}"


def check_permutation(model, atoms: Atoms, rng: np.random.Generator, tol: float = 1e-10) -> None:
    """Relabelling atoms permutes node energies and forces and leaves E and stress alone."""
    periodic = bool(atoms.pbc.all())
    perm = rng.permutation(len(atoms))
    ref = evaluate(model, [atoms], stress=periodic)
    out = evaluate(model, [atoms[perm]], stress=periodic)
    assert _rel(out["energy"], ref["energy"]) < tol
    assert _rel(out["node_energy"], ref["node_energy"][perm]) < tol
    assert _rel(out["forces"], ref["forces"][perm]) < tol
    if periodic:
        assert _rel(out["stress"], ref["stress"]) < tol


def check_translation(model, atoms: Atoms, rng: np.random.Generator, tol: float = 1e-10) -> None:
    """A rigid translation (and, for periodic cells, wrapping back into the cell) changes nothing."""
    periodic = bool(atoms.pbc.all())
    ref = evaluate(model, [atoms], stress=periodic)
    moved = atoms.copy()
    moved.positions = atoms.positions + rng.normal(scale=3.0, size=3)
    variants = [moved]
    if periodic:
        wrapped = moved.copy()
        wrapped.wrap()
        variants.append(wrapped)
    for v in variants:
        out = evaluate(model, [v], stress=periodic)
        assert _rel(out["energy"], ref["energy"]) < tol
        assert _rel(out["forces"], ref["forces"]) < tol
        if periodic:
            assert _rel(out["stress"], ref["stress"]) < tol


def check_finite_difference_forces(model, atoms: Atoms, rng: np.random.Generator, h: float = 1e-4,
                                   num: int = 4, tol: float = 1e-6) -> None:
    """Forces equal -dE/dx by central differences (``num`` random coordinates; error O(h^2))."""
    forces = evaluate(model, [atoms])["forces"]
    for _ in range(num):
        i, k = int(rng.integers(len(atoms))), int(rng.integers(3))
        energies = []
        for sign in (1.0, -1.0):
            moved = atoms.copy()
            moved.positions[i, k] += sign * h
            energies.append(evaluate(model, [moved], stress=False)["energy"][0])
        fd = -(energies[0] - energies[1]) / (2 * h)
        err = abs(fd - forces[i, k])
        assert err < tol * max(1.0, abs(fd)), f"atom {i} axis {k}: force {forces[i, k]} vs finite difference {fd}"


def check_finite_difference_stress(model, atoms: Atoms, h: float = 1e-5, tol: float = 1e-6) -> None:
    """Stress equals (1/V) dE/d(strain) by central differences over the 6 symmetric strains (ASE sign)."""
    stress = evaluate(model, [atoms], stress=True)["stress"][0]
    volume = atoms.get_volume()
    for a, b in ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)):
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = 0.5 * h if a != b else h  # symmetric; d/d(eps_ab) of E over the pair
        energies = []
        for sign in (1.0, -1.0):
            moved = atoms.copy()
            moved.set_cell(atoms.cell.array @ (np.eye(3) + sign * eps), scale_atoms=True)
            energies.append(evaluate(model, [moved])["energy"][0])
        fd = (energies[0] - energies[1]) / (2 * h) / volume
        assert abs(fd - stress[a, b]) < tol * max(1.0, abs(fd)), f"stress[{a},{b}] {stress[a, b]} vs finite difference {fd}"


def check_cutoff_continuity(model, element: int, tol: float = 1e-6) -> None:
    """A neighbour crossing r_max: energy and forces continuous; beyond r_max it contributes exactly 0."""
    r_max = model.r_max

    def trimer(d):  # a bonded pair, and a third atom at distance d from the nearer one, on the axis
        return Atoms(numbers=[element] * 3, positions=[[0, 0, 0], [1.1, 0, 0], [1.1 + d, 0, 0]])

    # the envelope vanishes as (r_max - r)^3: energy differences across the cutoff go as d^3, forces as d^2
    jumps = []
    for d in (1e-3, 1e-4):
        inside, outside = evaluate(model, [trimer(r_max - d)]), evaluate(model, [trimer(r_max + d)])
        jumps.append((abs(inside["energy"][0] - outside["energy"][0]), np.abs(inside["forces"] - outside["forces"]).max()))
    assert jumps[1][0] < tol and jumps[1][1] < tol, f"energy / forces jump at r_max: {jumps[1]}"
    assert jumps[1][1] < jumps[0][1] / 30, f"forces are not C^1 across r_max: jumps {jumps}"
    # exactly zero beyond r_max: same energy as the pair plus an isolated atom, and with a list that holds
    # the too-long edges (a Verlet list with skin) the result is unchanged
    far = trimer(r_max + 0.5)
    pair = evaluate(model, [far[:2]])
    lone = evaluate(model, [far[2:]])
    out = evaluate(model, [far], cutoff=r_max + 1.0)
    assert abs(out["energy"][0] - (pair["energy"][0] + lone["energy"][0])) < 1e-12
    assert np.abs(out["forces"][:2] - pair["forces"]).max() < 1e-12
    assert np.all(out["forces"][2] == 0.0)


def check_batch_invariance(model, atoms_list, tol: float = 1e-11) -> None:
    """A batch of structures gives each structure's results alone (energies, forces, stress)."""
    stress = all(bool(a.pbc.all()) for a in atoms_list) or None
    together = evaluate(model, atoms_list, stress=bool(stress))
    start = 0
    for k, atoms in enumerate(atoms_list):
        alone = evaluate(model, [atoms], stress=bool(stress))
        n = len(atoms)
        assert _rel(together["energy"][k], alone["energy"][0]) < tol, f"structure {k}: energy differs in a batch"
        assert _rel(together["forces"][start:start + n], alone["forces"]) < tol, f"structure {k}: forces differ"
        if stress:
            assert _rel(together["stress"][k], alone["stress"][0]) < tol, f"structure {k}: stress differs"
        start += n


def check_extensivity(model, crystal: Atoms, tol: float = 1e-10) -> None:
    """A periodic supercell of n cells has n times the energy, the same forces (tiled) and stress."""
    ref = evaluate(model, [crystal], stress=True)
    for reps in (np.diag([2, 1, 1]), np.array([[1, 1, 0], [0, 1, 0], [0, 0, 2]])):
        big = make_supercell(crystal, reps)
        n = round(len(big) / len(crystal))
        out = evaluate(model, [big], stress=True)
        assert _rel(out["energy"][0], n * ref["energy"][0]) < tol, f"supercell x{n}: energy not extensive"
        assert _rel(out["stress"][0], ref["stress"][0]) < tol, f"supercell x{n}: stress differs"
        # make_supercell (order="cell-major") keeps the atoms of each image together, in the original order
        tiled = np.concatenate([ref["forces"]] * n)
        assert _rel(out["forces"], tiled) < tol, f"supercell x{n}: forces differ"


def check_isolated_atoms(model) -> None:
    """Each element alone, and atoms farther than r_max from all others, give exactly their E0, zero force."""
    e0 = dict(zip(model.elements, model.config.atomic_energies))
    singles = [Atoms(numbers=[z], positions=[[0.1, -0.2, 0.3]]) for z in model.elements]
    out = evaluate(model, singles)
    assert np.array_equal(out["energy"], np.array([e0[z] for z in model.elements])), (out["energy"], e0)
    assert np.all(out["forces"] == 0.0)
    spacing = model.r_max + 0.01
    gas = Atoms(numbers=list(model.elements) * 2,
                positions=[[spacing * k, 0.0, 0.0] for k in range(2 * len(model.elements))])
    out = evaluate(model, [gas], stress=False)
    assert np.array_equal(out["node_energy"], np.array([e0[z] for z in gas.numbers]))
    assert np.all(out["forces"] == 0.0)


def check_training_graph(model, atoms_list) -> None:
    """training=True: a loss on forces and stress backpropagates to every weight (finite gradients)."""
    model.zero_grad()
    periodic = all(bool(a.pbc.all()) for a in atoms_list)
    out = model(to_batch(model, atoms_list), forces=True, stress=periodic, training=True)
    loss = out["energy"].square().sum() + out["forces"].square().sum()
    if periodic:
        loss = loss + out["stress"].square().sum()
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reached {missing}"
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients in {bad}"
    model.zero_grad()
