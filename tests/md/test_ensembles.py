"""NVT thermostats reach the target temperature; NPT changes the cell and logs pressure (~40 s)."""

import numpy as np
import pytest

from potential.simulation.md_config import MDConfig
from potential.simulation.ase_md import run_md


@pytest.mark.parametrize("thermostat", ["langevin", "bussi", "nose-hoover"])
def test_nvt_reaches_target_temperature(cu_model, make_cu, thermostat):
    from potential import Calculator

    atoms = make_cu(2)
    target = 500.0
    cfg = MDConfig(ensemble="nvt", thermostat=thermostat, temperature=target, timestep=2.0, steps=400, interval=5,
                   friction=0.02, tdamp=40.0, seed=3, progress=False)
    res = run_md(atoms, cfg, calculator=Calculator(cu_model))
    temp = np.array([r["temperature_K"] for r in res.rows])
    mean = temp[len(temp) // 3 :].mean()  # after ~400 fs of equilibration
    print(f"NVT {thermostat}: <T> = {mean:.1f} K (target {target})")
    assert abs(mean - target) < 0.15 * target
    assert np.abs(atoms.get_momenta().sum(axis=0)).max() < 1e-6  # no centre-of-mass drift


@pytest.mark.parametrize("barostat", ["mtk", "berendsen"])
def test_npt_changes_cell_and_logs_pressure(cu_model, make_cu, barostat):
    from potential import Calculator

    atoms = make_cu(2, a=3.50)  # compressed: positive pressure, the cell must grow
    v0 = atoms.get_volume()
    cfg = MDConfig(ensemble="npt", barostat=barostat, temperature=300.0, pressure=0.0, timestep=2.0, steps=250,
                   interval=5, tdamp=50.0, pdamp=200.0, compressibility=0.02, seed=0, progress=False)
    res = run_md(atoms, cfg, calculator=Calculator(cu_model))
    pressure = np.array([r["pressure_GPa"] for r in res.rows])
    volume = np.array([r["volume_A3"] for r in res.rows])
    print(f"NPT {barostat}: V {v0:.1f} -> {volume[-1]:.1f} Å^3, P {pressure[0]:.2f} -> {pressure[-1]:.2f} GPa")
    assert np.all(np.isfinite(pressure)) and np.all(np.isfinite(volume))
    assert pressure[0] > 1.0  # compressed start
    assert volume[-1] > 1.01 * v0
    assert abs(atoms.get_volume() - v0) > 1.0
