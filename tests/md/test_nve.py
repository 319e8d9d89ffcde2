"""NVE energy conservation: 2 ps at 1 fs on 32-atom periodic Cu, float64 (budget ~40 s on 2 cores)."""

import numpy as np

from potential.simulation.md_config import MDConfig
from potential.simulation.ase_md import run_md


def test_nve_conserves_energy(cu_model, make_cu):
    from potential import Calculator

    assert cu_model.fit_force_rmse < 0.25, f"EMT fit too poor for a meaningful MD test: {cu_model.fit_force_rmse}"
    atoms = make_cu(2)  # 32 atoms, 7.18 Å cubic cell
    cfg = MDConfig(ensemble="nve", temperature=300.0, timestep=1.0, steps=2000, interval=10, seed=0, progress=False)
    res = run_md(atoms, cfg, calculator=Calculator(cu_model, skin=1.0))
    t = np.array([r["time_fs"] for r in res.rows])  # fs
    etot = np.array([r["etot_eV"] for r in res.rows]) / len(atoms)  # eV/atom
    temp = np.array([r["temperature_K"] for r in res.rows])
    assert t[-1] == 2000.0 and len(t) == 201
    drift = np.polyfit(t, etot, 1)[0] * 2000.0  # linear drift over 2 ps, eV/atom
    print(f"NVE 32 Cu, 2 ps @ 1 fs: drift {1e3 * drift:.4f} meV/atom, end-start "
          f"{1e3 * (etot[-1] - etot[0]):.4f} meV/atom, max |dE| {1e3 * np.abs(etot - etot[0]).max():.4f} meV/atom, "
          f"{res.ms_per_step:.2f} ms/step")
    assert abs(drift) < 1e-3
    assert abs(etot[-1] - etot[0]) < 1e-3
    assert np.abs(etot - etot[0]).max() < 2e-3
    # the dynamics is physical: kinetic energy is exchanged with the lattice (equipartition), no melting
    assert 80.0 < temp[len(temp) // 2 :].mean() < 250.0
    assert np.abs(atoms.get_positions() - make_cu(2).get_positions()).max() < 1.5  # no atom left its site (Å)
